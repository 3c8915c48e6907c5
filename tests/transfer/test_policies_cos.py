"""The cos chunk writer against moto behind a proxy that checks COS's signed headers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import aiohttp
import pytest

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
from transfer.policies.cos import CosWriter
from transfer.policies.s3 import S3Writer

__all__ = ["moto_endpoint"]

pytestmark = pytest.mark.anyio
CHUNK = 5 << 20


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[S3Proxy]:
    async with s3_proxy(moto_endpoint) as p:
        # The server presigns the complete URL with this header (CE driver/cos Token()).
        p.signed_complete_headers = {"x-cos-forbid-overwrite": "true"}
        yield p


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_s6_3_cos_upload_with_forbid_overwrite_and_get_callback(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """COS parts, a complete with x-cos-forbid-overwrite and the XML, then GET /callback/cos."""
    data = os.urandom(CHUNK + 999)
    api = FakeCallbackApi()

    result = await drive_upload(
        data, lambda: proxy.open_session("cos", len(data), CHUNK), CosWriter, http, api
    )

    session = result.sessions[0]
    assert await proxy.stored(session.uri) == data
    (complete,) = proxy.completes()
    assert complete.headers["x-cos-forbid-overwrite"] == "true"
    assert complete.body.startswith(b"<CompleteMultipartUpload><Part><PartNumber>1<")
    assert api.calls == [("cos", session.session_id, session.callback_secret)]
    assert_no_cloudreve_secrets(proxy.seen)


async def test_s6_3_cos_complete_without_signed_header_is_refused(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """The check is real: an s3-style complete on a COS URL fails with SignatureDoesNotMatch."""
    session = await proxy.open_session("s3", 10, CHUNK)
    writer = S3Writer(WriterContext(session, http, FakeCallbackApi()))
    part = await writer.write_chunk(0, 0, b"0123456789")

    with pytest.raises(StorageError) as caught:
        await writer.finish([part])

    assert caught.value.storage_code == "SignatureDoesNotMatch"
