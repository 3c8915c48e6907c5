"""Upload core against the contract (6.2-6.8): sessions, placeholders, chunks, completion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from emulator.testing import EmulatorHandle, running_emulator
from tests.emulator.apiclient import Api
from tests.emulator.conftest import USER, no_drivers

pytestmark = pytest.mark.anyio
CHUNK = "/api/v4/file/upload/{id}/{index}"


async def _session(api: Api, uri: str, size: int, **fields: object) -> dict:
    return await api.ok("PUT", "/file/upload", json={"uri": uri, "size": size, **fields})


async def _chunk(api: Api, sid: str, index: int, data: bytes, **kw: object) -> tuple[int, dict]:
    return await api.call("POST", f"/file/upload/{sid}/{index}", data=data, **kw)


async def test_s6_2_placeholder_visible_with_declared_size_and_session_metadata(
    api: Api, emu: EmulatorHandle
) -> None:
    """The placeholder lists at once with the declared size and ``sys:upload_session_id``."""
    sess = await _session(api, "cloudreve://my/in/big.bin", 10)
    listing = await api.ok("GET", "/file", params={"uri": "cloudreve://my/in"})
    [item] = listing["files"]
    assert item["size"] == 10
    assert item["metadata"] == {"sys:upload_session_id": sess["session_id"]}
    assert item["primary_entity"]
    assert sess["chunk_size"] == 4
    assert sess["upload_id"] == ""
    assert len(sess["callback_secret"]) == 32
    assert "upload_urls" not in sess
    capacity = await api.ok("GET", "/user/capacity")
    assert capacity["used"] == 10


async def test_s6_8_existing_file_without_entity_type_is_40004(api: Api) -> None:
    """Creating a session over an existing file (or placeholder) without entity_type is 40004."""
    await _session(api, "cloudreve://my/a.txt", 3)
    _, body = await api.call("PUT", "/file/upload", json={"uri": "cloudreve://my/a.txt", "size": 3})
    assert body["code"] == 40004


async def test_s6_8_version_while_locked_is_40073_with_conflict_list(api: Api) -> None:
    """A version session on a path locked by a live upload is 40073 with the lock in data."""
    await _session(api, "cloudreve://my/a.txt", 3)
    _, body = await api.call(
        "PUT",
        "/file/upload",
        json={"uri": "cloudreve://my/a.txt", "size": 3, "entity_type": "version"},
    )
    assert body["code"] == 40073
    [conflict] = body["data"]
    assert conflict["owner"]["application"]["type"] == "upload"
    assert conflict["token"]


async def test_s6_8_folder_at_path_is_40004_even_for_version(api: Api) -> None:
    """A folder at the target path gives 40004 with or without entity_type."""
    await api.ok("POST", "/file/create", json={"uri": "cloudreve://my/d", "type": "folder"})
    for extra in ({}, {"entity_type": "version"}):
        _, body = await api.call(
            "PUT", "/file/upload", json={"uri": "cloudreve://my/d", "size": 1, **extra}
        )
        assert body["code"] == 40004


async def test_s6_2_bad_entity_type_and_policy_id_are_40001(api: Api) -> None:
    """An unknown entity_type or a malformed policy_id hash is 40001."""
    _, body = await api.call(
        "PUT", "/file/upload", json={"uri": "cloudreve://my/x", "size": 1, "entity_type": "thumb"}
    )
    assert body["code"] == 40001
    _, body = await api.call(
        "PUT", "/file/upload", json={"uri": "cloudreve://my/x", "size": 1, "policy_id": "!!"}
    )
    assert body["code"] == 40001


async def test_s6_2_live_photo_without_target_is_40016(api: Api) -> None:
    """A live_photo session for a missing file is 40016."""
    _, body = await api.call(
        "PUT",
        "/file/upload",
        json={"uri": "cloudreve://my/p.jpg", "size": 1, "entity_type": "live_photo"},
    )
    assert body["code"] == 40016


async def test_s6_2_quota_reserved_at_creation_gives_40051(api: Api, emu: EmulatorHandle) -> None:
    """Quota counts reservations: the second session that would exceed it gets 40051."""
    emu.faults.set_quota(USER, 10)
    await _session(api, "cloudreve://my/a", 6)
    _, body = await api.call("PUT", "/file/upload", json={"uri": "cloudreve://my/b", "size": 5})
    assert body["code"] == 40051


async def test_s6_2_policy_max_size_and_suffix_rules(api: Api, emu: EmulatorHandle) -> None:
    """The policy's max_size gives 40049 and its extension allow-list gives 40052."""
    emu.store.update_policy(emu.policy("local").id, max_size=5, allowed_suffix=("txt",))
    _, body = await api.call("PUT", "/file/upload", json={"uri": "cloudreve://my/a.txt", "size": 6})
    assert body["code"] == 40049
    _, body = await api.call("PUT", "/file/upload", json={"uri": "cloudreve://my/a.exe", "size": 1})
    assert body["code"] == 40052


