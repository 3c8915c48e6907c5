"""Harness for the storage-policy driver tests, and the drivers' shared life-cycle tests.

``running_storage`` serves every driver's routes on a bare aiohttp app together with a minimal
stand-in for the core: an :class:`UploadHost` that keeps sessions in a dict, and the generic
callback route (secret, policy type, ``verify_callback``, completion), so each storage flow can
be driven end to end with raw HTTP.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import threading
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from emulator.policies import open_drivers
from emulator.policy import (
    CallbackFailed,
    PolicyDriver,
    PolicyInfo,
    SessionCredentials,
    UploadSessionInfo,
)

OCTET = {"Content-Type": "application/octet-stream"}


class FakeClock:
    """A wall clock that tests can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class FakeHost:
    """The core as a driver sees it: live sessions and completion."""

    site_url: str = ""
    sessions: dict[str, UploadSessionInfo] = field(default_factory=dict)
    completed: dict[str, int] = field(default_factory=dict)

    def get_session(self, session_id: str) -> UploadSessionInfo | None:
        return self.sessions.get(session_id)

    async def complete_upload(self, session_id: str, stored_size: int) -> None:
        session = self.sessions.get(session_id)
        if session is None:
            raise CallbackFailed(40011, "Upload session not exist or expired")
        if stored_size != session.size:
            raise CallbackFailed(40055, f"File size not match, expected: {session.size}")
        del self.sessions[session_id]
        self.completed[session_id] = stored_size


@dataclass
class StorageEnv:
    """A running set of drivers behind a test server, plus an HTTP client."""

    host: FakeHost
    drivers: dict[str, PolicyDriver]
    http: aiohttp.ClientSession
    clock: FakeClock
    tmp: Path

    def new_session(
        self, policy_type: str, size: int, chunk_size: int = 0, mime: str = ""
    ) -> UploadSessionInfo:
        """Register a session as the core would on ``PUT /file/upload``."""
        driver = self.drivers[policy_type]
        chunk = chunk_size or driver.default_chunk_size()
        policy = PolicyInfo(1, "pol", policy_type, policy_type, chunk, 3)
        session_id = str(uuid.uuid4())
        session = UploadSessionInfo(
            session_id=session_id,
            uri=f"cloudreve://my/dir/file-{session_id[:8]}.bin",
            owner_id=1,
            file_id=1,
            entity_id=1,
            size=size,
            chunk_size=chunk,
            expires=int(self.clock()) + 3600,
            callback_secret=uuid.uuid4().hex,
            policy=policy,
            mime_type=mime,
            storage_key=f"1/{session_id}_file.bin",
        )
        self.host.sessions[session_id] = session
        return session

    async def open(
        self, policy_type: str, size: int, chunk_size: int = 0, mime: str = ""
    ) -> tuple[UploadSessionInfo, SessionCredentials]:
        """Create a session and open it on the driver."""
        session = self.new_session(policy_type, size, chunk_size, mime)
        return session, await self.drivers[policy_type].open_session(session)

    async def callback(
        self, session: UploadSessionInfo, method: str = "GET"
    ) -> aiohttp.ClientResponse:
        """Call the client callback route of the stand-in core."""
        url = (
            f"{self.host.site_url}/api/v4/callback/{session.policy.type}/"
            f"{session.session_id}/{session.callback_secret}"
        )
        async with self.http.request(method, url) as resp:
            await resp.read()
            return resp

    async def download(self, session: UploadSessionInfo) -> bytes:
        """Fetch the finished blob through the driver's download URL."""
        driver = self.drivers[session.policy.type]
        url = await driver.download_url(session.storage_key, "file.bin", 600, True)
        async with self.http.get(url) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.read()


def make_callback_route(host: FakeHost, drivers: dict[str, PolicyDriver]) -> web.RouteDef:
    """The core's generic callback handler, reduced to what the drivers rely on."""

    async def handle(request: web.Request) -> web.Response:
        session = host.get_session(request.match_info["sid"])
        if session is None:
            return web.json_response({"code": 40011, "msg": "gone"}, status=401)
        if request.match_info["secret"] != session.callback_secret:
            return web.json_response({"code": 40020, "msg": "secret"}, status=401)
        if request.match_info["type"] != session.policy.type:
            return web.json_response({"code": 40006, "msg": "type"}, status=401)
        try:
            size = await drivers[session.policy.type].verify_callback(session, request)
            await host.complete_upload(session.session_id, size)
        except CallbackFailed as exc:
            return web.json_response({"code": exc.code, "msg": exc.msg}, status=400)
        return web.json_response({"code": 0, "msg": ""})

    return web.route("*", "/api/v4/callback/{type}/{sid}/{secret}", handle)


