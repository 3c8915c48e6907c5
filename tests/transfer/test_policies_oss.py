"""The oss chunk writer against moto behind a proxy playing OSS (complete-all, callback)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.transfer.test_policies_support import (
    FakeCallbackApi,
    S3Proxy,
    assert_no_cloudreve_secrets,
    drive_upload,
    moto_endpoint,
    s3_proxy,
)
from transfer.backend import WriterContext
from transfer.policies._storage import StorageError
from transfer.policies.oss import OssWriter

__all__ = ["moto_endpoint"]

pytestmark = pytest.mark.anyio
CHUNK = 5 << 20


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[S3Proxy]:
    async with s3_proxy(moto_endpoint) as p:
        # Signed into the complete URL by the server (CE driver/oss Token()).
        p.signed_complete_headers = {
            "Content-Type": "application/octet-stream",
            "x-oss-complete-all": "yes",
            "x-oss-forbid-overwrite": "true",
        }
        p.storage_calls_back = True
        yield p


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_s6_3_oss_empty_complete_and_no_client_callback(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """OSS completes from an EMPTY body with complete-all; only the storage calls Cloudreve."""
    data = os.urandom(CHUNK + 4321)
    api = FakeCallbackApi()

    result = await drive_upload(
        data, lambda: proxy.open_session("oss", len(data), CHUNK), OssWriter, http, api
    )

    assert await proxy.stored(result.sessions[0].uri) == data
    (complete,) = proxy.completes()
    assert complete.body == b""
    assert api.calls == []
    assert len(proxy.storage_callbacks) == 1
    assert_no_cloudreve_secrets(proxy.seen)


async def test_s6_3_oss_failed_storage_callback_fails_finish(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """OSS's 203 CallbackFailed answer to the complete is a failure, not a finished upload."""
    proxy.faults.append(
        lambda s: (
            web.Response(
                status=203,
                body=b"<Error><Code>CallbackFailed</Code><Message>status 401</Message></Error>",
            )
            if s.method == "POST"
            else None
        )
    )
    session = await proxy.open_session("oss", 10, CHUNK)
    writer = OssWriter(WriterContext(session, http, FakeCallbackApi()))
    part = await writer.write_chunk(0, 0, b"0123456789")

    with pytest.raises(StorageError) as caught:
        await writer.finish([part])

    assert caught.value.storage_code == "CallbackFailed"
    assert not caught.value.retryable


async def test_s6_3_oss_envelope_error_in_200_complete_fails_finish(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """A 200 complete carrying Cloudreve's error envelope (callback refused) is a failure."""
    proxy.faults.append(
        lambda s: (
            web.json_response({"code": 40055, "msg": "size mismatch"})
            if s.method == "POST"
            else None
        )
    )
    session = await proxy.open_session("oss", 10, CHUNK)
    writer = OssWriter(WriterContext(session, http, FakeCallbackApi()))
    part = await writer.write_chunk(0, 0, b"0123456789")

    with pytest.raises(StorageError, match="40055"):
        await writer.finish([part])