async def test_s6_4_content_length_must_match_exactly(api: Api) -> None:
    """A chunk of the wrong length is 40013 with the expected length in msg."""
    sess = await _session(api, "cloudreve://my/a", 10)
    _, body = await _chunk(api, sess["session_id"], 0, b"012")
    assert body["code"] == 40013
    assert body["msg"] == "Invalid Content-Length (expected: 4)"
    _, body = await _chunk(api, sess["session_id"], 2, b"8")
    assert body["msg"] == "Invalid Content-Length (expected: 2)"


async def test_s6_4_invalid_index_is_40012(api: Api) -> None:
    """An index at or beyond the chunk count is 40012; a negative one fails binding (40001)."""
    sess = await _session(api, "cloudreve://my/a", 8)
    _, body = await _chunk(api, sess["session_id"], 2, b"xxxx")
    assert body["code"] == 40012
    _, body = await _chunk(api, sess["session_id"], -1, b"xxxx")
    assert body["code"] == 40001


async def _chunked(api: Api, sid: str, index: int, data: bytes) -> dict:
    async def body() -> AsyncIterator[bytes]:
        if data:
            yield data

    url = f"{api.base}/api/v4/file/upload/{sid}/{index}"
    async with api.session.post(url, data=body(), headers=api.headers()) as resp:
        assert "Content-Length" not in resp.request_info.headers
        answer: dict = await resp.json()
        return answer


async def test_s6_4_chunked_encoding_reads_as_length_0(api: Api) -> None:
    """Without a length header the real server counts 0 bytes: 40013 for a non-empty chunk,
    success for the one zero-length chunk of an empty file."""
    sess = await _session(api, "cloudreve://my/c4", 4)
    body = await _chunked(api, sess["session_id"], 0, b"abcd")
    assert (body["code"], body["msg"]) == (40013, "Invalid Content-Length (expected: 4)")
    sess = await _session(api, "cloudreve://my/c0", 0)
    assert (await _chunked(api, sess["session_id"], 0, b""))["code"] == 0
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/c0"})
    assert "sys:upload_session_id" not in (info["metadata"] or {})


async def test_s6_4_short_body_is_50004(api: Api, emu: EmulatorHandle) -> None:
    """A declared length that matches but fewer bytes arriving gives 50004."""
    sess = await _session(api, "cloudreve://my/a", 8)

    async def short_body():  # type: ignore[no-untyped-def]
        yield b"01"

    url = f"{emu.api}/file/upload/{sess['session_id']}/0"
    headers = api.headers(extra={"X-Expected-Entity-Length": "4"})
    async with (
        aiohttp.ClientSession() as raw,
        raw.post(url, data=short_body(), headers=headers) as r,
    ):
        body = await r.json()
    assert body["code"] == 50004


async def test_s6_4_out_of_order_chunks_complete_when_set_is_full(
    api: Api, emu: EmulatorHandle
) -> None:
    """4.18.0 completes on the chunk that fills the set of indexes, whatever its index."""
    sess = await _session(api, "cloudreve://my/a", 10, last_modified=1_600_000_000_000)
    sid = sess["session_id"]
    assert (await _chunk(api, sid, 2, b"89"))[1]["code"] == 0
    assert (await _chunk(api, sid, 0, b"0123"))[1]["code"] == 0
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/a"})
    assert "sys:upload_session_id" in (info["metadata"] or {})
    assert (await _chunk(api, sid, 1, b"4567"))[1]["code"] == 0
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/a"})
    assert info["metadata"] is None
    assert info["updated_at"].startswith("2020-09-13")
    assert await api.download("cloudreve://my/a") == b"0123456789"
    _, body = await _chunk(api, sid, 1, b"4567")
    assert body["code"] == 40011