@asynccontextmanager
async def running_storage(tmp_path: Path) -> AsyncIterator[StorageEnv]:
    """Start every driver behind a loopback test server."""
    host = FakeHost()
    clock = FakeClock()
    async with open_drivers(host, tmp_path / "data", clock=clock) as drivers:
        # As in the emulator's own app: bodies stream, nothing may be read whole.
        app = web.Application(client_max_size=0)
        for driver in drivers.values():
            app.add_routes(list(driver.routes()))
        app.add_routes([make_callback_route(host, drivers)])
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        host.site_url = str(server.make_url("")).rstrip("/")
        try:
            async with aiohttp.ClientSession() as http:
                yield StorageEnv(host, drivers, http, clock, tmp_path)
        finally:
            await server.close()


def payload(size: int, seed: int = 0) -> bytes:
    """Return ``size`` deterministic, non-repeating bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def chunks(data: bytes, chunk_size: int) -> list[bytes]:
    """Split ``data`` as contract 6.3 does (an empty file is one empty chunk)."""
    if not data or chunk_size <= 0:
        return [data]
    return [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.anyio
async def test_open_drivers_serves_every_policy_type(tmp_path: Path) -> None:
    """open_drivers yields a driver for each non-local policy type with its 6.3 default chunk."""
    async with running_storage(tmp_path) as env:
        defaults = {t: d.default_chunk_size() for t, d in env.drivers.items()}
    assert defaults == {
        "s3": 25 << 20,
        "ks3": 25 << 20,
        "cos": 25 << 20,
        "oss": 25 << 20,
        "obs": 25 << 20,
        "onedrive": 50 << 20,
        "qiniu": 25 << 20,
        "upyun": 0,
    }


@pytest.mark.anyio
async def test_moto_stops_cleanly_with_the_drivers(tmp_path: Path) -> None:
    """Leaving open_drivers stops moto: its thread is joined and its port no longer listens."""
    before = set(threading.enumerate())
    async with open_drivers(FakeHost(), tmp_path) as drivers:
        endpoint = drivers["s3"]._moto.endpoint  # type: ignore[attr-defined]
        port = int(endpoint.rsplit(":", 1)[1])
        assert _port_open(port)
    assert not _port_open(port)
    # AnyIO keeps idle worker threads for reuse; they belong to the event loop, not to moto.
    new = set(threading.enumerate()) - before
    leaked = [t for t in new if t.is_alive() and t.name != "AnyIO worker thread"]
    assert leaked == []


@pytest.mark.anyio
async def test_blob_round_trip_on_every_driver(tmp_path: Path) -> None:
    """put_blob, fetch_blob and delete_blob keep bytes intact; deleting twice is no error."""
    src = tmp_path / "src.bin"
    src.write_bytes(payload(300_000, seed=7))
    async with running_storage(tmp_path) as env:
        for policy_type, driver in env.drivers.items():
            key = f"blobs/{policy_type}/x.bin"
            await driver.put_blob(key, src)
            dst = tmp_path / f"out-{policy_type}.bin"
            await driver.fetch_blob(key, dst)
            assert dst.read_bytes() == src.read_bytes(), policy_type
            url = await driver.download_url(key, "x.bin", 60, True)
            async with env.http.get(url, headers={"Range": "bytes=10-19"}) as resp:
                assert resp.status == 206, policy_type
                assert await resp.read() == src.read_bytes()[10:20], policy_type
            await driver.delete_blob(key)
            await driver.delete_blob(key)
            with pytest.raises(FileNotFoundError):
                await driver.fetch_blob(key, tmp_path / "gone.bin")


@pytest.mark.anyio
async def test_download_url_expires_on_every_driver(tmp_path: Path) -> None:
    """A download URL stops working once the emulator clock passes its lifetime."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(1000))
    async with running_storage(tmp_path) as env:
        for policy_type, driver in env.drivers.items():
            await driver.put_blob("k/e.bin", src)
            url = await driver.download_url("k/e.bin", "e.bin", 60, False)
            env.clock.offset = 61
            async with env.http.get(url) as resp:
                assert resp.status in (401, 403), policy_type
            env.clock.offset = 0


