"""The ks3 chunk writer against moto behind a proxy that checks KS3's signed content type."""

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
from transfer.policies.ks3 import Ks3Writer

__all__ = ["moto_endpoint"]

pytestmark = pytest.mark.anyio
CHUNK = 5 << 20


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[S3Proxy]:
    async with s3_proxy(moto_endpoint) as p:
        # The server presigns the complete URL with this type (CE driver/ks3 Token()).
        p.signed_complete_headers = {"Content-Type": "application/octet-stream"}
        yield p


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_s6_3_ks3_upload_then_get_callback(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """KS3 parts, the XML complete with the signed octet-stream type, then GET /callback/ks3."""
    data = os.urandom(2 * CHUNK + 1)
    api = FakeCallbackApi()

    result = await drive_upload(
        data, lambda: proxy.open_session("ks3", len(data), CHUNK), Ks3Writer, http, api
    )

    session = result.sessions[0]
    assert await proxy.stored(session.uri) == data
    (complete,) = proxy.completes()
    assert complete.body.count(b"<Part>") == 3
    assert api.calls == [("ks3", session.session_id, session.callback_secret)]
    assert_no_cloudreve_secrets(proxy.seen)
