"""The onedrive chunk writer against a Graph-like upload session server (contract 6.3, 6.5)."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from tests.transfer.test_policies_support import FakeCallbackApi, drive_upload
from transfer.backend import SavedUpload, WriterContext
from transfer.errors import ApiError, ServerError, UnsupportedFeature
from transfer.policies._storage import PartUrlExpired
from transfer.policies.onedrive import FRAGMENT_ALIGN, OneDriveWriter, fragment_size

pytestmark = pytest.mark.anyio
A = FRAGMENT_ALIGN


@dataclass
class Fragment:
    start: int
    end: int
    total: int
    length: int
    headers: dict[str, str]


@dataclass
class GraphSession:
    """A Graph upload session: ranges in order, 320 KiB fragments, 416 on overlap."""

    size: int = 0
    received: bytearray = field(default_factory=bytearray)
    puts: list[Fragment] = field(default_factory=list)
    gets: int = 0
    fail_next_put: int = 0
    fail_put_numbers: set[int] = field(default_factory=set)
    gone: bool = False

    def graph_error(self, status: int, code: str, inner: str = "") -> web.Response:
        error: dict[str, object] = {"code": code, "message": f"{code} answer"}
        if inner:
            error["innererror"] = {"code": inner, "request-id": str(uuid.uuid4())}
        return web.json_response({"error": error}, status=status)

    async def put(self, request: web.Request) -> web.Response:
        body = await request.read()
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", request.headers.get("Content-Range", ""))
        if match is None:
            return self.graph_error(400, "invalidRequest")
        start, end, total = (int(g) for g in match.groups())
        self.puts.append(Fragment(start, end, total, len(body), dict(request.headers)))
        if self.gone:
            return self.graph_error(404, "itemNotFound")
        if self.fail_next_put or len(self.puts) in self.fail_put_numbers:
            self.fail_next_put = max(0, self.fail_next_put - 1)
            self.fail_put_numbers.discard(len(self.puts))
            return self.graph_error(503, "serviceNotAvailable")
        if total != self.size or end - start + 1 != len(body):
            return self.graph_error(400, "invalidRequest")
        if start != len(self.received):
            return self.graph_error(416, "invalidRange", "fragmentOverlap")
        if end != self.size - 1 and len(body) % A:
            return self.graph_error(400, "invalidRequest", "fragmentSizeNotMultiple")
        self.received += body
        if len(self.received) == self.size:
            return web.json_response({"id": "item", "size": self.size}, status=201)
        return web.json_response(self.status(), status=202)

    def status(self) -> dict[str, object]:
        left = [] if len(self.received) == self.size else [f"{len(self.received)}-"]
        return {"expirationDateTime": "2030-01-01T00:00:00Z", "nextExpectedRanges": left}

    async def get(self, request: web.Request) -> web.Response:
        self.gets += 1
        return web.json_response(self.status())


@pytest.fixture
async def graph() -> AsyncIterator[tuple[GraphSession, str]]:
    state = GraphSession()
    app = web.Application(client_max_size=64 << 20)
    app.router.add_put("/up/{token}", state.put)
    app.router.add_get("/up/{token}", state.get)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield state, str(server.make_url("/up/tok123?tempauth=secret"))
    finally:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def session_for(url: str, size: int, chunk_size: int) -> SavedUpload:
    return SavedUpload(
        session_id=str(uuid.uuid4()),
        uri="cloudreve://my/video.bin",
        size=size,
        chunk_size=chunk_size,
        expires=2000000000,
        policy_type="onedrive",
        callback_secret=uuid.uuid4().hex,
        upload_urls=(url,),
    )


async def upload(
    graph: tuple[GraphSession, str], http: aiohttp.ClientSession, data: bytes, chunk_size: int
) -> tuple[FakeCallbackApi, SavedUpload]:
    state, url = graph
    state.size = len(data)
    session = session_for(url, len(data), chunk_size)
    api = FakeCallbackApi()

    async def open_session() -> SavedUpload:
        return session

    await drive_upload(data, open_session, OneDriveWriter, http, api)
    return api, session


async def test_s6_3_onedrive_sequential_ranges_and_post_callback(
    graph: tuple[GraphSession, str], http: aiohttp.ClientSession
) -> None:
    """Chunks go in order with exact Content-Range, then the onedrive callback is called."""
    state, _ = graph
    data = os.urandom(5 * A + 123)

    api, session = await upload(graph, http, data, 2 * A)

    assert bytes(state.received) == data
    ranges = [(f.start, f.end) for f in state.puts]
    assert ranges == [(0, 2 * A - 1), (2 * A, 4 * A - 1), (4 * A, 5 * A + 122)]
    assert api.calls == [("onedrive", session.session_id, session.callback_secret)]
    for fragment in state.puts:
        assert "Authorization" not in fragment.headers
        assert "Cookie" not in fragment.headers


async def test_br08_misaligned_chunk_size_sends_only_aligned_fragments(
    graph: tuple[GraphSession, str], http: aiohttp.ClientSession
) -> None:
    """A chunk size off the 320 KiB grid warns once; every non-final fragment stays aligned."""
    state, _ = graph
    data = os.urandom(7 * A + 5)

    with capture_logs() as logs:
        await upload(graph, http, data, 2 * A + 1000)

    assert bytes(state.received) == data
    for fragment in state.puts[:-1]:
        assert fragment.length % A == 0
    assert state.puts[-1].end == len(data) - 1
    warnings = [e for e in logs if e["event"] == "onedrive_chunk_size_misaligned"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"


def test_br08_fragment_size_rounds_down_to_320_kib() -> None:
    """A chosen fragment size is rounded down to a multiple of 327680 bytes."""
    assert fragment_size(134217728) == 134021120
    assert fragment_size(50 << 20) == 50 << 20
    assert fragment_size(1000) == A


async def test_s6_5_fragment_overlap_skips_bytes_graph_already_has(
    graph: tuple[GraphSession, str], http: aiohttp.ClientSession
) -> None:
    """A 416 fragmentOverlap on a chunk Graph already stored reads nextExpectedRanges and skips."""
    state, url = graph
    data = os.urandom(4 * A + 7)
    state.size = len(data)
    state.received += data[: 2 * A]  # chunk 0 arrived, but its acknowledgement was lost
    writer = OneDriveWriter(
        WriterContext(session_for(url, len(data), 2 * A), http, FakeCallbackApi())
    )

    await writer.write_chunk(0, 0, data[: 2 * A])
    await writer.write_chunk(1, 2 * A, data[2 * A : 4 * A])
    await writer.write_chunk(2, 4 * A, data[4 * A :])

    assert bytes(state.received) == data
    assert state.gets == 1
    assert [(f.start, f.length) for f in state.puts] == [(0, 2 * A), (2 * A, 2 * A), (4 * A, 7)]


async def test_s6_5_fragment_overlap_trims_a_partly_stored_chunk(
    graph: tuple[GraphSession, str], http: aiohttp.ClientSession
) -> None:
    """When Graph holds half of a chunk, only the missing half is sent after realignment."""
    state, url = graph
    data = os.urandom(3 * A)
    state.size = len(data)
    state.received += data[:A]
    writer = OneDriveWriter(
        WriterContext(session_for(url, len(data), 2 * A), http, FakeCallbackApi())
    )

    await writer.write_chunk(0, 0, data[: 2 * A])
    await writer.write_chunk(1, 2 * A, data[2 * A :])

    assert bytes(state.received) == data
    assert [(f.start, f.length) for f in state.puts] == [(0, 2 * A), (A, A), (2 * A, A)]


async def test_s6_5_graph_missing_bytes_before_chunk_asks_for_new_session(
    graph: tuple[GraphSession, str], http: aiohttp.ClientSession
) -> None:
    """If Graph expects bytes before the chunk at hand, the writer raises PartUrlExpired."""
    state, url = graph
    data = os.urandom(4 * A)
    state.size = len(data)
    writer = OneDriveWriter(
        WriterContext(session_for(url, len(data), 2 * A), http, FakeCallbackApi())
    )

    with pytest.raises(PartUrlExpired):
        await writer.write_chunk(1, 2 * A, data[2 * A :])

    assert state.received == bytearray()


async def test_s6_3_onedrive_gone_session_asks_for_new_session(
    graph: tuple[GraphSession, str], http: aiohttp.ClientSession
) -> None:
    """A 404 itemNotFound on the upload URL is not retryable with it: PartUrlExpired."""
    state, url = graph
    state.size, state.gone = A, True
    writer = OneDriveWriter(WriterContext(session_for(url, A, A), http, FakeCallbackApi()))

    with pytest.raises(PartUrlExpired):
        await writer.write_chunk(0, 0, bytes(A))


async def test_br17_onedrive_5xx_is_retryable_and_resends_only_that_fragment(
    graph: tuple[GraphSession, str], http: aiohttp.ClientSession
) -> None:
    """A 503 on chunk 1 is retryable; the retry sends chunk 1 only and the file is whole."""
    state, _ = graph
    data = os.urandom(3 * A)
    state.fail_put_numbers = {2}
    await upload(graph, http, data, A)

    assert bytes(state.received) == data
    assert [f.start for f in state.puts] == [0, A, A, 2 * A]


async def test_s6_3_onedrive_5xx_error_type(
    graph: tuple[GraphSession, str], http: aiohttp.ClientSession
) -> None:
    """A Graph 503 becomes a retryable ServerError naming Graph's code, without the token."""
    state, url = graph
    state.size, state.fail_next_put = A, 1
    writer = OneDriveWriter(WriterContext(session_for(url, A, A), http, FakeCallbackApi()))

    with pytest.raises(ServerError) as caught:
        await writer.write_chunk(0, 0, bytes(A))

    assert caught.value.retryable
    assert "serviceNotAvailable" in str(caught.value)
    assert "tempauth" not in str(caught.value)


