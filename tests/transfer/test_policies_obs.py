"""The obs chunk writer against moto behind a proxy playing OBS (signed type, callback)."""

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
from transfer.policies.obs import ObsWriter

__all__ = ["moto_endpoint"]

pytestmark = pytest.mark.anyio
CHUNK = 5 << 20


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[S3Proxy]:
    async with s3_proxy(moto_endpoint) as p:
        # Signed into the complete URL by the server (CE driver/obs Token()).
        p.signed_complete_headers = {"Content-Type": "application/octet-stream"}
        p.storage_calls_back = True
        yield p


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_s12_4_obs_xml_complete_and_no_client_callback(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """OBS completes with the parts XML; the client makes no callback after success."""
    data = os.urandom(CHUNK + 17)
    api = FakeCallbackApi()

    result = await drive_upload(
        data, lambda: proxy.open_session("obs", len(data), CHUNK), ObsWriter, http, api
    )

    assert await proxy.stored(result.sessions[0].uri) == data
    (complete,) = proxy.completes()
    assert complete.body.count(b"<Part>") == 2
    assert api.calls == []
    assert len(proxy.storage_callbacks) == 1
    assert_no_cloudreve_secrets(proxy.seen)