async def test_s6_4_resent_chunk_is_idempotent(api: Api, emu: EmulatorHandle) -> None:
    """Re-sending a chunk overwrites it; only the later bytes count."""
    sess = await _session(api, "cloudreve://my/a", 8)
    sid = sess["session_id"]
    await _chunk(api, sid, 0, b"xxxx")
    await _chunk(api, sid, 0, b"0123")
    await _chunk(api, sid, 1, b"4567")
    assert await api.download("cloudreve://my/a") == b"01234567"
    assert emu.requests.param_values("POST", CHUNK, "index") == ["0", "0", "1"]


async def test_s6_4_legacy_server_completes_on_last_index(tmp_path: Path) -> None:
    """Before 4.18.0 the last index completes the upload even with chunks missing."""
    async with (
        running_emulator(
            tmp_path, chunk_size=4, server_version="4.17.0", drivers=no_drivers
        ) as emu,
        aiohttp.ClientSession() as http,
    ):
        api = Api(http, emu.url)
        await api.sign_in(USER, emu.users[USER])
        assert await api.ok("GET", "/site/ping") == "4.17.0"
        sess = await _session(api, "cloudreve://my/a", 8)
        await _chunk(api, sess["session_id"], 1, b"4567")
        info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/a"})
        assert info["metadata"] is None
        _, body = await _chunk(api, sess["session_id"], 0, b"0123")
        assert body["code"] == 40011


async def test_s6_4_anonymous_or_expired_token_chunk_is_40011(
    api: Api, emu: EmulatorHandle
) -> None:
    """A chunk sent with an expired access token is treated as anonymous: 40011."""
    sess = await _session(api, "cloudreve://my/a", 4)
    emu.clock.advance(3601)
    _, body = await _chunk(api, sess["session_id"], 0, b"0123")
    assert body["code"] == 40011


async def test_s6_4_failed_completion_keeps_session_and_later_resends_answer_0(
    api: Api, emu: EmulatorHandle
) -> None:
    """A failed completion returns its error; later re-sends answer 0 and never complete."""
    sess = await _session(api, "cloudreve://my/a", 4)
    emu.faults.fail_completions(1)
    _, body = await _chunk(api, sess["session_id"], 0, b"0123")
    assert body["code"] == 50001
    _, body = await _chunk(api, sess["session_id"], 0, b"0123")
    assert body["code"] == 0
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/a"})
    assert info["metadata"]["sys:upload_session_id"] == sess["session_id"]
    await api.ok(
        "DELETE", "/file/upload", json={"id": sess["session_id"], "uri": "cloudreve://my/a"}
    )
    await api.upload("cloudreve://my/a", b"0123")
    assert await api.download("cloudreve://my/a") == b"0123"


async def test_s6_3_empty_file_is_one_zero_length_chunk(api: Api) -> None:
    """A 0-byte file completes with one zero-length chunk 0."""
    sess = await _session(api, "cloudreve://my/empty", 0)
    _, body = await _chunk(api, sess["session_id"], 0, b"")
    assert body["code"] == 0
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/empty"})
    assert info["size"] == 0
    assert info["metadata"] is None


async def test_s6_4_session_expiry_by_clock_gives_40011(api: Api, emu: EmulatorHandle) -> None:
    """After ``expires`` (emulator clock) the session is gone: 40011."""
    sess = await _session(api, "cloudreve://my/a", 8)
    await _chunk(api, sess["session_id"], 0, b"0123")
    emu.clock.advance(86401)
    await api.sign_in(USER, emu.users[USER])
    _, body = await _chunk(api, sess["session_id"], 1, b"4567")
    assert body["code"] == 40011


async def test_s6_7_cancel_removes_placeholder_and_unlocks(api: Api, emu: EmulatorHandle) -> None:
    """Cancel hard-deletes a new file's placeholder, frees the quota and releases the lock."""
    sess = await _session(api, "cloudreve://my/a", 8)
    await api.ok(
        "DELETE", "/file/upload", json={"id": sess["session_id"], "uri": "cloudreve://my/a"}
    )
    _, body = await api.call("GET", "/file/info", params={"uri": "cloudreve://my/a"})
    assert body["code"] == 40016
    assert (await api.ok("GET", "/user/capacity"))["used"] == 0
    await _session(api, "cloudreve://my/a", 8)


async def test_s6_7_cancel_works_after_session_expiry(api: Api, emu: EmulatorHandle) -> None:
    """Cancel finds the placeholder by its session id even once the KV session expired."""
    sess = await _session(api, "cloudreve://my/a", 8)
    emu.faults.expire_session(sess["session_id"])
    await api.ok(
        "DELETE", "/file/upload", json={"id": sess["session_id"], "uri": "cloudreve://my/a"}
    )
    assert emu.file(USER, "/a") is None