async def test_br06_zero_byte_file_refuses_the_session_path(
    graph: tuple[GraphSession, str], http: aiohttp.ClientSession
) -> None:
    """A 0-byte OneDrive upload raises UnsupportedFeature naming the non-session path."""
    state, url = graph
    writer = OneDriveWriter(WriterContext(session_for(url, 0, A), http, FakeCallbackApi()))

    with pytest.raises(UnsupportedFeature, match="PUT /file/content"):
        await writer.write_chunk(0, 0, b"")

    assert state.puts == []


async def test_br12_onedrive_callback_failure_is_not_done(
    graph: tuple[GraphSession, str], http: aiohttp.ClientSession
) -> None:
    """A 404 on the POST callback makes finish fail."""
    state, url = graph
    state.size = A
    api = FakeCallbackApi(fail_with=ApiError(404, 404, "404 page not found", method="POST"))
    writer = OneDriveWriter(WriterContext(session_for(url, A, A), http, api))
    part = await writer.write_chunk(0, 0, bytes(A))

    with pytest.raises(ApiError):
        await writer.finish([part])

    assert len(api.calls) == 1
    assert json.loads(json.dumps(state.status()))["nextExpectedRanges"] == []


@dataclass
class FakeContentApi(FakeCallbackApi):
    """A callback api that also offers the non-session calls a 0-byte file needs."""

    cancelled: list[tuple[str, str]] = field(default_factory=list)
    content: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    async def delete_upload_session(self, session_id: str, uri: str) -> None:
        self.cancelled.append((session_id, uri))

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        what: str = "",
    ) -> object:
        self.content.append((method, path, dict(params or {}), data or b""))
        return None


