"""Shared pieces of the policy-writer tests: a fake Cloudreve callback, a small upload driver,
and an S3 proxy in front of a real moto server that checks what the storage services check.

The driver here plays the part of the upload driver around a writer: it cuts chunks at the
session's ``chunk_size``, sends them up to ``max_concurrency`` at a time, retries errors marked
``retryable`` and opens a new session when a writer raises ``PartUrlExpired``.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import anyio
import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from moto.server import ThreadedMotoServer
from yarl import URL

from transfer.backend import ChunkWriter, PartResult, SavedUpload, WriterContext
from transfer.errors import ApiError, FerryError
from transfer.policies._storage import PartUrlExpired, presigned_expiry

T = TypeVar("T")
BUCKET = "ferry-policy-tests"
SECRETS = ("Bearer", "cr-token", "Cookie")


@dataclass
class FakeCallbackApi:
    """Records ``upload_callback`` calls; ``fail_with`` makes them raise like a 404/405 answer."""

    calls: list[tuple[str, str, str]] = field(default_factory=list)
    fail_with: ApiError | None = None
    on_call: Callable[[str, str], None] | None = None

    async def upload_callback(self, policy_type: str, session_id: str, secret: str) -> None:
        self.calls.append((policy_type, session_id, secret))
        if self.fail_with is not None:
            raise self.fail_with
        if self.on_call is not None:
            self.on_call(policy_type, session_id)


def chunks(size: int, chunk_size: int) -> list[tuple[int, int, int]]:
    """Return (index, offset, length) per chunk as contract 6.3 cuts them."""
    if chunk_size <= 0 or size == 0:
        return [(0, 0, size)]
    return [
        (i, off, min(chunk_size, size - off)) for i, off in enumerate(range(0, size, chunk_size))
    ]


async def retrying(op: Callable[[], Awaitable[T]], attempts: int = 4) -> T:
    """Run ``op`` again on retryable errors, like the pacer (without waiting)."""
    for attempt in range(attempts):
        try:
            return await op()
        except FerryError as exc:
            if not exc.retryable or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@dataclass
class DriveResult:
    """What :func:`drive_upload` did."""

    sessions: list[SavedUpload]
    parts: list[PartResult]


async def drive_upload(
    data: bytes,
    open_session: Callable[[], Awaitable[SavedUpload]],
    make_writer: Callable[[WriterContext], ChunkWriter],
    http: aiohttp.ClientSession,
    api: FakeCallbackApi,
    clock: Callable[[], float] = time.time,
    max_sessions: int = 2,
) -> DriveResult:
    """Upload ``data`` through a writer as the upload driver does; see the module docstring."""
    sessions: list[SavedUpload] = []
    for _ in range(max_sessions):
        session = await open_session()
        sessions.append(session)
        writer = make_writer(WriterContext(session, http, api, clock))
        expired = False
        try:
            parts = await _send_all(writer, data, session.chunk_size)
        except* PartUrlExpired:
            expired = True
        if not expired:
            return DriveResult(sessions, parts)
    raise AssertionError(f"no session succeeded after {max_sessions}")


async def _send_all(writer: ChunkWriter, data: bytes, chunk_size: int) -> list[PartResult]:
    plan = [(0, 0, len(data))] if writer.single_chunk else chunks(len(data), chunk_size)
    limit = anyio.CapacityLimiter(writer.max_concurrency or 3)
    parts: dict[int, PartResult] = {}

    async def one(index: int, offset: int, length: int) -> None:
        async with limit:
            piece = data[offset : offset + length]
            parts[index] = await retrying(lambda: writer.write_chunk(index, offset, piece))

    async with anyio.create_task_group() as tg:
        for index, offset, length in plan:
            if writer.max_concurrency == 1:
                await one(index, offset, length)
            else:
                tg.start_soon(one, index, offset, length)
    ordered = [parts[i] for i in sorted(parts)]
    await retrying(lambda: writer.finish(ordered))
    return ordered


# --- S3 behind a checking proxy -------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A real moto S3 server on loopback, with one bucket."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    _s3(endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def _s3(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="ferry",
        aws_secret_access_key="ferry-secret",
        region_name="us-east-1",
    )


@dataclass
class Seen:
    """One request the proxy received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


Fault = Callable[[Seen], web.StreamResponse | None]


