"""Workflow routes through HTTP against the in-process emulator (contract 8)."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from emulator.app import Running, policy_by_type, serve
from emulator.config import EmulatorConfig
from emulator.workflow import WORKFLOWS

ADMIN = ("admin@example.com", "admin-pass")
USER = ("user@example.com", "user-pass")
PAYLOAD = bytes(range(256)) * 64  # 16 KiB
EXTRA = {"download_interval_s": "0.05", "task_max_retry": "1", "task_backoff_s": "0.01"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


class Api:
    """A signed-in caller of the emulator's API."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str = "") -> None:
        self.session = session
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        async with self.session.request(
            method, self.base + "/api/v4" + path, headers=self.headers, **kwargs
        ) as resp:
            assert resp.status == 200, await resp.text()
            body: dict[str, Any] = await resp.json()
            return body

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        body = await self.call(method, path, **kwargs)
        assert body["code"] == 0, body
        return body.get("data")

    async def put_file(self, uri: str, data: bytes) -> None:
        await self.ok("PUT", "/file/content", params={"uri": uri}, data=data)

    async def read_file(self, uri: str) -> bytes:
        urls = await self.ok("POST", "/file/url", json={"uris": [uri]})
        async with self.session.get(urls["urls"][0]["url"]) as resp:
            assert resp.status == 200
            return await resp.read()

    async def wait_task(self, task_id: str, category: str = "general") -> dict[str, Any]:
        """Poll the task list until the task is finished; return its TaskResponse."""
        with anyio.fail_after(15):
            while True:
                for cat in (category, "downloaded"):
                    data = await self.ok(
                        "GET", "/workflow", params={"page_size": "100", "category": cat}
                    )
                    for t in data["tasks"]:
                        if t["id"] == task_id and t["status"] in ("completed", "error", "canceled"):
                            return dict(t)
                await anyio.sleep(0.03)


@dataclasses.dataclass
class Env:
    run: Running
    admin: Api
    user: Api
    anon: Api
    origin: str


async def _sign_in(session: aiohttp.ClientSession, base: str, who: tuple[str, str]) -> Api:
    async with session.post(
        base + "/api/v4/session/token", json={"email": who[0], "password": who[1]}
    ) as resp:
        body = await resp.json()
    return Api(session, base, body["data"]["token"]["access_token"])


@pytest.fixture(scope="module")
async def origin() -> AsyncIterator[str]:
    """A loopback file server: /slow/<name> streams PAYLOAD in 8 pieces 0.1 s apart."""

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(len(PAYLOAD))})
        await resp.prepare(request)
        step = len(PAYLOAD) // 8
        for i in range(8):
            await resp.write(PAYLOAD[i * step : (i + 1) * step])
            await anyio.sleep(0.1)
        return resp

    async def fast(request: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD)

    app = web.Application()
    app.router.add_get("/slow/{name}", slow)
    app.router.add_get("/fast/{name}", fast)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, origin: str) -> AsyncIterator[Env]:
    """One emulator for the module: an admin and a plain user, fast task settings."""
    config = EmulatorConfig(
        data_dir=tmp_path_factory.mktemp("emu"),
        port=0,
        users=(ADMIN, USER),
        admins=(ADMIN[0],),
        extra=EXTRA,
    )
    async with serve(config) as run, aiohttp.ClientSession() as session:
        admin = await _sign_in(session, run.url, ADMIN)
        user = await _sign_in(session, run.url, USER)
        yield Env(run, admin, user, Api(session, run.url), origin)


@pytest.fixture
def settings(env: Env) -> Iterator[None]:
    """Restore the workflow settings a test changed."""
    wf = env.run.app[WORKFLOWS]
    saved = wf.settings
    yield None
    wf.settings = saved


def _set(env: Env, **changes: Any) -> None:
    wf = env.run.app[WORKFLOWS]
    wf.settings = dataclasses.replace(wf.settings, **changes)


async def _folder(api: Api, uri: str) -> None:
    await api.ok("POST", "/file/create", json={"uri": uri, "type": "folder"})


# ---- remote download -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_s8_workflow_routes_need_login(env: Env) -> None:
    """Anonymous calls to /workflow answer 401."""
    body = await env.anon.call(
        "GET", "/workflow", params={"page_size": "10", "category": "general"}
    )
    assert body["code"] == 401