async def test_s6_7_cancel_of_unknown_session_is_404(api: Api) -> None:
    """Cancelling with a session id that is not the file's is 404."""
    await api.upload("cloudreve://my/a", b"0123")
    _, body = await api.call(
        "DELETE",
        "/file/upload",
        json={"id": "00000000-0000-0000-0000-000000000000", "uri": "cloudreve://my/a"},
    )
    assert body["code"] == 404


async def test_s6_8_version_overwrite_keeps_one_version_by_default(api: Api) -> None:
    """An overwrite keeps the file id and, without retention, only the new version."""
    await api.upload("cloudreve://my/a", b"old!")
    before = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/a"})
    sess = await _session(api, "cloudreve://my/a", 6, entity_type="version")
    during = await api.ok(
        "GET", "/file/info", params={"uri": "cloudreve://my/a", "extended": "true"}
    )
    assert during["size"] == 4
    assert during["primary_entity"] == before["primary_entity"]
    assert len(during["extended_info"]["entities"]) == 2
    await _chunk(api, sess["session_id"], 0, b"new!")
    await _chunk(api, sess["session_id"], 1, b"!!")
    after = await api.ok(
        "GET", "/file/info", params={"uri": "cloudreve://my/a", "extended": "true"}
    )
    assert after["id"] == before["id"]
    assert after["size"] == 6
    assert len(after["extended_info"]["entities"]) == 1
    assert await api.download("cloudreve://my/a") == b"new!!!"


async def test_s6_8_version_retention_keeps_old_versions(api: Api) -> None:
    """With version retention on, an overwrite keeps the old version as an entity."""
    await api.ok("PATCH", "/user/setting", json={"version_retention_enabled": True})
    await api.upload("cloudreve://my/a", b"v1")
    await api.upload("cloudreve://my/a", b"v2", entity_type="version")
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/a", "extended": "true"})
    assert len(info["extended_info"]["entities"]) == 2
    assert await api.download("cloudreve://my/a") == b"v2"


async def test_s6_3_relay_policy_answers_chunk_size_0(api: Api, emu: EmulatorHandle) -> None:
    """A relay policy answers chunk_size 0 and takes the whole file as chunk 0."""
    emu.use_policy(USER, "/relay", "relay")
    sess = await _session(api, "cloudreve://my/relay/f.bin", 10)
    assert sess["chunk_size"] == 0
    assert sess["storage_policy"]["relay"] is True
    _, body = await _chunk(api, sess["session_id"], 1, b"0123456789")
    assert body["code"] == 40012
    _, body = await _chunk(api, sess["session_id"], 0, b"0123456789")
    assert body["code"] == 0
    assert await api.download("cloudreve://my/relay/f.bin") == b"0123456789"


async def test_s6_4_remote_policy_uploads_through_slave_route(
    api: Api, emu: EmulatorHandle, http: aiohttp.ClientSession
) -> None:
    """Remote sessions hand out the slave URL and a Bearer Cr credential; chunks complete."""
    emu.use_policy(USER, "/remote", "remote")
    sess = await _session(api, "cloudreve://my/remote/f.bin", 6)
    [url] = sess["upload_urls"]
    assert url == f"{emu.url}/api/v4/slave/upload/{sess['session_id']}"
    assert sess["credential"].startswith("Bearer Cr ")
    auth = {"Authorization": sess["credential"]}
    async with http.post(url, params={"chunk": "0"}, data=b"0123", headers=auth) as r:
        assert (await r.json())["code"] == 0
    bad = {**auth, "X-Cr-Correlation-Id": "8d0b1e0c-0000-4000-8000-000000000000"}
    async with http.post(url, params={"chunk": "1"}, data=b"45", headers=bad) as r:
        assert (await r.json())["code"] == 40071
    named = {**auth, "X-Cr-Filename": "f.bin"}
    async with http.post(url, params={"chunk": "1"}, data=b"45", headers=named) as r:
        assert (await r.json())["code"] == 0
    assert await api.download("cloudreve://my/remote/f.bin") == b"012345"
    async with http.post(url, params={"chunk": "1"}, data=b"45", headers=auth) as r:
        assert (await r.json())["code"] == 40011