async def test_br06_zero_byte_file_cancels_session_then_puts_content(
    graph: tuple[GraphSession, str], http: aiohttp.ClientSession
) -> None:
    """An empty file cancels the session, PUTs empty content, and makes no callback."""
    state, url = graph
    session = session_for(url, 0, A)
    api = FakeContentApi()
    writer = OneDriveWriter(WriterContext(session, http, api))

    part = await writer.write_chunk(0, 0, b"")
    await writer.finish([part])

    assert api.cancelled == [(session.session_id, session.uri)]
    assert api.content == [("PUT", "/file/content", {"uri": session.uri}, b"")]
    assert api.calls == []
    assert state.puts == []


async def test_br08_retry_after_5xx_keeps_the_carried_tail(
    graph: tuple[GraphSession, str], http: aiohttp.ClientSession
) -> None:
    """With a misaligned chunk size, a 503 mid-upload is retried in the same session."""
    state, url = graph
    state.fail_put_numbers = {2, 4}
    data = os.urandom(7 * A + 5)
    state.size = len(data)
    session = session_for(url, len(data), 2 * A + 1000)

    async def open_session() -> SavedUpload:
        return session

    await drive_upload(data, open_session, OneDriveWriter, http, FakeCallbackApi(), max_sessions=1)

    assert bytes(state.received) == data
    assert state.gets == 0
    for fragment in state.puts[:-1]:
        assert fragment.length % A == 0