@dataclass
class S3Proxy:
    """A storage front for moto: records requests, injects faults, checks expiry and signed
    headers as the real services do, completes OSS ``x-oss-complete-all`` requests, and plays
    the storage-side callback of oss and obs."""

    endpoint: str
    base: str = ""
    seen: list[Seen] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    now: float = field(default_factory=time.time)
    signed_complete_headers: dict[str, str] = field(default_factory=dict)
    storage_callbacks: list[str] = field(default_factory=list)
    storage_calls_back: bool = False
    session_ttl_s: int = 3600

    def client(self) -> Any:
        return _s3(self.endpoint)

    def parts_of(self, method: str = "PUT") -> list[Seen]:
        return [s for s in self.seen if s.method == method and "partNumber" in s.query]

    def completes(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]

    async def open_session(
        self, policy_type: str, data_size: int, chunk_size: int, key: str | None = None
    ) -> SavedUpload:
        """Create a multipart upload in moto and presign its URLs onto this proxy."""
        key = key or f"uploads/{uuid.uuid4().hex}.bin"
        # boto3 signs with the real clock; the URLs expire session_ttl_s after the proxy's clock.
        ttl = self.session_ttl_s + max(0, int(self.now - time.time()))

        def make() -> tuple[str, list[str], str]:
            c = self.client()
            upload_id = c.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
            count = len(chunks(data_size, chunk_size))
            urls = [
                c.generate_presigned_url(
                    "upload_part",
                    Params={"Bucket": BUCKET, "Key": key, "UploadId": upload_id, "PartNumber": n},
                    ExpiresIn=ttl,
                )
                for n in range(1, count + 1)
            ]
            done = c.generate_presigned_url(
                "complete_multipart_upload",
                Params={"Bucket": BUCKET, "Key": key, "UploadId": upload_id},
                ExpiresIn=ttl,
            )
            return upload_id, urls, done

        upload_id, urls, done = await anyio.to_thread.run_sync(make)
        session_id = str(uuid.uuid4())
        return SavedUpload(
            session_id=session_id,
            uri=f"cloudreve://my/{key}",
            size=data_size,
            chunk_size=chunk_size,
            expires=int(self.now) + self.session_ttl_s,
            policy_type=policy_type,
            callback_secret=uuid.uuid4().hex,
            upload_id=upload_id,
            upload_urls=tuple(self._onto_proxy(u) for u in urls),
            complete_url=self._onto_proxy(done),
        )

    def _onto_proxy(self, url: str) -> str:
        # moto ignores signatures, so pointing a presigned URL at the proxy keeps it valid there.
        return self.base + url[len(self.endpoint) :]

    async def stored(self, uri: str) -> bytes:
        key = uri.removeprefix("cloudreve://my/")

        def get() -> bytes:
            body: bytes = self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
            return body

        return await anyio.to_thread.run_sync(get)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            await request.read(),
        )
        self.seen.append(seen)
        for fault in self.faults:
            answer = fault(seen)
            if answer is not None:
                return answer
        refused = self._refuse(request, seen)
        if refused is not None:
            return refused
        body = seen.body
        if seen.method == "POST" and seen.headers.get("x-oss-complete-all") == "yes":
            body = await self._all_parts_xml(seen)
        answer = await self._forward(request, body)
        if answer.status == 200 and seen.method == "POST" and self.storage_calls_back:
            self.storage_callbacks.append(seen.path)
        return answer

    def _refuse(self, request: web.Request, seen: Seen) -> web.Response | None:
        expiry = presigned_expiry(str(request.url))
        if expiry is not None and self.now >= expiry:
            return _s3_error(403, "AccessDenied", "Request has expired")
        if seen.method == "POST":
            for name, value in self.signed_complete_headers.items():
                if seen.headers.get(name) != value:
                    return _s3_error(403, "SignatureDoesNotMatch", f"signed header {name}")
        if seen.method == "PUT" and int(seen.headers.get("Content-Length", "-1")) != len(seen.body):
            return _s3_error(400, "IncompleteBody", "Content-Length mismatch")
        return None

    async def _all_parts_xml(self, seen: Seen) -> bytes:
        key = seen.path.split("/", 2)[2]
        upload_id = seen.query["uploadId"]

        def listing() -> bytes:
            found = self.client().list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)
            items = "".join(
                f"<Part><PartNumber>{p['PartNumber']}</PartNumber><ETag>{p['ETag']}</ETag></Part>"
                for p in found.get("Parts", [])
            )
            return f"<CompleteMultipartUpload>{items}</CompleteMultipartUpload>".encode()

        return await anyio.to_thread.run_sync(listing)

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        target = URL(self.endpoint + request.path_qs, encoded=True)
        keep = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("content-type", "content-md5", "x-amz-content-sha256")
        }
        if request.method == "POST":
            # moto needs an XML (or binary) type on the complete; real services accept both.
            keep["Content-Type"] = "application/xml"
        async with (
            aiohttp.ClientSession() as http,
            http.request(request.method, target, data=io.BytesIO(body), headers=keep) as resp,
        ):
            payload = await resp.read()
            headers = {k: v for k, v in resp.headers.items() if k.lower() in ("etag",)}
            return web.Response(status=resp.status, body=payload, headers=headers)


def _s3_error(status: int, code: str, message: str) -> web.Response:
    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


@asynccontextmanager
async def s3_proxy(endpoint: str) -> AsyncIterator[S3Proxy]:
    """Run an :class:`S3Proxy` for moto at ``endpoint`` on a loopback port."""
    proxy = S3Proxy(endpoint)
    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    proxy.base = str(server.make_url("")).rstrip("/")
    try:
        yield proxy
    finally:
        await server.close()


def assert_no_cloudreve_secrets(seen: list[Seen], allow_authorization: bool = False) -> None:
    """Fail if any storage request carried a Cloudreve token or a cookie."""
    for s in seen:
        assert "Cookie" not in s.headers, s
        auth = s.headers.get("Authorization", "")
        if not allow_authorization:
            assert auth == "", s
        assert not auth.startswith("Bearer"), s
