"""The upyun chunk writer against an Upyun-like form-upload endpoint (contract 6.3)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.transfer.test_policies_support import FakeCallbackApi, drive_upload
from transfer.backend import SavedUpload, WriterContext
from transfer.errors import UnsupportedFeature
from transfer.policies._storage import PartUrlExpired, StorageError
from transfer.policies.upyun import UpyunWriter

pytestmark = pytest.mark.anyio
POLICY = "eyJidWNrZXQiOiJiIn0="
SIGN = "UPYUN ak:signature"


@dataclass
class UpyunBucket:
    """Form API: fields policy, authorization, content-type?, then file LAST."""

    posts: list[list[str]] = field(default_factory=list)
    stored: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    headers: list[dict[str, str]] = field(default_factory=list)
    expired: bool = False

    async def form(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        reader = await request.multipart()
        fields: dict[str, str] = {}
        order: list[str] = []
        data = b""
        file_name = ""
        while (part := await reader.next()) is not None:
            assert isinstance(part, aiohttp.BodyPartReader)
            order.append(part.name or "")
            if part.name == "file":
                data = await part.read()
                file_name = part.filename or ""
            else:
                fields[part.name or ""] = await part.text()
        self.posts.append(order)
        if order[-1:] != ["file"]:
            return web.json_response({"code": 40000006, "message": "file must be last"}, status=400)
        if self.expired:
            return web.json_response(
                {"code": 40100004, "message": "authorization has expired"}, status=401
            )
        if fields.get("policy") != POLICY or fields.get("authorization") != SIGN:
            return web.json_response({"code": 40100005, "message": "signature error"}, status=401)
        self.stored[file_name] = (data, fields.get("content-type", ""))
        return web.json_response({"code": 200, "message": "ok", "url": "/k"})


@pytest.fixture
async def upyun() -> AsyncIterator[tuple[UpyunBucket, str]]:
    bucket = UpyunBucket()
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/bucket", bucket.form)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield bucket, str(server.make_url("/bucket"))
    finally:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def session_for(url: str, size: int, mime: str = "text/plain") -> SavedUpload:
    return SavedUpload(
        session_id=str(uuid.uuid4()),
        uri="cloudreve://my/docs/a%20b.txt",
        size=size,
        chunk_size=0,
        expires=2000000000,
        policy_type="upyun",
        callback_secret="s",
        upload_urls=(url,),
        credential=SIGN,
        mime_type=mime,
        upload_policy=POLICY,
    )


async def test_s6_3_upyun_one_form_post_with_file_last(
    upyun: tuple[UpyunBucket, str], http: aiohttp.ClientSession
) -> None:
    """The whole file goes in one form POST: policy, authorization, content-type, file last."""
    bucket, url = upyun
    data = os.urandom(3000)
    api = FakeCallbackApi()

    async def open_session() -> SavedUpload:
        return session_for(url, len(data))

    await drive_upload(data, open_session, UpyunWriter, http, api)

    assert bucket.posts == [["policy", "authorization", "content-type", "file"]]
    assert bucket.stored["a b.txt"] == (data, "text/plain")
    assert api.calls == []
    assert "Authorization" not in bucket.headers[0]
    assert "Cookie" not in bucket.headers[0]


async def test_s6_3_upyun_writer_declares_single_chunk(
    upyun: tuple[UpyunBucket, str], http: aiohttp.ClientSession
) -> None:
    """The writer asks the driver for one chunk and refuses a partial one without sending."""
    bucket, url = upyun
    writer = UpyunWriter(WriterContext(session_for(url, 10), http, FakeCallbackApi()))

    assert writer.single_chunk
    assert writer.max_concurrency == 1
    with pytest.raises(UnsupportedFeature):
        await writer.write_chunk(0, 0, b"01234")
    assert bucket.posts == []


async def test_s6_3_upyun_expired_signature_asks_for_new_session(
    upyun: tuple[UpyunBucket, str], http: aiohttp.ClientSession
) -> None:
    """An expired authorization is PartUrlExpired; a bad signature is a plain StorageError."""
    bucket, url = upyun
    bucket.expired = True
    writer = UpyunWriter(WriterContext(session_for(url, 3), http, FakeCallbackApi()))
    with pytest.raises(PartUrlExpired):
        await writer.write_chunk(0, 0, b"abc")

    bucket.expired = False
    bad = replace(session_for(url, 3), credential="UPYUN ak:forged")
    with pytest.raises(StorageError) as caught:
        await UpyunWriter(WriterContext(bad, http, FakeCallbackApi())).write_chunk(0, 0, b"abc")
    assert caught.value.storage_code == "40100005"