@pytest.mark.anyio
async def test_s8_2_plain_user_lacks_remote_download(env: Env) -> None:
    """The default user group has no flag 9: 40007."""
    body = await env.user.call(
        "POST",
        "/workflow/download",
        json={"src": [f"{env.origin}/fast/a"], "dst": "cloudreve://my"},
    )
    assert body["code"] == 40007


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"dst": "cloudreve://my"}, 40001),
        (
            {
                "src": ["http://h/a"],
                "src_file": "cloudreve://my/t.torrent",
                "dst": "cloudreve://my",
            },
            40001,
        ),
        ({"src": ["http://h/a"]}, 40001),
        ({"src": ["http://h/a"], "dst": "cloudreve://my/no/such/folder"}, 40016),
    ],
)
async def test_s8_2_bad_requests_are_refused(env: Env, payload: dict[str, Any], code: int) -> None:
    """Neither or both sources, no dst, or a missing dst are refused with the inner code."""
    body = await env.admin.call("POST", "/workflow/download", json=payload)
    assert body["code"] == code
    if code == 40016:
        assert body["msg"] == "Invalid destination"


@pytest.mark.anyio
async def test_s8_2_more_urls_than_aria2_batch_is_40015(env: Env, settings: None) -> None:
    """More URLs than the group's aria2_batch answer 40015."""
    _set(env, aria2_batch_admin=2)
    urls = [f"{env.origin}/fast/{i}" for i in range(3)]
    body = await env.admin.call(
        "POST", "/workflow/download", json={"src": urls, "dst": "cloudreve://my"}
    )
    assert body["code"] == 40015


@pytest.mark.anyio
async def test_s8_2_remote_download_life_cycle(env: Env) -> None:
    """queued -> suspending (monitor, resume_time, download status) -> completed; file in dst."""
    api = env.admin
    await _folder(api, "cloudreve://my/dl1")
    created = await api.ok(
        "POST",
        "/workflow/download",
        json={"src": [f"{env.origin}/slow/photo%3A1.bin"], "dst": "cloudreve://my/dl1"},
    )
    assert isinstance(created, list)
    assert len(created) == 1
    task = created[0]
    assert task["status"] == "queued"
    assert task["type"] == "remote_download"
    assert task["summary"]["props"] == {
        "src_str": f"{env.origin}/slow/photo%3A1.bin",
        "src": "",
        "dst": "cloudreve://my/dl1",
        "failed": 0,
        "download": None,
    }

    seen: list[dict[str, Any]] = []
    with anyio.fail_after(10):
        while True:
            data = await api.ok(
                "GET", "/workflow", params={"page_size": "10", "category": "downloading"}
            )
            mine = [t for t in data["tasks"] if t["id"] == task["id"]]
            if not mine:
                break
            seen.append(mine[0])
            if mine[0]["status"] == "suspending" and mine[0]["summary"]["phase"] == "monitor":
                progress = await api.ok("GET", f"/workflow/progress/{task['id']}")
                assert progress == {}
            await anyio.sleep(0.05)

    monitoring = [
        t for t in seen if t["status"] == "suspending" and t["summary"]["phase"] == "monitor"
    ]
    assert monitoring, f"never saw a suspending monitor state in {seen}"
    assert all(t["resume_time"] > 0 for t in monitoring)
    partial = [t["summary"]["props"]["download"]["downloaded"] for t in monitoring]
    assert any(0 < n < len(PAYLOAD) for n in partial)
    assert monitoring[-1]["summary"]["props"]["download"]["total"] == len(PAYLOAD)

    done = await api.wait_task(task["id"], "downloaded")
    assert done["status"] == "completed"
    assert done["summary"]["props"]["download"]["state"] == "completed"
    assert await api.ok("GET", f"/workflow/progress/{task['id']}") == {}
    assert await api.read_file("cloudreve://my/dl1/photo_1.bin") == PAYLOAD


@pytest.mark.anyio
async def test_s8_2_existing_name_ends_error_with_failed_count(env: Env) -> None:
    """A taken name fails that file (counted in failed); the task ends error after retries."""
    api = env.admin
    await api.put_file("cloudreve://my/dl2/taken.bin", b"old")
    [task] = await api.ok(
        "POST",
        "/workflow/download",
        json={"src": [f"{env.origin}/fast/taken.bin"], "dst": "cloudreve://my/dl2"},
    )
    done = await api.wait_task(task["id"], "downloaded")

    assert done["status"] == "error"
    assert done["summary"]["props"]["failed"] == 1
    assert done["retry_count"] == 1
    assert len(done["error_history"]) == 1
    assert "failed to transfer 1 file(s)" in done["error"]
    assert await api.read_file("cloudreve://my/dl2/taken.bin") == b"old"


