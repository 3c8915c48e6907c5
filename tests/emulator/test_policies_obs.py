"""OBS policy: signed parts, XML complete, OBS calls back; client callback accepted (6.3, 12.4)."""

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

KiB = 1 << 10


@pytest.mark.anyio
async def test_s6_3_parts_complete_storage_callback_and_download(tmp_path: Path) -> None:
    """Parts, XML complete typed octet-stream: OBS completes the upload; the bytes come back."""
    data = payload(300 * KiB + 7)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("obs", len(data), chunk_size=100 * KiB)
        etags = await put_parts(env, creds, data, 100 * KiB)
        assert len(etags) == 4
        status, body = await post(env, creds.complete_url, complete_xml(etags), OCTET)
        assert status == 200, body
        assert env.host.completed == {session.session_id: len(data)}
        assert await env.download(session) == data
        assert (await env.callback(session, method="POST")).status == 401


@pytest.mark.anyio
async def test_s6_3_complete_with_another_content_type_fails_the_signature(tmp_path: Path) -> None:
    """The complete URL binds Content-Type application/octet-stream; application/xml gets 403."""
    data = payload(1000)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("obs", len(data))
        etags = await put_parts(env, creds, data, 25 << 20)
        headers = {"Content-Type": "application/xml"}
        status, body = await post(env, creds.complete_url, complete_xml(etags), headers)
        assert (status, xml_code(body)) == (403, "SignatureDoesNotMatch")


@pytest.mark.anyio
async def test_s6_3_wrong_etag_or_order_is_refused(tmp_path: Path) -> None:
    """A wrong ETag is 400 InvalidPart; parts listed out of order are 400 InvalidPartOrder."""
    data = payload(200 * KiB)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("obs", len(data), chunk_size=100 * KiB)
        etags = await put_parts(env, creds, data, 100 * KiB)
        bad = complete_xml([etags[0], '"00000000000000000000000000000000"'])
        status, body = await post(env, creds.complete_url, bad, OCTET)
        assert (status, xml_code(body)) == (400, "InvalidPart")
        swapped = (
            "<CompleteMultipartUpload>"
            f"<Part><PartNumber>2</PartNumber><ETag>{etags[1]}</ETag></Part>"
            f"<Part><PartNumber>1</PartNumber><ETag>{etags[0]}</ETag></Part>"
            "</CompleteMultipartUpload>"
        )
        status, body = await post(env, creds.complete_url, swapped, OCTET)
        assert (status, xml_code(body)) == (400, "InvalidPartOrder")
        assert env.host.completed == {}


@pytest.mark.anyio
async def test_s6_3_part_with_another_length_fails_the_signature(tmp_path: Path) -> None:
    """The part URL binds the exact Content-Length: a shorter body gets 403."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("obs", 1000)
        url = creds.upload_urls[0]
        async with env.http.put(url, data=io.BytesIO(b"x" * 10), headers=OCTET) as resp:
            assert (resp.status, xml_code(await resp.text())) == (403, "SignatureDoesNotMatch")


@pytest.mark.anyio
async def test_s12_4_client_callback_completes_without_checking_the_object(tmp_path: Path) -> None:
    """A client POST /callback/obs completes at the declared size even with no object stored."""
    # Cloudreve's OBS driver has no completion check (its CompleteUpload returns nil).
    async with running_storage(tmp_path) as env:
        session, _ = await env.open("obs", 1000)
        assert (await env.callback(session, method="POST")).status == 200
        assert env.host.completed == {session.session_id: 1000}


@pytest.mark.anyio
async def test_s6_9_short_object_completes_at_the_declared_size(tmp_path: Path) -> None:
    """OBS completion is unchecked: a complete leaving a part out finishes at the declared size."""
    data = payload(200 * KiB)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("obs", len(data), chunk_size=100 * KiB)
        etags = await put_parts(env, creds, data, 100 * KiB)
        status, body = await post(env, creds.complete_url, complete_xml(etags[:1]), OCTET)
        assert status == 200, body
        assert env.host.completed == {session.session_id: len(data)}
        assert len(await env.download(session)) == 100 * KiB
