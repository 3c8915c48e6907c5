"""The qiniu chunk writer against a Qiniu-like multipart v2 server (contract 6.3)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.transfer.test_policies_support import FakeCallbackApi, drive_upload
from transfer.backend import PartResult, SavedUpload, WriterContext
from transfer.errors import ServerError
from transfer.policies._storage import PartUrlExpired, StorageError
from transfer.policies.qiniu import QiniuWriter

pytestmark = pytest.mark.anyio
TOKEN = "ak:sign:policy"


@dataclass
class QiniuStore:
    """Multipart v2: parts by number, complete checks etags, then the storage calls back."""

    upload_id: str = "up-1"
    parts: dict[int, bytes] = field(default_factory=dict)
    puts: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    completes: list[dict[str, object]] = field(default_factory=list)
    stored: bytes | None = None
    callbacks: int = 0
    fail_puts: set[int] = field(default_factory=set)
    corrupt_md5: set[int] = field(default_factory=set)

    def error(self, status: int, text: str) -> web.Response:
        return web.json_response({"error": text}, status=status)

    async def put(self, request: web.Request) -> web.Response:
        number = int(request.match_info["part"])
        self.puts.append((number, dict(request.headers)))
        if request.headers.get("Authorization") != f"UpToken {TOKEN}":
            return self.error(401, "bad token")
        if request.match_info["upload"] != self.upload_id:
            return self.error(612, "no such uploadId")
        if len(self.puts) in self.fail_puts:
            return self.error(599, "server error")
        body = await request.read()
        self.parts[number] = body
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
        if len(self.puts) in self.corrupt_md5:
            md5 = "0" * 32
        return web.json_response({"etag": f"etag-{number}-{md5[:8]}", "md5": md5})

    async def complete(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"UpToken {TOKEN}":
            return self.error(401, "bad token")
        if request.match_info["upload"] != self.upload_id:
            return self.error(612, "no such uploadId")
        doc = await request.json()
        self.completes.append(doc)
        numbers = [p["partNumber"] for p in doc["parts"]]
        for p in doc["parts"]:
            number = p["partNumber"]
            body = self.parts.get(number, b"")
            md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
            if p["etag"] != f"etag-{number}-{md5[:8]}":
                return self.error(400, "invalid part etag")
        self.stored = b"".join(self.parts[n] for n in numbers)
        self.callbacks += 1
        self.upload_id = "completed"
        return web.json_response({"key": "k", "hash": "h"})


@pytest.fixture
async def qiniu() -> AsyncIterator[tuple[QiniuStore, str]]:
    store = QiniuStore()
    app = web.Application(client_max_size=64 << 20)
    app.router.add_put("/buckets/b/objects/k/uploads/{upload}/{part}", store.put)
    app.router.add_post("/buckets/b/objects/k/uploads/{upload}", store.complete)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield store, str(server.make_url(f"/buckets/b/objects/k/uploads/{store.upload_id}"))
    finally:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def session_for(url: str, size: int, chunk_size: int, mime: str = "") -> SavedUpload:
    return SavedUpload(
        session_id=str(uuid.uuid4()),
        uri="cloudreve://my/k",
        size=size,
        chunk_size=chunk_size,
        expires=2000000000,
        policy_type="qiniu",
        callback_secret="s",
        upload_id="up-1",
        upload_urls=(url,),
        credential=TOKEN,
        mime_type=mime,
    )


async def test_s6_3_qiniu_parts_with_uptoken_then_json_complete(
    qiniu: tuple[QiniuStore, str], http: aiohttp.ClientSession
) -> None:
    """Parts go to {url}/{n} with the UpToken; the JSON complete lists etags; no client callback."""
    store, url = qiniu
    data = os.urandom(2500)
    api = FakeCallbackApi()

    async def open_session() -> SavedUpload:
        return session_for(url, len(data), 1000, "video/mp4")

    await drive_upload(data, open_session, QiniuWriter, http, api)

    assert store.stored == data
    assert sorted(n for n, _ in store.puts) == [1, 2, 3]
    for _, headers in store.puts:
        assert headers["Content-Type"] == "application/octet-stream"
        assert headers["Authorization"] == f"UpToken {TOKEN}"
    (complete,) = store.completes
    assert [p["partNumber"] for p in complete["parts"]] == [1, 2, 3]  # type: ignore[attr-defined]
    assert complete["mimeType"] == "video/mp4"
    assert store.callbacks == 1
    assert api.calls == []


async def test_br17_qiniu_599_resends_only_that_part(
    qiniu: tuple[QiniuStore, str], http: aiohttp.ClientSession
) -> None:
    """Qiniu's 599 is retryable; only the failed part is sent again."""
    store, url = qiniu
    store.fail_puts = {2}
    data = os.urandom(3000)

    async def open_session() -> SavedUpload:
        return session_for(url, len(data), 1000)

    await drive_upload(data, open_session, QiniuWriter, http, FakeCallbackApi())

    assert store.stored == data
    numbers = sorted(n for n, _ in store.puts)
    assert len(numbers) == 4
    assert numbers.count(1) + numbers.count(2) + numbers.count(3) == 4


async def test_s6_3_qiniu_md5_mismatch_is_retryable(
    qiniu: tuple[QiniuStore, str], http: aiohttp.ClientSession
) -> None:
    """An md5 in the answer that does not match the bytes sent is a retryable ServerError."""
    store, url = qiniu
    store.corrupt_md5 = {1}
    writer = QiniuWriter(WriterContext(session_for(url, 10, 10), http, FakeCallbackApi()))

    with pytest.raises(ServerError, match="md5"):
        await writer.write_chunk(0, 0, b"0123456789")


async def test_s6_3_qiniu_612_asks_for_new_session(
    qiniu: tuple[QiniuStore, str], http: aiohttp.ClientSession
) -> None:
    """612 (no such upload) is PartUrlExpired, not retried with the same upload id."""
    store, url = qiniu
    store.upload_id = "other"
    writer = QiniuWriter(WriterContext(session_for(url, 10, 10), http, FakeCallbackApi()))

    with pytest.raises(PartUrlExpired):
        await writer.write_chunk(0, 0, b"0123456789")


async def test_s6_3_qiniu_bad_etag_on_complete_is_not_retryable(
    qiniu: tuple[QiniuStore, str], http: aiohttp.ClientSession
) -> None:
    """A 400 from the complete is a StorageError carrying Qiniu's message."""
    _, url = qiniu
    writer = QiniuWriter(WriterContext(session_for(url, 10, 10), http, FakeCallbackApi()))
    await writer.write_chunk(0, 0, b"0123456789")

    with pytest.raises(StorageError, match="invalid part etag") as caught:
        await writer.finish([PartResult(0, "forged")])

    assert not caught.value.retryable