@pytest.mark.anyio
async def test_s8_2_unreachable_url_ends_error_with_text(env: Env) -> None:
    """A URL nobody answers ends the task error with an error message."""
    [task] = await env.admin.ok(
        "POST",
        "/workflow/download",
        json={"src": ["http://127.0.0.1:1/x.bin"], "dst": "cloudreve://my"},
    )
    done = await env.admin.wait_task(task["id"], "downloaded")

    assert done["status"] == "error"
    assert "failed with state" in done["error"]
    assert done["summary"]["props"]["download"]["state"] == "error"


@pytest.mark.anyio
async def test_s8_4_cancel_then_404_once_finished(env: Env) -> None:
    """DELETE cancels a running download (canceled); a second DELETE and a PATCH give 404."""
    api = env.admin
    [task] = await api.ok(
        "POST",
        "/workflow/download",
        json={"src": [f"{env.origin}/slow/c.bin"], "dst": "cloudreve://my"},
    )
    await anyio.sleep(0.2)
    assert await api.ok("DELETE", f"/workflow/download/{task['id']}") is None
    done = await api.wait_task(task["id"], "downloaded")

    assert done["status"] == "canceled"
    again = await api.call("DELETE", f"/workflow/download/{task['id']}")
    assert again["code"] == 404
    patch = await api.call(
        "PATCH",
        f"/workflow/download/{task['id']}",
        json={"files": [{"index": 1, "download": False}]},
    )
    assert patch["code"] == 404


@pytest.mark.anyio
async def test_s8_3_select_files_only_while_monitoring(env: Env) -> None:
    """PATCH works in the monitor phase; someone else's task is 404."""
    api = env.admin
    [task] = await api.ok(
        "POST",
        "/workflow/download",
        json={"src": [f"{env.origin}/slow/s.bin"], "dst": "cloudreve://my"},
    )
    await anyio.sleep(0.2)
    files = {"files": [{"index": 1, "download": True}]}
    assert await api.ok("PATCH", f"/workflow/download/{task['id']}", json=files) is None
    other = await env.user.call("PATCH", f"/workflow/download/{task['id']}", json=files)
    assert other["code"] == 404
    await api.ok("DELETE", f"/workflow/download/{task['id']}")
    await api.wait_task(task["id"], "downloaded")


# ---- list and progress -------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "params",
    [
        {"page_size": "9", "category": "general"},
        {"page_size": "101", "category": "general"},
        {"category": "general"},
        {"page_size": "10", "category": "everything"},
        {"page_size": "10"},
    ],
)
async def test_s8_5_list_validates_page_size_and_category(env: Env, params: dict[str, str]) -> None:
    """page_size outside 10-100 or an unknown category is 40001 without correlation id."""
    body = await env.admin.call("GET", "/workflow", params=params)
    assert body["code"] == 40001
    assert "correlation_id" not in body


@pytest.mark.anyio
async def test_s8_5_downloaded_is_paginated_newest_first(env: Env, settings: None) -> None:
    """Finished downloads page by page_size with a cursor, newest first, each id once."""
    api = env.user
    granted = env.run.app[WORKFLOWS].settings.user_permissions | {9}
    _set(env, user_permissions=granted, aria2_batch_user=50)
    created = await api.ok(
        "POST",
        "/workflow/download",
        json={"src": [f"file:///nope/{i}" for i in range(12)], "dst": "cloudreve://my"},
    )
    for t in created:
        await api.wait_task(t["id"], "downloaded")
    first = await api.ok("GET", "/workflow", params={"page_size": "10", "category": "downloaded"})
    assert first["pagination"]["is_cursor"] is True
    token = first["pagination"]["next_token"]
    second = await api.ok(
        "GET",
        "/workflow",
        params={"page_size": "10", "category": "downloaded", "next_page_token": token},
    )

    ids = [t["id"] for t in first["tasks"] + second["tasks"]]
    assert len(first["tasks"]) == 10
    assert "next_token" not in second["pagination"]
    assert ids == [t["id"] for t in reversed(created)]
    assert all(
        t["status"] == "error" and t["error"].startswith("url rejected") for t in first["tasks"]
    )


@pytest.mark.anyio
async def test_s8_5_downloading_ignores_page_size(env: Env) -> None:
    """Twelve running downloads all come back in one page of size 10."""
    api = env.admin
    await _folder(api, "cloudreve://my/many")
    created = await api.ok(
        "POST",
        "/workflow/download",
        json={
            "src": [f"{env.origin}/slow/p{i}.bin" for i in range(12)],
            "dst": "cloudreve://my/many",
        },
    )
    data = await api.ok("GET", "/workflow", params={"page_size": "10", "category": "downloading"})
    running = {t["id"] for t in data["tasks"]}
    for t in created:
        await api.ok("DELETE", f"/workflow/download/{t['id']}")
    for t in created:
        await api.wait_task(t["id"], "downloaded")

    assert {t["id"] for t in created} <= running
    assert "next_token" not in data["pagination"]


