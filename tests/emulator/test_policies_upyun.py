"""Upyun policy: one form POST with ``file`` last; Upyun notifies the server (contract 6.3)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from emulator.policy import SessionCredentials
from tests.emulator.test_policies_common import StorageEnv, payload, running_storage


def form(creds: SessionCredentials, data: bytes, order: tuple[str, ...]) -> aiohttp.FormData:
    """Build the upload form with its fields in ``order``."""
    out = aiohttp.FormData()
    for name in order:
        if name == "file":
            out.add_field("file", io.BytesIO(data), filename="f.bin")
        elif name == "policy":
            out.add_field("policy", creds.upload_policy)
        elif name == "authorization":
            out.add_field("authorization", creds.credential)
        else:
            out.add_field("content-type", creds.mime_type)
    return out


WEB_ORDER = ("policy", "authorization", "content-type", "file")


async def send(env: StorageEnv, creds: SessionCredentials, body: aiohttp.FormData) -> Any:
    async with env.http.post(creds.upload_urls[0], data=body) as resp:
        return resp.status, await resp.json()


@pytest.mark.anyio
async def test_s6_3_form_upload_notifies_and_downloads(tmp_path: Path) -> None:
    """The web client's form (file last) stores the file and completes the session."""
    data = payload(700_000)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("upyun", len(data), mime="image/png")
        assert creds.upload_policy
        assert creds.credential.startswith("UPYUN ")
        status, body = await send(env, creds, form(creds, data, WEB_ORDER))
        assert status == 200, body
        assert body["file_size"] == len(data)
        assert env.host.completed == {session.session_id: len(data)}
        assert await env.download(session) == data
        url = await env.drivers["upyun"].download_url(session.storage_key, "a.png", 60, False)
        async with env.http.head(url) as resp:
            assert resp.content_type == "image/png"


@pytest.mark.anyio
async def test_s6_3_file_not_last_is_refused(tmp_path: Path) -> None:
    """A form with a field after ``file`` is refused and nothing is stored."""
    data = payload(1000)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("upyun", len(data))
        order = ("policy", "authorization", "file", "content-type")
        status, body = await send(env, creds, form(creds, data, order))
        assert status == 400, body
        assert env.host.completed == {}
        with pytest.raises(FileNotFoundError):
            await env.drivers["upyun"].fetch_blob(session.storage_key, tmp_path / "x")


@pytest.mark.anyio
async def test_s6_3_file_before_policy_or_bad_signature_is_401(tmp_path: Path) -> None:
    """``file`` before the policy and signature, or a wrong signature, gets 401."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("upyun", 10)
        status, _ = await send(env, creds, form(creds, b"x" * 10, ("file",)))
        assert status == 401
        forged = SessionCredentials(
            upload_urls=creds.upload_urls,
            upload_policy=creds.upload_policy,
            credential=creds.credential[:-6] + "AAAAA=",
        )
        status, body = await send(env, forged, form(forged, b"x" * 10, WEB_ORDER))
        assert (status, body["message"]) == (401, "signature error")


@pytest.mark.anyio
async def test_s6_3_expired_policy_or_oversize_file_is_refused(tmp_path: Path) -> None:
    """A policy past its expiration is 403; a file above content-length-range is 400."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("upyun", 10)
        status, _ = await send(env, creds, form(creds, b"x" * 11, WEB_ORDER))
        assert status == 400
        env.clock.offset = 3601
        status, _ = await send(env, creds, form(creds, b"x" * 10, WEB_ORDER))
        assert status == 403
        assert env.host.completed == {}


@pytest.mark.anyio
async def test_s6_9_short_file_completes_at_the_declared_size(tmp_path: Path) -> None:
    """content-length-range allows a shorter file; the notification completes it unchecked."""
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("upyun", 10)
        status, body = await send(env, creds, form(creds, b"x" * 9, WEB_ORDER))
        assert (status, body["file_size"]) == (200, 9)
        assert env.host.completed == {session.session_id: 10}


@pytest.mark.anyio
async def test_s6_3_wrong_method_is_an_upyun_405(tmp_path: Path) -> None:
    """A PUT of the file to the form URL gets 405 with an Upyun error body."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("upyun", 10)
        async with env.http.put(creds.upload_urls[0], data=b"x" * 10) as resp:
            assert resp.status == 405
            assert (await resp.json())["code"] == 40500001