def xml_code(body: str) -> str:
    """Return the ``<Code>`` of an S3-family XML error body."""
    match = re.search(r"<Code>([^<]+)</Code>", body)
    assert match, body
    return match.group(1)


def complete_xml(etags: list[str]) -> str:
    """The CompleteMultipartUpload body the web client sends (part n = index + 1)."""
    parts = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
        for n, etag in enumerate(etags, start=1)
    )
    return f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>"


async def put_parts(
    env: StorageEnv, creds: SessionCredentials, data: bytes, chunk_size: int
) -> list[str]:
    """PUT every chunk to its URL as the web client does and return the ETags as received."""
    etags = []
    for url, chunk in zip(creds.upload_urls, chunks(data, chunk_size), strict=True):
        async with env.http.put(url, data=io.BytesIO(chunk), headers=OCTET) as resp:
            assert resp.status == 200, await resp.text()
            etags.append(resp.headers["ETag"])
    return etags


async def post(env: StorageEnv, url: str, body: str, headers: dict[str, str]) -> tuple[int, str]:
    """POST ``body`` and return (status, text)."""
    async with env.http.post(url, data=body.encode(), headers=headers) as resp:
        return resp.status, await resp.text()


async def _zeros(total: int, block: int = 1 << 20) -> AsyncIterator[bytes]:
    """Yield ``total`` zero bytes in blocks (a client body that is never whole in memory)."""
    chunk = bytes(block)
    sent = 0
    while sent < total:
        step = min(block, total - sent)
        yield chunk[:step]
        sent += step


@pytest.mark.anyio
async def test_part_bodies_stream_to_disk_in_bounded_memory(tmp_path: Path) -> None:
    """A 48 MiB COS part and a 48 MiB OneDrive fragment are stored with < 16 MiB traced peak."""
    size = 48 << 20
    async with running_storage(tmp_path) as env:
        _, cos = await env.open("cos", size, chunk_size=size)
        _, graph = await env.open("onedrive", size)
        tracemalloc.start()
        try:
            headers = {**OCTET, "Content-Length": str(size)}
            async with env.http.put(cos.upload_urls[0], data=_zeros(size), headers=headers) as r:
                assert r.status == 200, await r.text()
            headers["Content-Range"] = f"bytes 0-{size - 1}/{size}"
            async with env.http.put(graph.upload_urls[0], data=_zeros(size), headers=headers) as r:
                assert r.status == 201, await r.text()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # Client and server share the process: about 7 MiB of fixed buffers, never a whole body.
    assert peak < 16 << 20, peak


@pytest.mark.anyio
@pytest.mark.parametrize("policy_type", ["s3", "cos", "obs"])
async def test_parts_sent_concurrently_complete_in_order(tmp_path: Path, policy_type: str) -> None:
    """Parts PUT in parallel (as chunk_concurrency allows) complete into the right bytes."""
    part = 5 << 20
    data = payload(3 * part + 1234)
    async with running_storage(tmp_path) as env:
        session, creds = await env.open(policy_type, len(data), chunk_size=part)
        pieces = chunks(data, part)
        etags = [""] * len(pieces)

        async def send(index: int) -> None:
            url = creds.upload_urls[index]
            async with env.http.put(url, data=io.BytesIO(pieces[index]), headers=OCTET) as resp:
                assert resp.status == 200, await resp.text()
                etags[index] = resp.headers["ETag"]

        async with anyio.create_task_group() as tg:
            for index in reversed(range(len(pieces))):
                tg.start_soon(send, index)
        headers = {**OCTET, "x-cos-forbid-overwrite": "true"}
        status, body = await post(env, creds.complete_url, complete_xml(etags), headers)
        assert status == 200, body
        if policy_type != "obs":
            assert (await env.callback(session)).status == 200
        assert env.host.completed == {session.session_id: len(data)}
        assert await env.download(session) == data