@pytest.mark.anyio
async def test_s8_6_progress_edge_cases(env: Env) -> None:
    """A malformed id is 40001; an unknown or someone else's task answers {}."""
    bad = await env.admin.call("GET", "/workflow/progress/not-an-id!")
    assert bad["code"] == 40001
    [task] = await env.admin.ok(
        "POST",
        "/workflow/download",
        json={"src": [f"{env.origin}/slow/q.bin"], "dst": "cloudreve://my"},
    )
    assert await env.user.ok("GET", f"/workflow/progress/{task['id']}") == {}
    await env.admin.ok("DELETE", f"/workflow/download/{task['id']}")
    await env.admin.wait_task(task["id"], "downloaded")
    assert await env.admin.ok("GET", f"/workflow/progress/{task['id']}") == {}


# ---- archive, extract, import, relocate --------------------------------------------------------


@pytest.mark.anyio
async def test_s8_7_archive_extract_round_trip(env: Env) -> None:
    """Archive a folder and a file, extract the zip elsewhere: same names and bytes."""
    api = env.admin
    await api.put_file("cloudreve://my/src/a.txt", b"alpha")
    await api.put_file("cloudreve://my/src/deep/b%20c.bin", bytes(3000))
    await api.put_file("cloudreve://my/top.txt", b"top")
    task = await api.ok(
        "POST",
        "/workflow/archive",
        json={
            "src": ["cloudreve://my/src", "cloudreve://my/top.txt"],
            "dst": "cloudreve://my/out/all.zip",
        },
    )
    assert task["type"] == "create_archive"
    assert task["status"] == "queued"
    done = await api.wait_task(task["id"])
    assert done["status"] == "completed", done

    blob = await api.read_file("cloudreve://my/out/all.zip")
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert sorted(zf.namelist()) == [
            "src/",
            "src/a.txt",
            "src/deep/",
            "src/deep/b c.bin",
            "top.txt",
        ]

    await _folder(api, "cloudreve://my/unpacked")
    task = await api.ok(
        "POST",
        "/workflow/extract",
        json={"src": ["cloudreve://my/out/all.zip"], "dst": "cloudreve://my/unpacked"},
    )
    done = await api.wait_task(task["id"])
    assert done["status"] == "completed", done
    assert done["summary"]["props"]["src"] == "cloudreve://my/out/all.zip"
    assert await api.read_file("cloudreve://my/unpacked/src/a.txt") == b"alpha"
    assert await api.read_file("cloudreve://my/unpacked/src/deep/b%20c.bin") == bytes(3000)
    assert await api.read_file("cloudreve://my/unpacked/top.txt") == b"top"


@pytest.mark.anyio
async def test_s8_7_archive_errors(env: Env) -> None:
    """An existing dst is 40004; a plain user lacks flag 5 (40007)."""
    await env.admin.put_file("cloudreve://my/exists.zip", b"zip?")
    body = await env.admin.call(
        "POST",
        "/workflow/archive",
        json={"src": ["cloudreve://my/top.txt"], "dst": "cloudreve://my/exists.zip"},
    )
    assert body["code"] == 40004
    body = await env.user.call(
        "POST",
        "/workflow/archive",
        json={"src": ["cloudreve://my/x"], "dst": "cloudreve://my/y.zip"},
    )
    assert body["code"] == 40007


