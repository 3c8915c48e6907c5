"""OneDrive policy: the Graph-like upload session (contract 6.3, cases BR-06 and BR-08)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from emulator.policy import SessionCredentials
from tests.emulator.test_policies_common import StorageEnv, payload, running_storage

UNIT = 327680


async def put_range(
    env: StorageEnv,
    creds: SessionCredentials,
    data: bytes,
    start: int,
    total: int,
    **headers: str,
) -> tuple[int, Any]:
    """PUT one fragment with its Content-Range and return (status, JSON body)."""
    rng = {"Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}"}
    async with env.http.put(
        creds.upload_urls[0], data=io.BytesIO(data), headers={**rng, **headers}
    ) as resp:
        return resp.status, await resp.json()


@pytest.mark.anyio
async def test_s6_3_sequential_fragments_callback_and_download(tmp_path: Path) -> None:
    """202 per partial fragment, 201 with the item at the last byte, POST callback, same bytes."""
    data = payload(2 * UNIT + 1000)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("onedrive", len(data), chunk_size=UNIT)
        assert len(creds.upload_urls) == 1
        statuses = []
        for start in range(0, len(data), UNIT):
            status, body = await put_range(env, creds, data[start : start + UNIT], start, len(data))
            statuses.append(status)
        assert statuses == [202, 202, 201]
        assert body["size"] == len(data)
        resp = await env.callback(session, method="POST")
        assert resp.status == 200
        assert env.host.completed == {session.session_id: len(data)}
        assert await env.download(session) == data


@pytest.mark.anyio
async def test_s6_3_get_reports_next_expected_range(tmp_path: Path) -> None:
    """GET on the upload URL reports expirationDateTime and nextExpectedRanges ["N-"]."""
    data = payload(2 * UNIT)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("onedrive", len(data), chunk_size=UNIT)
        await put_range(env, creds, data[:UNIT], 0, len(data))
        async with env.http.get(creds.upload_urls[0]) as resp:
            status = await resp.json()
        assert status["nextExpectedRanges"] == [f"{UNIT}-"]
        assert status["expirationDateTime"].endswith("Z")


@pytest.mark.anyio
async def test_s6_3_overlap_and_gap_are_416(tmp_path: Path) -> None:
    """A resent fragment is 416 fragmentOverlap; one that skips bytes is 416 invalidRange."""
    data = payload(3 * UNIT)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("onedrive", len(data), chunk_size=UNIT)
        assert (await put_range(env, creds, data[:UNIT], 0, len(data)))[0] == 202
        status, body = await put_range(env, creds, data[:UNIT], 0, len(data))
        assert status == 416
        assert body["error"]["innererror"]["code"] == "fragmentOverlap"
        status, body = await put_range(env, creds, data[2 * UNIT :], 2 * UNIT, len(data))
        assert status == 416
        assert body["error"]["innererror"]["code"] == "invalidRange"
        assert (await put_range(env, creds, data[UNIT : 2 * UNIT], UNIT, len(data)))[0] == 202


@pytest.mark.anyio
async def test_br08_non_final_fragment_must_be_multiple_of_320_kib(tmp_path: Path) -> None:
    """A non-final fragment whose length is not a multiple of 327680 bytes gets 400."""
    data = payload(2 * UNIT)
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("onedrive", len(data), chunk_size=UNIT)
        status, body = await put_range(env, creds, data[: UNIT - 1], 0, len(data))
        assert status == 400
        assert body["error"]["code"] == "invalidRequest"
        async with env.http.get(creds.upload_urls[0]) as resp:
            assert (await resp.json())["nextExpectedRanges"] == ["0-"]


@pytest.mark.anyio
async def test_s6_3_missing_range_or_authorization_header_is_refused(tmp_path: Path) -> None:
    """No Content-Range gets 400; an Authorization header on the pre-authenticated URL gets 401."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("onedrive", 10)
        async with env.http.put(creds.upload_urls[0], data=b"x" * 10) as resp:
            assert resp.status == 400
        status, body = await put_range(
            env, creds, b"x" * 10, 0, 10, Authorization="Bearer something"
        )
        assert status == 401
        assert body["error"]["code"] == "unauthenticated"


@pytest.mark.anyio
async def test_s6_9_callback_before_last_fragment_fails(tmp_path: Path) -> None:
    """The callback before the last byte arrived finds no item; the session stays usable."""
    data = payload(2 * UNIT)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("onedrive", len(data), chunk_size=UNIT)
        await put_range(env, creds, data[:UNIT], 0, len(data))
        assert (await env.callback(session, method="POST")).status == 400
        assert session.session_id in env.host.sessions
        assert (await put_range(env, creds, data[UNIT:], UNIT, len(data)))[0] == 201
        assert (await env.callback(session, method="POST")).status == 200


@pytest.mark.anyio
async def test_s6_3_expired_or_deleted_session_is_item_not_found(tmp_path: Path) -> None:
    """After the session's expiry, or after DELETE, the URL answers 404 itemNotFound."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("onedrive", 10)
        env.clock.offset = 3601
        status, body = await put_range(env, creds, b"x" * 10, 0, 10)
        assert (status, body["error"]["code"]) == (404, "itemNotFound")
        env.clock.offset = 0
        _, creds = await env.open("onedrive", 10)
        async with env.http.delete(creds.upload_urls[0]) as resp:
            assert resp.status == 204
        assert (await put_range(env, creds, b"x" * 10, 0, 10))[0] == 404
        aborted, creds = await env.open("onedrive", 10)
        await env.drivers["onedrive"].abort_session(aborted)
        assert (await put_range(env, creds, b"x" * 10, 0, 10))[0] == 404


@pytest.mark.anyio
async def test_br06_empty_file_cannot_use_a_session_but_simple_upload_works(tmp_path: Path) -> None:
    """A 0-byte range is refused and its callback fails; a server-side put of 0 bytes works."""
    async with running_storage(tmp_path) as env:
        session, creds = await env.open("onedrive", 0)
        async with env.http.put(
            creds.upload_urls[0], data=b"", headers={"Content-Range": "bytes 0--1/0"}
        ) as resp:
            assert resp.status == 400
        assert (await env.callback(session, method="POST")).status == 400
        empty = tmp_path / "empty.bin"
        empty.write_bytes(b"")
        await env.drivers["onedrive"].put_blob(session.storage_key, empty)
        assert (await env.callback(session, method="POST")).status == 200
        assert env.host.completed[session.session_id] == 0


@pytest.mark.anyio
async def test_s6_3_wrong_method_on_upload_url_is_a_graph_405(tmp_path: Path) -> None:
    """A POST to the upload URL gets 405 with a Graph error body."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("onedrive", 10)
        async with env.http.post(creds.upload_urls[0], data=b"x" * 10) as resp:
            assert resp.status == 405
            assert (await resp.json())["error"]["code"] == "invalidRequest"
