"""COS policy: signed part URLs, complete with x-cos-forbid-overwrite, GET callback (6.3)."""

from __future__ import annotations

import io
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

MiB = 1 << 20
FORBID = {"x-cos-forbid-overwrite": "true", **OCTET}


@pytest.mark.anyio
async def test_s6_3_parts_complete_callback_and_download(tmp_path: Path) -> None:
    """Three parts, complete with the forbid-overwrite header, GET callback, same bytes back."""
    data = payload(2 * MiB + 500_000)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("cos", len(data), chunk_size=MiB)
        assert len(creds.upload_urls) == 3
        etags = await put_parts(env, creds, data, MiB)
        status, body = await post(env, creds.complete_url, complete_xml(etags), FORBID)
        assert status == 200, body
        assert "<CompleteMultipartUploadResult>" in body
        assert (await env.callback(session)).status == 200
        assert env.host.completed == {session.session_id: len(data)}
        assert await env.download(session) == data


@pytest.mark.anyio
async def test_s6_3_complete_without_forbid_overwrite_fails_the_signature(tmp_path: Path) -> None:
    """The complete URL binds x-cos-forbid-overwrite: true; without it COS answers 403."""
    data = payload(1000)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("cos", len(data))
        etags = await put_parts(env, creds, data, MiB)
        status, body = await post(env, creds.complete_url, complete_xml(etags), OCTET)
        assert (status, xml_code(body)) == (403, "SignatureDoesNotMatch")


@pytest.mark.anyio
async def test_s6_3_part_url_binds_type_length_and_method(tmp_path: Path) -> None:
    """Another Content-Type, another length or another method on a part URL gets 403."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("cos", 1000)
        url = creds.upload_urls[0]
        typed = {"Content-Type": "text/plain"}
        async with env.http.put(url, data=io.BytesIO(b"x" * 1000), headers=typed) as resp:
            assert (resp.status, xml_code(await resp.text())) == (403, "SignatureDoesNotMatch")
        async with env.http.put(url, data=io.BytesIO(b"x" * 999), headers=OCTET) as resp:
            assert (resp.status, xml_code(await resp.text())) == (403, "SignatureDoesNotMatch")
        async with env.http.post(url, data=io.BytesIO(b"x" * 1000), headers=OCTET) as resp:
            assert (resp.status, xml_code(await resp.text())) == (403, "SignatureDoesNotMatch")


@pytest.mark.anyio
async def test_s6_3_wrong_etag_is_invalid_part_and_callback_fails(tmp_path: Path) -> None:
    """A complete with a wrong ETag is 400 InvalidPart; the callback then finds no object."""
    data = payload(1000)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("cos", len(data))
        await put_parts(env, creds, data, MiB)
        bad = complete_xml(['"ffffffffffffffffffffffffffffffff"'])
        status, body = await post(env, creds.complete_url, bad, FORBID)
        assert (status, xml_code(body)) == (400, "InvalidPart")
        assert (await env.callback(session)).status == 400
        assert session.session_id in env.host.sessions


@pytest.mark.anyio
async def test_s6_3_small_middle_part_is_entity_too_small(tmp_path: Path) -> None:
    """Non-final parts under COS's 1 MiB minimum make the complete fail with EntityTooSmall."""
    data = payload(300_000)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("cos", len(data), chunk_size=100_000)
        etags = await put_parts(env, creds, data, 100_000)
        status, body = await post(env, creds.complete_url, complete_xml(etags), FORBID)
        assert (status, xml_code(body)) == (400, "EntityTooSmall")


@pytest.mark.anyio
async def test_s6_3_expired_part_url_is_access_denied(tmp_path: Path) -> None:
    """After the session's expiry (emulator clock) the part URL answers 403 AccessDenied."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("cos", 10)
        env.clock.offset = 3601
        async with env.http.put(creds.upload_urls[0], data=b"x" * 10, headers=OCTET) as resp:
            body = await resp.text()
        assert (resp.status, xml_code(body)) == (403, "AccessDenied")
        assert "Request has expired" in body


@pytest.mark.anyio
async def test_s6_7_abort_session_drops_the_upload(tmp_path: Path) -> None:
    """After abort_session the part URL answers 404 NoSuchUpload."""
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("cos", 10)
        await env.drivers["cos"].abort_session(session)
        async with env.http.put(creds.upload_urls[0], data=b"x" * 10, headers=OCTET) as resp:
            assert (resp.status, xml_code(await resp.text())) == (404, "NoSuchUpload")


@pytest.mark.anyio
async def test_s6_9_part_or_complete_after_completion_is_no_such_upload(tmp_path: Path) -> None:
    """Once completed, the upload is closed: a resent part or complete gets 404 NoSuchUpload."""
    data = payload(1000)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("cos", len(data))
        etags = await put_parts(env, creds, data, MiB)
        assert (await post(env, creds.complete_url, complete_xml(etags), FORBID))[0] == 200
        async with env.http.put(creds.upload_urls[0], data=io.BytesIO(data), headers=OCTET) as resp:
            assert (resp.status, xml_code(await resp.text())) == (404, "NoSuchUpload")
        status, body = await post(env, creds.complete_url, complete_xml(etags), FORBID)
        assert (status, xml_code(body)) == (404, "NoSuchUpload")


@pytest.mark.anyio
async def test_s6_3_empty_file_is_one_empty_part(tmp_path: Path) -> None:
    """A 0-byte file is one signed 0-length part; it completes into an empty object."""
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("cos", 0)
        assert len(creds.upload_urls) == 1
        etags = await put_parts(env, creds, b"", MiB)
        assert (await post(env, creds.complete_url, complete_xml(etags), FORBID))[0] == 200
        assert (await env.callback(session)).status == 200
        assert env.host.completed == {session.session_id: 0}
        assert await env.download(session) == b""