@pytest.mark.anyio
async def test_s8_7_extract_over_decompress_limit_errors_while_running(
    env: Env, settings: None
) -> None:
    """The decompress limit is checked when the task runs: created fine, ends error."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("big.bin", bytes(10000))
    await env.admin.put_file("cloudreve://my/big.zip", buf.getvalue())
    _set(env, decompress_size=50)
    task = await env.admin.ok(
        "POST",
        "/workflow/extract",
        json={"src": ["cloudreve://my/big.zip"], "dst": "cloudreve://my"},
    )
    done = await env.admin.wait_task(task["id"])

    assert done["status"] == "error"
    assert "exceeds the limit 50" in done["error"]


@pytest.mark.anyio
async def test_s8_7_import_is_admin_only_and_copies_server_files(env: Env, tmp_path: Path) -> None:
    """An admin imports a server folder into a user's drive and policy; a plain user gets 40007."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "one.txt").write_bytes(b"1")
    (tmp_path / "sub" / "two.txt").write_bytes(b"22")
    st = env.run.state
    owner = st.store.user_by_email(USER[0])
    assert owner is not None
    target = policy_by_type(st, "s3") if "s3" in st.drivers else policy_by_type(st, "remote")
    body = {
        "src": str(tmp_path),
        "dst": "imported",
        "user_id": owner.hash_id,
        "policy_id": target.id,
        "recursive": True,
    }
    denied = await env.user.call("POST", "/workflow/import", json=body)
    assert denied["code"] == 40007
    task = await env.admin.ok("POST", "/workflow/import", json=body)
    assert task["type"] == "import"
    assert task["status"] == "queued"
    with anyio.fail_after(10):
        while True:
            if st.store.lookup(owner.id, "/imported/sub/two.txt") is not None:
                break
            await anyio.sleep(0.02)

    assert await env.user.read_file("cloudreve://my/imported/one.txt") == b"1"
    assert await env.user.read_file("cloudreve://my/imported/sub/two.txt") == b"22"
    item = st.store.lookup(owner.id, "/imported/one.txt")
    assert item is not None
    assert {e.policy_id for e in st.store.entities(item.id)} == {target.id}


@pytest.mark.anyio
@pytest.mark.parametrize("route", ["reloacte", "relocate", "reloc"])
async def test_s8_8_relocate_moves_bytes_and_kills_old_urls(env: Env, route: str) -> None:
    """Relocating local -> s3 moves every blob; old content URLs 404; fresh URLs give the bytes."""
    api = env.admin
    st = env.run.state
    target = policy_by_type(st, "s3") if "s3" in st.drivers else policy_by_type(st, "remote")
    data = bytes(range(200)) * 50
    uri = f"cloudreve://my/reloc-{route}/a.bin"
    await api.ok(
        "PATCH",
        "/user/setting",
        json={"version_retention_enabled": True, "version_retention_max": 5},
    )
    await api.put_file(uri, b"first version")
    await api.put_file(uri, data)
    old = (await api.ok("POST", "/file/url", json={"uris": [uri]}))["urls"][0]["url"]

    task = await api.ok(
        "POST",
        f"/workflow/{route}",
        json={"src": [f"cloudreve://my/reloc-{route}"], "dst_policy_id": target.hash_id},
    )
    assert task["type"] == "relocate"
    assert task["summary"]["props"]["dst_policy_id"] == target.hash_id
    done = await api.wait_task(task["id"])
    assert done["status"] == "completed", done

    async with api.session.get(old) as resp:
        assert resp.status == 404
    info = await api.ok("GET", "/file/info", params={"uri": uri, "extended": "true"})
    assert info["extended_info"]["storage_policy"]["id"] == target.hash_id
    versions = info["extended_info"]["entities"]
    assert len(versions) == 2
    assert {v["storage_policy"]["id"] for v in versions} == {target.hash_id}
    assert await api.ok("GET", f"/workflow/progress/{task['id']}") == {}
    assert await api.read_file(uri) == data


@pytest.mark.anyio
async def test_s8_8_relocate_needs_flag_10(env: Env) -> None:
    """A plain user's group lacks the relocate flag: 40007."""
    target = policy_by_type(env.run.state, "local")
    body = await env.user.call(
        "POST",
        "/workflow/reloacte",
        json={"src": ["cloudreve://my"], "dst_policy_id": target.hash_id},
    )
    assert body["code"] == 40007


@pytest.mark.anyio
async def test_s8_2_torrent_source_is_accepted_then_fails_as_unsupported(env: Env) -> None:
    """src_file must exist (inner code, msg "Invalid source file"); the task then ends error."""
    api = env.admin
    missing = await api.call(
        "POST",
        "/workflow/download",
        json={"src_file": "cloudreve://my/none.torrent", "dst": "cloudreve://my"},
    )
    assert missing["code"] == 40016
    assert missing["msg"] == "Invalid source file"

    await api.put_file("cloudreve://my/t.torrent", b"d8:announce0:e")
    [task] = await api.ok(
        "POST",
        "/workflow/download",
        json={"src_file": "cloudreve://my/t.torrent", "dst": "cloudreve://my"},
    )
    assert task["summary"]["props"]["src"] == "cloudreve://my/t.torrent"
    assert task["summary"]["props"]["src_str"] == ""
    done = await api.wait_task(task["id"], "downloaded")
    assert done["status"] == "error"
    assert "torrent" in done["error"]
