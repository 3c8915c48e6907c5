"""S3 and KS3 policies: moto behind the emulator's presigning proxy (contract 6.3, 11.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from emulator.policy import SessionCredentials
from tests.emulator.test_policies_common import (
    OCTET,
    StorageEnv,
    complete_xml,
    payload,
    post,
    put_parts,
    running_storage,
    xml_code,
)

MiB = 1 << 20


async def post_complete(
    env: StorageEnv, creds: SessionCredentials, body: str, content_type: str
) -> tuple[int, str]:
    """POST the complete body with the given Content-Type."""
    return await post(env, creds.complete_url, body, {"Content-Type": content_type})


async def full_flow(tmp_path: Path, policy_type: str) -> None:
    """Upload 2 parts through the proxy, complete, call back and download; assert each step."""
    data = payload(5 * MiB + 123_457)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open(policy_type, len(data), chunk_size=5 * MiB)
        assert creds.upload_id
        assert len(creds.upload_urls) == 2
        assert all(f"/storage/{policy_type}/" in u for u in creds.upload_urls)
        etags = await put_parts(env, creds, data, 5 * MiB)
        status, body = await post_complete(
            env, creds, complete_xml(etags), "application/octet-stream"
        )
        assert status == 200, body
        assert "CompleteMultipartUploadResult" in body

        resp = await env.callback(session)
        assert resp.status == 200
        assert env.host.completed == {session.session_id: len(data)}
        assert await env.download(session) == data


@pytest.mark.anyio
async def test_s6_3_multipart_upload_callback_and_download(tmp_path: Path) -> None:
    """Parts to presigned URLs, XML complete, GET callback: the object downloads byte-identical."""
    await full_flow(tmp_path, "s3")


@pytest.mark.anyio
async def test_s6_3_empty_file_is_one_empty_part(tmp_path: Path) -> None:
    """A 0-byte file gets one part URL; an empty part completes into an empty object."""
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("s3", 0)
        assert len(creds.upload_urls) == 1
        etags = await put_parts(env, creds, b"", 5 * MiB)
        status, body = await post_complete(env, creds, complete_xml(etags), "application/xml")
        assert status == 200, body
        assert (await env.callback(session)).status == 200
        assert env.host.completed[session.session_id] == 0


@pytest.mark.anyio
async def test_s11_1_complete_accepts_form_urlencoded_type_like_real_s3(tmp_path: Path) -> None:
    """The proxy hides moto's HTTP 500 on an x-www-form-urlencoded complete body."""
    data = payload(1000)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("s3", len(data))
        etags = await put_parts(env, creds, data, 25 * MiB)
        status, body = await post_complete(
            env, creds, complete_xml(etags), "application/x-www-form-urlencoded"
        )
        assert status == 200, body


@pytest.mark.anyio
async def test_s6_3_wrong_etag_in_complete_is_invalid_part(tmp_path: Path) -> None:
    """A complete body whose ETag differs from the stored part fails with InvalidPart."""
    data = payload(1000)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("s3", len(data))
        await put_parts(env, creds, data, 25 * MiB)
        bad = complete_xml(['"0123456789abcdef0123456789abcdef"'])
        status, body = await post_complete(env, creds, bad, "application/xml")
        assert (status, xml_code(body)) == (400, "InvalidPart")
        resp = await env.callback(session)
        assert resp.status == 400


@pytest.mark.anyio
async def test_s6_3_small_non_final_part_is_entity_too_small(tmp_path: Path) -> None:
    """Parts under 5 MiB other than the last make the complete fail with EntityTooSmall."""
    data = payload(3 * MiB)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("s3", len(data), chunk_size=2 * MiB)
        etags = await put_parts(env, creds, data, 2 * MiB)
        status, body = await post_complete(env, creds, complete_xml(etags), "application/xml")
        assert (status, xml_code(body)) == (400, "EntityTooSmall")


