"""OneDrive policy: a Microsoft Graph-like resumable upload session served by the emulator.

Cloudreve hands the client one pre-authenticated upload URL (``upload_urls[0]``). The client
PUTs fragments with ``Content-Range: bytes {start}-{end}/{size}``; the session behaves as Graph's:

* strictly sequential: a fragment that does not start at the next expected byte gets
  ``416`` with ``innererror.code`` ``fragmentOverlap`` (starts before it) or ``invalidRange``
  (leaves a gap);
* every fragment but the last is a multiple of 320 KiB (327680 bytes), else ``400``; none is
  larger than 60 MiB (``413``);
* the URL is pre-authenticated: a request that carries ``Authorization`` gets ``401``;
* ``GET`` on the URL reports ``expirationDateTime`` and ``nextExpectedRanges``; ``DELETE`` drops
  the session;
* ``202`` for a partial fragment, ``201`` with the drive item once the last byte arrived.

An empty file cannot go through an upload session (there is no byte range to send), in Graph as
here: a ``Content-Range`` without bytes is refused and the callback then finds no item. Cloudreve's
own server writes small files with Graph's simple upload instead, which :meth:`put_blob` models
(``PUT /file/content`` on a OneDrive policy).
"""

from __future__ import annotations

import mimetypes
import re
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import anyio
import structlog
from aiohttp import web

from emulator.policies._common import (
    BlobDir,
    BlobLinks,
    BodyIncomplete,
    Clock,
    LinkedDiskBlobs,
    scratch_dir,
    stream_body_to_file,
)
from emulator.policy import CallbackFailed, SessionCredentials, UploadHost, UploadSessionInfo

log = structlog.get_logger()

FRAGMENT_UNIT = 327680
"""Graph: non-final fragments must be a multiple of 320 KiB."""
MAX_FRAGMENT = 60 << 20
"""Graph: one fragment carries at most 60 MiB."""
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def graph_error(status: int, code: str, message: str, inner: str = "") -> web.Response:
    """Return a Graph error body: ``{"error": {"code", "message", "innererror"}}``."""
    error: dict[str, object] = {"code": code, "message": message}
    error["innererror"] = {
        **({"code": inner} if inner else {}),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
        "request-id": str(uuid.uuid4()),
    }

    return web.json_response({"error": error}, status=status)


@dataclass(slots=True)
class _UploadSession:
    """One Graph upload session: where the bytes so far are and which byte comes next."""

    token: str
    session_id: str
    key: str
    name: str
    size: int
    expires: int
    mime: str
    partial: Path
    next_expected: int = 0

    def status(self) -> dict[str, object]:
        expiry = time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime(self.expires))
        return {"expirationDateTime": expiry, "nextExpectedRanges": [f"{self.next_expected}-"]}