async def test_s6_4_local_chunk_to_remote_session_is_40006(api: Api, emu: EmulatorHandle) -> None:
    """Posting to /file/upload for a remote-policy session is 40006."""
    emu.use_policy(USER, "/remote", "remote")
    sess = await _session(api, "cloudreve://my/remote/f.bin", 4)
    _, body = await _chunk(api, sess["session_id"], 0, b"0123")
    assert body["code"] == 40006


async def test_s6_4_placeholder_deleted_gives_40016(api: Api, emu: EmulatorHandle) -> None:
    """When the placeholder vanished from its path, chunks answer 40016."""
    sess = await _session(api, "cloudreve://my/a", 4)
    item = emu.file(USER, "/a")
    assert item is not None
    emu.store.hard_delete(item)
    _, body = await _chunk(api, sess["session_id"], 0, b"0123")
    assert body["code"] == 40016


async def test_s6_8_version_after_expired_session_replaces_stale_placeholder(
    api: Api, emu: EmulatorHandle
) -> None:
    """After a version session expires, a new one drops the stale placeholder entity."""
    await api.upload("cloudreve://my/a", b"v1")
    stale = await _session(api, "cloudreve://my/a", 8, entity_type="version")
    emu.faults.expire_session(stale["session_id"])
    assert (await api.ok("GET", "/user/capacity"))["used"] == 10
    await api.upload("cloudreve://my/a", b"v2", entity_type="version")
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/a", "extended": "true"})
    assert [e["size"] for e in info["extended_info"]["entities"]] == [2]
    assert info["metadata"] is None
    assert (await api.ok("GET", "/user/capacity"))["used"] == 2


async def test_s6_4_without_preallocation_a_gap_is_50004(tmp_path: Path) -> None:
    """Without pre-allocation a chunk beyond the bytes written so far fails with 50004."""
    async with (
        running_emulator(tmp_path, chunk_size=4, pre_allocate=False, drivers=no_drivers) as emu,
        aiohttp.ClientSession() as http,
    ):
        api = Api(http, emu.url)
        await api.sign_in(USER, emu.users[USER])
        sess = await _session(api, "cloudreve://my/a", 8)
        _, body = await _chunk(api, sess["session_id"], 1, b"4567")
        assert body["code"] == 50004
        await _chunk(api, sess["session_id"], 0, b"0123")
        await _chunk(api, sess["session_id"], 1, b"4567")
        assert await api.download("cloudreve://my/a") == b"01234567"


async def test_s6_7_cancelling_a_version_keeps_the_file(api: Api, emu: EmulatorHandle) -> None:
    """Cancelling a version session removes only the placeholder version."""
    await api.upload("cloudreve://my/a", b"keep")
    sess = await _session(api, "cloudreve://my/a", 6, entity_type="version")
    await api.ok(
        "DELETE", "/file/upload", json={"id": sess["session_id"], "uri": "cloudreve://my/a"}
    )
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/a", "extended": "true"})
    assert info["metadata"] is None
    assert len(info["extended_info"]["entities"]) == 1
    assert await api.download("cloudreve://my/a") == b"keep"
    assert (await api.ok("GET", "/user/capacity"))["used"] == 4


async def test_s6_4_remote_completion_failure_is_50007(
    api: Api, emu: EmulatorHandle, http: aiohttp.ClientSession
) -> None:
    """When the slave cannot finish through the master, the chunk answers 50007."""
    emu.use_policy(USER, "/remote", "remote")
    sess = await _session(api, "cloudreve://my/remote/f.bin", 4)
    emu.faults.fail_completions(1)
    auth = {"Authorization": sess["credential"]}
    async with http.post(sess["upload_urls"][0], data=b"0123", headers=auth) as r:
        assert (await r.json())["code"] == 50007
    async with http.post(sess["upload_urls"][0], data=b"0123", headers=auth) as r:
        assert (await r.json())["code"] == 0


async def test_s10_name_of_255_utf8_bytes_uploads_and_leaves_no_lock(api: Api) -> None:
    """A valid 255-byte CJK name uploads; the blob key never exceeds the file system's limit."""
    name = "文" * 83 + ".txt"
    assert len(name.encode()) <= 255
    uri = "cloudreve://my/" + quote(name, safe="")
    await api.upload(uri, b"abc")
    info = await api.ok("GET", "/file/info", params={"uri": uri})
    assert info["size"] == 3
    assert "sys:upload_session_id" not in (info.get("metadata") or {})
    again = await _session(api, uri, 3, entity_type="version")
    assert again["session_id"]