@pytest.mark.anyio
async def test_s11_1_expired_part_url_is_access_denied(tmp_path: Path) -> None:
    """Once the emulator clock passes the URL's expiry the part PUT gets 403 Request has expired."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("s3", 10)
        env.clock.offset = 3700
        async with env.http.put(creds.upload_urls[0], data=b"x" * 10, headers=OCTET) as resp:
            body = await resp.text()
        assert resp.status == 403
        assert xml_code(body) == "AccessDenied"
        assert "Request has expired" in body


@pytest.mark.anyio
async def test_s6_3_wrong_method_or_tampered_url_is_signature_mismatch(tmp_path: Path) -> None:
    """A POST to a part URL, or a part URL with another part number, fails the signature."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("s3", 10)
        async with env.http.post(creds.upload_urls[0], data=b"x" * 10) as resp:
            assert resp.status == 403
            assert xml_code(await resp.text()) == "SignatureDoesNotMatch"
        tampered = creds.upload_urls[0].replace("partNumber=1", "partNumber=2")
        async with env.http.put(tampered, data=b"x" * 10, headers=OCTET) as resp:
            assert resp.status == 403
            assert xml_code(await resp.text()) == "SignatureDoesNotMatch"


@pytest.mark.anyio
async def test_s6_3_part_without_content_length_is_refused(tmp_path: Path) -> None:
    """A chunked part upload (no Content-Length) gets 411 MissingContentLength."""

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 10

    async with running_storage(tmp_path) as env:
        _, creds = await env.open("s3", 10)
        async with env.http.put(creds.upload_urls[0], data=body(), headers=OCTET) as resp:
            assert resp.status == 411
            assert xml_code(await resp.text()) == "MissingContentLength"


@pytest.mark.anyio
async def test_s6_9_callback_before_complete_fails_and_session_survives(tmp_path: Path) -> None:
    """The callback before CompleteMultipartUpload finds no object; the upload can still finish."""
    data = payload(4096)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("s3", len(data))
        etags = await put_parts(env, creds, data, 25 * MiB)
        early = await env.callback(session)
        assert early.status == 400
        assert session.session_id in env.host.sessions
        status, _ = await post_complete(env, creds, complete_xml(etags), "application/xml")
        assert status == 200
        assert (await env.callback(session)).status == 200
        assert (await env.callback(session)).status == 401


@pytest.mark.anyio
async def test_s6_7_abort_session_aborts_the_multipart_upload(tmp_path: Path) -> None:
    """After abort_session a part URL answers NoSuchUpload from the storage."""
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("s3", 10)
        await env.drivers["s3"].abort_session(session)
        async with env.http.put(creds.upload_urls[0], data=b"x" * 10, headers=OCTET) as resp:
            assert resp.status == 404
            assert xml_code(await resp.text()) == "NoSuchUpload"


@pytest.mark.anyio
async def test_s11_1_expiry_follows_an_emulator_clock_that_runs_ahead(tmp_path: Path) -> None:
    """With the clock 12 h ahead a fresh part URL works until the session's own expiry."""
    async with running_storage(tmp_path) as env:
        env.clock.offset = 12 * 3600
        _, creds = await env.open("s3", 10)
        env.clock.offset += 3500
        async with env.http.put(creds.upload_urls[0], data=b"x" * 10, headers=OCTET) as resp:
            assert resp.status == 200, await resp.text()
        env.clock.offset += 200
        async with env.http.put(creds.upload_urls[0], data=b"x" * 10, headers=OCTET) as resp:
            assert (resp.status, xml_code(await resp.text())) == (403, "AccessDenied")


@pytest.mark.anyio
async def test_objects_survive_an_emulator_restart_on_the_same_data_dir(tmp_path: Path) -> None:
    """Objects in moto are saved on close and loaded on the next start with the same data dir."""
    src = tmp_path / "src.bin"
    src.write_bytes(payload(70_000))
    async with running_storage(tmp_path) as env:
        await env.drivers["s3"].put_blob("keep/a.bin", src)
        await env.drivers["ks3"].put_blob("keep/b.bin", src)
        await env.drivers["s3"].put_blob("gone/c.bin", src)
        await env.drivers["s3"].delete_blob("gone/c.bin")
    async with running_storage(tmp_path) as env:
        for policy_type, key in (("s3", "keep/a.bin"), ("ks3", "keep/b.bin")):
            out = tmp_path / f"{policy_type}.out"
            await env.drivers[policy_type].fetch_blob(key, out)
            assert out.read_bytes() == src.read_bytes()
        with pytest.raises(FileNotFoundError):
            await env.drivers["s3"].fetch_blob("gone/c.bin", tmp_path / "c.out")
