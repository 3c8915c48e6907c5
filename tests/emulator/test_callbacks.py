"""Completion callbacks (contract 6.9, 1.2) with a fake storage driver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest
from aiohttp import web

from emulator.policy import (
    CallbackFailed,
    PolicyDriver,
    SessionCredentials,
    UploadHost,
    UploadSessionInfo,
)
from emulator.testing import EmulatorHandle, running_emulator
from tests.emulator.apiclient import Api
from tests.emulator.conftest import USER

pytestmark = pytest.mark.anyio


class FakeS3:
    """A storage whose objects are byte strings in memory, for the s3 and onedrive types."""

    def __init__(self, type_: str, host: UploadHost) -> None:
        self.type = type_
        self.host = host
        self.objects: dict[str, bytes] = {}
        self.aborted: list[str] = []

    def default_chunk_size(self) -> int:
        return 5

    async def open_session(self, session: UploadSessionInfo) -> SessionCredentials:
        urls = tuple(
            f"{self.host.site_url}/fake/{self.type}/{session.storage_key}/{i}"
            for i in range(max(1, -(-session.size // session.chunk_size)))
        )
        return SessionCredentials(upload_id="up-1", upload_urls=urls, complete_url="http://c")

    async def abort_session(self, session: UploadSessionInfo) -> None:
        self.aborted.append(session.session_id)

    async def verify_callback(self, session: UploadSessionInfo, request: web.Request) -> int:
        if session.storage_key not in self.objects:
            raise CallbackFailed(40016, "object missing")
        return len(self.objects[session.storage_key])

    async def download_url(self, storage_key: str, name: str, ttl_s: int, download: bool) -> str:
        return f"{self.host.site_url}/fake-get/{storage_key}"

    async def put_blob(self, storage_key: str, src: Path) -> None:
        self.objects[storage_key] = await anyio.Path(src).read_bytes()

    async def fetch_blob(self, storage_key: str, dst: Path) -> None:
        await anyio.Path(dst).write_bytes(self.objects[storage_key])

    async def delete_blob(self, storage_key: str) -> None:
        self.objects.pop(storage_key, None)

    def routes(self) -> Iterable[web.AbstractRouteDef]:
        return [web.put(f"/fake/{self.type}/{{key:.*}}/{{part}}", self._put_part)]

    async def _put_part(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        self.objects[key] = self.objects.get(key, b"") + await request.read()
        return web.Response(headers={"ETag": '"etag"'})


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[tuple[EmulatorHandle, dict[str, FakeS3]]]:
    """An emulator whose s3 and onedrive policies use in-memory fake drivers."""
    made: dict[str, FakeS3] = {}

    @asynccontextmanager
    async def opener(host: UploadHost, data_dir: Path) -> AsyncIterator[dict[str, PolicyDriver]]:
        made["s3"] = FakeS3("s3", host)
        made["onedrive"] = FakeS3("onedrive", host)
        yield dict(made)

    async with running_emulator(tmp_path, policy="s3", drivers=opener) as emu:
        yield emu, made


@pytest.fixture
async def capi(fake: tuple[EmulatorHandle, dict[str, FakeS3]]) -> AsyncIterator[Api]:
    """A signed-in client against the fake-driver emulator."""
    emu, _ = fake
    async with aiohttp.ClientSession() as http:
        api = Api(http, emu.url)
        await api.sign_in(USER, emu.users[USER])
        yield api


async def test_s6_9_s3_callback_is_get_and_completes(
    capi: Api, fake: tuple[EmulatorHandle, dict[str, FakeS3]]
) -> None:
    """The s3 callback is a GET; it checks the stored size and completes the upload."""
    emu, drivers = fake
    sess = await capi.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/a.bin", "size": 7})
    assert sess["chunk_size"] == 5
    assert len(sess["upload_urls"]) == 2
    assert sess["completeURL"] == "http://c"
    assert sess["upload_id"] == "up-1"
    path = f"/callback/s3/{sess['session_id']}/{sess['callback_secret']}"
    status, _ = await capi.call("POST", path)
    assert status == 404
    key = emu.state.store.sessions[sess["session_id"]].info.storage_key
    drivers["s3"].objects[key] = b"1234567"
    status, body = await capi.call("GET", path, auth=False)
    assert (status, body["code"]) == (200, 0)
    info = await capi.ok("GET", "/file/info", params={"uri": "cloudreve://my/a.bin"})
    assert info["metadata"] is None
    status, body = await capi.call("GET", path, auth=False)
    assert (status, body["code"]) == (401, 40011)
    url = (await capi.ok("POST", "/file/url", json={"uris": ["cloudreve://my/a.bin"]}))["urls"][0]
    assert url["url"].endswith(f"/fake-get/{key}")


async def test_s6_9_callback_checks_order_and_statuses(
    capi: Api, fake: tuple[EmulatorHandle, dict[str, FakeS3]]
) -> None:
    """Unknown session 401/40011, wrong secret 401/40020, wrong type 401/40006, size 400/40055."""
    emu, drivers = fake
    sess = await capi.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/a.bin", "size": 7})
    sid, secret = sess["session_id"], sess["callback_secret"]
    status, body = await capi.call("GET", f"/callback/s3/nope/{secret}")
    assert (status, body["code"]) == (401, 40011)
    status, body = await capi.call("GET", f"/callback/s3/{sid}/wrong")
    assert (status, body["code"]) == (401, 40020)
    status, body = await capi.call("POST", f"/callback/onedrive/{sid}/{secret}")
    assert (status, body["code"]) == (401, 40006)
    status, body = await capi.call("GET", f"/callback/s3/{sid}/{secret}")
    assert (status, body["code"]) == (400, 40016)
    drivers["s3"].objects[emu.state.store.sessions[sid].info.storage_key] = b"123"
    status, body = await capi.call("GET", f"/callback/s3/{sid}/{secret}")
    assert (status, body["code"]) == (400, 40055)
    assert body["msg"] == "File size not match, expected: 7, actual: 3"


async def test_s6_9_onedrive_failure_is_http_200(
    capi: Api, fake: tuple[EmulatorHandle, dict[str, FakeS3]]
) -> None:
    """A processing failure of a onedrive callback answers HTTP 200 with the code."""
    emu, _ = fake
    emu.use_policy(USER, "/od", "onedrive")
    sess = await capi.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/od/a", "size": 7})
    status, body = await capi.call(
        "POST", f"/callback/onedrive/{sess['session_id']}/{sess['callback_secret']}"
    )
    assert (status, body["code"]) == (200, 40016)


async def test_s6_7_cancel_aborts_storage_upload(
    capi: Api, fake: tuple[EmulatorHandle, dict[str, FakeS3]]
) -> None:
    """Cancelling a live s3 session asks the driver to abort the multipart upload."""
    _, drivers = fake
    sess = await capi.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/a", "size": 7})
    await capi.ok(
        "DELETE", "/file/upload", json={"id": sess["session_id"], "uri": "cloudreve://my/a"}
    )
    assert drivers["s3"].aborted == [sess["session_id"]]


async def test_s6_9_legacy_server_skips_secret_check(tmp_path: Path) -> None:
    """Before 4.18.0 any callback key is accepted."""
    made: dict[str, FakeS3] = {}

    @asynccontextmanager
    async def opener(host: UploadHost, data_dir: Path) -> AsyncIterator[dict[str, PolicyDriver]]:
        made["s3"] = FakeS3("s3", host)
        yield dict(made)

    async with (
        running_emulator(tmp_path, policy="s3", server_version="4.14.0", drivers=opener) as emu,
        aiohttp.ClientSession() as http,
    ):
        api = Api(http, emu.url)
        await api.sign_in(USER, emu.users[USER])
        sess = await api.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/a", "size": 2})
        made["s3"].objects[emu.state.store.sessions[sess["session_id"]].info.storage_key] = b"12"
        await api.ok("GET", f"/callback/s3/{sess['session_id']}/anything")


async def test_s6_2_policy_without_driver_is_refused(api: Api, emu: EmulatorHandle) -> None:
    """A session on a policy type with no driver fails with a clear 40006."""
    emu.use_policy(USER, "/s3", "s3")
    _, body = await api.call("PUT", "/file/upload", json={"uri": "cloudreve://my/s3/a", "size": 1})
    assert body["code"] == 40006
    assert "no driver" in body["msg"]


async def test_s6_3_relay_over_storage_driver_stores_blob_in_driver(
    capi: Api, fake: tuple[EmulatorHandle, dict[str, FakeS3]]
) -> None:
    """A relay policy of a storage type takes the file as chunk 0 and stores it via the driver."""
    emu, drivers = fake
    relay = emu.policy("relay")
    assert (relay.type, relay.relay) == ("s3", True)
    emu.use_policy(USER, "/r", "relay")
    sess = await capi.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/r/a", "size": 3})
    assert sess["chunk_size"] == 0
    await capi.ok("POST", f"/file/upload/{sess['session_id']}/0", data=b"abc")
    assert list(drivers["s3"].objects.values()) == [b"abc"]


async def test_s6_9_remote_callback_needs_the_slave_signature(
    api: Api, emu: EmulatorHandle
) -> None:
    """A remote callback without a valid ``Bearer Cr`` header is HTTP 401 + 40020."""
    from emulator.upload import sign_path

    emu.use_policy(USER, "/rm", "remote")
    sess = await api.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/rm/a", "size": 2})
    path = f"/callback/remote/{sess['session_id']}/{sess['callback_secret']}"
    status, body = await api.call("POST", path)
    assert (status, body["code"]) == (401, 40020)
    sign = sign_path(emu.store.secret, "/api/v4" + path, {}, int(emu.clock.now()) + 60)
    status, body = await api.call(
        "POST", path, headers={"Authorization": f"Bearer Cr {sign}"}, auth=False
    )
    assert (status, body["code"]) == (200, 0)
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/rm/a"})
    assert info["metadata"] is None


async def test_faults_apply_to_driver_storage_routes(
    capi: Api, fake: tuple[EmulatorHandle, dict[str, FakeS3]]
) -> None:
    """A fault rule on a driver's storage route fires like on any API route."""
    emu, _ = fake
    sess = await capi.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/a.bin", "size": 4})
    [url] = sess["upload_urls"]
    emu.faults.fail("PUT", "/fake/s3/*", status=503)
    async with capi.session.put(url, data=b"1234") as resp:
        assert resp.status == 503
    async with capi.session.put(url, data=b"1234") as resp:
        assert resp.status == 200
    assert emu.requests.statuses("PUT", "/fake/s3/*") == [503, 200]
    status, body = await capi.call(
        "GET", f"/callback/s3/{sess['session_id']}/{sess['callback_secret']}"
    )
    assert (status, body["code"]) == (200, 0)