class OneDriveDriver(LinkedDiskBlobs):
    """A :class:`~emulator.policy.PolicyDriver` for ``onedrive``."""

    type = "onedrive"
    DEFAULT_CHUNK: ClassVar[int] = 50 << 20

    def __init__(self, host: UploadHost, data_dir: Path, clock: Clock) -> None:
        self._host = host
        self._clock = clock
        root = scratch_dir(data_dir, self.type)
        self.blobs = BlobDir(root / "blobs")
        self._partials = root / "sessions"
        self._partials.mkdir(exist_ok=True)
        self._sessions: dict[str, _UploadSession] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._links = BlobLinks(self.type, self.blobs, clock, graph_error)

    def default_chunk_size(self) -> int:
        """Return 50 MiB, the Cloudreve default for OneDrive (a multiple of 320 KiB)."""
        return self.DEFAULT_CHUNK

    async def open_session(self, session: UploadSessionInfo) -> SessionCredentials:
        """Create a Graph upload session and hand out its URL."""
        token = secrets.token_urlsafe(24)
        name = session.uri.rstrip("/").rpartition("/")[2]
        mime = session.mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        partial = self._partials / token
        partial.touch()
        self._sessions[token] = _UploadSession(
            token, session.session_id, session.storage_key, name, session.size,
            session.expires, mime, partial,
        )  # fmt: skip
        url = f"{self._host.site_url}/storage/onedrive/upload/{token}"
        log.debug("storage_session_opened", policy=self.type, size_bytes=session.size)

        return SessionCredentials(upload_urls=(url,))

    async def abort_session(self, session: UploadSessionInfo) -> None:
        """Delete the Graph upload session opened for ``session``."""
        for token, graph in list(self._sessions.items()):
            if graph.session_id == session.session_id:
                await self._drop(token)

    async def verify_callback(self, session: UploadSessionInfo, request: web.Request) -> int:
        """Return the size of the drive item the upload produced.

        Raises:
            CallbackFailed: no item yet (the last fragment has not arrived), as Cloudreve's
                metadata lookup fails (-1).
        """
        size = self.blobs.size(session.storage_key)
        if size is None:
            raise CallbackFailed(-1, "failed to get uploaded file size: itemNotFound")

        return size

    def routes(self) -> Iterable[web.AbstractRouteDef]:
        """Serve upload sessions and download links under ``/storage/onedrive/``."""
        path = "/storage/onedrive/upload/{token}"
        return [
            web.put(path, self._put),
            web.get(path, self._status, allow_head=False),
            web.delete(path, self._delete),
            web.route("*", path, _method_not_allowed),
            self._links.route(),
        ]

    # -- upload URL ---------------------------------------------------------------------------

    def _live(self, token: str) -> _UploadSession | None:
        graph = self._sessions.get(token)
        if graph is None or self._clock() > graph.expires:
            return None
        return graph

    async def _drop(self, token: str) -> None:
        graph = self._sessions.pop(token, None)
        self._locks.pop(token, None)
        if graph is not None:
            await anyio.Path(graph.partial).unlink(missing_ok=True)

    async def _status(self, request: web.Request) -> web.Response:
        graph = self._live(request.match_info["token"])
        if graph is None:
            return graph_error(404, "itemNotFound", "The upload session was not found.")
        return web.json_response(graph.status())

    async def _delete(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if self._live(token) is None:
            return graph_error(404, "itemNotFound", "The upload session was not found.")
        await self._drop(token)
        return web.Response(status=204)

    async def _put(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if self._live(token) is None:
            await self._drop(token)
            return graph_error(404, "itemNotFound", "The upload session was not found.")
        if "Authorization" in request.headers:
            return graph_error(
                401, "unauthenticated", "Upload URLs are pre-authenticated; omit Authorization."
            )
        lock = self._locks.setdefault(token, anyio.Lock())
        async with lock:
            graph = self._live(token)
            if graph is None:
                return graph_error(404, "itemNotFound", "The upload session was not found.")
            return await self._accept_fragment(request, graph)

    def _check_fragment(self, request: web.Request, graph: _UploadSession) -> web.Response | int:
        """Return the fragment's start byte, or Graph's refusal."""
        match = _RANGE.fullmatch(request.headers.get("Content-Range", "").strip())
        if match is None:
            return graph_error(
                400, "invalidRequest", "Content-Range is missing or malformed.", "invalidRange"
            )
        start, end, total = (int(g) for g in match.groups())
        if total != graph.size or end < start or end >= total:
            return graph_error(
                400, "invalidRequest", "The Content-Range does not fit the file.", "invalidRange"
            )
        length = end - start + 1
        if request.content_length is None:
            return graph_error(411, "lengthRequired", "Content-Length is required.")
        if request.content_length != length:
            return graph_error(
                400,
                "invalidRequest",
                "The Content-Range header length does not match the provided number of bytes.",
            )
        if start != graph.next_expected:
            inner = "fragmentOverlap" if start < graph.next_expected else "invalidRange"
            return graph_error(
                416, "invalidRange", "The uploaded fragment overlaps or skips bytes.", inner
            )
        if length > MAX_FRAGMENT:
            return graph_error(413, "requestTooLarge", "Fragments are limited to 60 MiB.")
        if end + 1 < graph.size and length % FRAGMENT_UNIT:
            return graph_error(
                400,
                "invalidRequest",
                "Non-final fragments must be a multiple of 320 KiB (327680 bytes).",
                "invalidRange",
            )

        return start

    async def _accept_fragment(self, request: web.Request, graph: _UploadSession) -> web.Response:
        checked = self._check_fragment(request, graph)
        if isinstance(checked, web.Response):
            return checked
        try:
            await stream_body_to_file(request, graph.partial, append=True)
        except BodyIncomplete:
            # Keep only whole fragments, as Graph does with an interrupted request.
            await anyio.to_thread.run_sync(_truncate, graph.partial, graph.next_expected)
            raise
        graph.next_expected += request.content_length or 0
        if graph.next_expected < graph.size:
            return web.json_response(graph.status(), status=202)

        if self.blobs.size(graph.key) is not None:
            return graph_error(409, "nameAlreadyExists", "An item with this name already exists.")
        await self.blobs.commit(graph.key, graph.partial, graph.mime)
        await self._drop(graph.token)
        log.debug("storage_upload_completed", policy=self.type, size_bytes=graph.size)

        return web.json_response(self._item(graph), status=201)

    def _item(self, graph: _UploadSession) -> dict[str, object]:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock()))
        return {
            "id": uuid.uuid5(uuid.NAMESPACE_URL, graph.key).hex.upper(),
            "name": graph.name,
            "size": graph.size,
            "createdDateTime": now,
            "lastModifiedDateTime": now,
            "file": {"mimeType": graph.mime},
        }


def _truncate(path: Path, size: int) -> None:
    with path.open("r+b") as f:
        f.truncate(size)


async def _method_not_allowed(request: web.Request) -> web.Response:
    return graph_error(405, "invalidRequest", f"{request.method} is not supported on upload URLs.")
