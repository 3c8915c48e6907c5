"""Qiniu policy: resumable upload v2 with an UpToken; Qiniu calls the server back (6.3)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from emulator.policy import SessionCredentials
from tests.emulator.test_policies_common import StorageEnv, chunks, payload, running_storage

MiB = 1 << 20


def auth(creds: SessionCredentials) -> dict[str, str]:
    return {"Authorization": f"UpToken {creds.credential}"}


async def put_parts(
    env: StorageEnv, creds: SessionCredentials, data: bytes, size: int
) -> list[dict[str, Any]]:
    """PUT each part to ``{upload_urls[0]}/{n}`` and return the ``{etag, partNumber}`` list."""
    parts = []
    for index, chunk in enumerate(chunks(data, size)):
        headers = {**auth(creds), "Content-Type": "application/octet-stream"}
        url = f"{creds.upload_urls[0]}/{index + 1}"
        async with env.http.put(url, data=io.BytesIO(chunk), headers=headers) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        assert set(body) == {"etag", "md5"}
        parts.append({"etag": body["etag"], "partNumber": index + 1})
    return parts


async def complete(
    env: StorageEnv, creds: SessionCredentials, parts: list[dict[str, Any]]
) -> tuple[int, Any]:
    body = {"parts": parts, "mimeType": creds.mime_type}
    async with env.http.post(creds.upload_urls[0], json=body, headers=auth(creds)) as resp:
        return resp.status, await resp.json()


@pytest.mark.anyio
async def test_s6_3_parts_complete_storage_callback_and_download(tmp_path: Path) -> None:
    """Parts with UpToken, JSON complete: Qiniu completes the upload; the bytes come back."""
    data = payload(2 * MiB + 4321)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("qiniu", len(data), chunk_size=MiB, mime="video/mp4")
        assert creds.upload_id
        assert creds.credential
        assert creds.mime_type == "video/mp4"
        parts = await put_parts(env, creds, data, MiB)
        status, body = await complete(env, creds, parts)
        assert status == 200, body
        assert env.host.completed == {session.session_id: len(data)}
        assert await env.download(session) == data


@pytest.mark.anyio
async def test_s6_3_missing_bad_or_expired_token_is_401(tmp_path: Path) -> None:
    """No token, a forged token, or one past its deadline is refused with 401."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("qiniu", 10)
        url = f"{creds.upload_urls[0]}/1"
        async with env.http.put(url, data=b"x" * 10) as resp:
            assert resp.status == 401
        forged = {"Authorization": f"UpToken {creds.credential[:-4]}AAAA"}
        async with env.http.put(url, data=b"x" * 10, headers=forged) as resp:
            assert resp.status == 401
        env.clock.offset = 3601
        async with env.http.put(url, data=b"x" * 10, headers=auth(creds)) as resp:
            assert (resp.status, (await resp.json())["error"]) == (401, "token out of date")


@pytest.mark.anyio
async def test_s6_3_token_of_another_upload_is_out_of_scope(tmp_path: Path) -> None:
    """A token is scoped to its own key: using it on another upload's URL is 403."""
    async with running_storage(tmp_path) as env:
        _, first = await env.open("qiniu", 10)
        _, second = await env.open("qiniu", 10)
        url = f"{second.upload_urls[0]}/1"
        async with env.http.put(url, data=b"x" * 10, headers=auth(first)) as resp:
            assert resp.status == 403


@pytest.mark.anyio
async def test_s6_3_wrong_etag_fails_the_complete(tmp_path: Path) -> None:
    """A complete naming an ETag that no part has fails with 400 and completes nothing."""
    data = payload(1000)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("qiniu", len(data))
        parts = await put_parts(env, creds, data, MiB)
        parts[0]["etag"] = "not-the-etag"
        status, _ = await complete(env, creds, parts)
        assert status == 400
        assert env.host.completed == {}


@pytest.mark.anyio
async def test_s6_9_fsize_limit_caps_but_a_short_object_completes(tmp_path: Path) -> None:
    """Over the declared size is 413 (fsizeLimit); under it the upload completes unchecked."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("qiniu", 10)
        status, _ = await complete(env, creds, await put_parts(env, creds, b"y" * 11, MiB))
        assert status == 413
        session, creds = await env.open("qiniu", 10)
        status, _ = await complete(env, creds, await put_parts(env, creds, b"y" * 9, MiB))
        assert status == 200
        assert env.host.completed == {session.session_id: 10}


@pytest.mark.anyio
async def test_s6_9_failed_server_callback_is_579(tmp_path: Path) -> None:
    """When the server refuses the callback (session gone) Qiniu answers 579."""
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("qiniu", 10)
        parts = await put_parts(env, creds, b"y" * 10, MiB)
        del env.host.sessions[session.session_id]
        status, body = await complete(env, creds, parts)
        assert status == 579
        assert "callback" in body["error"]


@pytest.mark.anyio
async def test_s6_3_client_callback_is_refused(tmp_path: Path) -> None:
    """Qiniu calls back itself; a client POST to /callback/qiniu fails verification."""
    async with running_storage(tmp_path) as env:
        session, _ = await env.open("qiniu", 10)
        assert (await env.callback(session, method="POST")).status == 400


@pytest.mark.anyio
async def test_s6_3_part_number_outside_1_to_10000_is_refused(tmp_path: Path) -> None:
    """Part numbers are 1-based: part 0 (an index sent as the number) gets 400."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("qiniu", 10)
        for number in ("0", "10001"):
            url = f"{creds.upload_urls[0]}/{number}"
            async with env.http.put(url, data=b"x" * 10, headers=auth(creds)) as resp:
                assert resp.status == 400, number


@pytest.mark.anyio
async def test_s6_3_wrong_method_is_a_qiniu_405(tmp_path: Path) -> None:
    """A GET on the upload URL or a POST on a part URL gets 405 with a Qiniu error body."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("qiniu", 10)
        for method, url in (("GET", creds.upload_urls[0]), ("POST", f"{creds.upload_urls[0]}/1")):
            async with env.http.request(method, url, headers=auth(creds)) as resp:
                assert resp.status == 405, method
                assert "error" in await resp.json()
