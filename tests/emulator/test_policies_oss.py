"""OSS policy: parts, empty-body complete-all, OSS calls the server back (contract 6.3)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.emulator.test_policies_common import (
    OCTET,
    complete_xml,
    payload,
    post,
    put_parts,
    running_storage,
    xml_code,
)

KiB = 1 << 10
COMPLETE = {"x-oss-forbid-overwrite": "true", "x-oss-complete-all": "yes", **OCTET}


@pytest.mark.anyio
async def test_s6_3_complete_all_calls_back_and_downloads(tmp_path: Path) -> None:
    """Parts then an empty-body complete: OSS completes the upload itself; bytes come back."""
    data = payload(250 * KiB)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("oss", len(data), chunk_size=100 * KiB)
        assert len(creds.upload_urls) == 3
        await put_parts(env, creds, data, 100 * KiB)
        assert env.host.completed == {}
        status, body = await post(env, creds.complete_url, "", COMPLETE)
        assert status == 200, body
        assert json.loads(body)["code"] == 0
        assert env.host.completed == {session.session_id: len(data)}
        assert await env.download(session) == data


@pytest.mark.anyio
async def test_s6_3_complete_without_oss_headers_fails_the_signature(tmp_path: Path) -> None:
    """The complete URL binds x-oss-complete-all and x-oss-forbid-overwrite: 403 without them."""
    data = payload(1000)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("oss", len(data))
        await put_parts(env, creds, data, 25 << 20)
        for missing in ("x-oss-complete-all", "x-oss-forbid-overwrite"):
            headers = {k: v for k, v in COMPLETE.items() if k != missing}
            status, body = await post(env, creds.complete_url, "", headers)
            assert (status, xml_code(body)) == (403, "SignatureDoesNotMatch"), missing
        assert env.host.completed == {}


@pytest.mark.anyio
async def test_s6_3_complete_all_with_a_body_is_invalid(tmp_path: Path) -> None:
    """complete-all with an XML body is refused with 400 InvalidArgument, as OSS does."""
    data = payload(1000)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("oss", len(data))
        etags = await put_parts(env, creds, data, 25 << 20)
        status, body = await post(env, creds.complete_url, complete_xml(etags), COMPLETE)
        assert (status, xml_code(body)) == (400, "InvalidArgument")


@pytest.mark.anyio
async def test_s6_9_size_mismatch_reports_callback_failed(tmp_path: Path) -> None:
    """A short object is stored but the server refuses it: OSS answers 203 CallbackFailed."""
    data = payload(1000)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("oss", len(data) + 1)
        url = creds.upload_urls[0]
        async with env.http.put(url, data=io.BytesIO(data), headers=OCTET) as resp:
            assert resp.status == 200
        status, body = await post(env, creds.complete_url, "", COMPLETE)
        assert (status, xml_code(body)) == (203, "CallbackFailed")
        assert session.session_id in env.host.sessions


@pytest.mark.anyio
async def test_s6_3_client_callback_is_refused(tmp_path: Path) -> None:
    """OSS calls back itself; a client POST to /callback/oss fails verification."""
    async with running_storage(tmp_path) as env:
        session, _ = await env.open("oss", 10)
        assert (await env.callback(session, method="POST")).status == 400
        assert session.session_id in env.host.sessions


@pytest.mark.anyio
async def test_s6_3_expired_complete_url_is_access_denied(tmp_path: Path) -> None:
    """A complete after the URL expiry gets 403 AccessDenied and completes nothing."""
    data = payload(1000)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("oss", len(data))
        await put_parts(env, creds, data, 25 << 20)
        env.clock.offset = 3601
        status, body = await post(env, creds.complete_url, "", COMPLETE)
        assert (status, xml_code(body)) == (403, "AccessDenied")
        assert env.host.completed == {}
