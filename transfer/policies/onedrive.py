"""Chunk writer for the ``onedrive`` policy: a Microsoft Graph upload session (contract 6.3, 6.5).

Every chunk is PUT to the session's single URL with
``Content-Range: bytes {start}-{end}/{size}``, strictly in order (``max_concurrency`` is 1).
Graph wants every fragment but the file's last to be a multiple of 320 KiB (327680 bytes). The
session's ``chunk_size`` normally is one; when it is not, the writer warns once up front, sends the
aligned part of each chunk and carries the remainder (less than 320 KiB) over to the next chunk.
A carried tail lives only in this writer: if the process stops before the next chunk, Graph lacks
bytes of an acknowledged chunk, the resumed upload finds that out from ``nextExpectedRanges`` and
asks for a new session.

A fragment Graph refuses as out of place (HTTP 416, ``fragmentOverlap``, ``invalidRange``) makes
the writer ask the URL for ``nextExpectedRanges`` and realign: bytes Graph already has are
skipped, a partly stored fragment is trimmed. Bytes missing *before* the chunk at hand cannot be
re-sent from it, so that case asks for a new session.

``finish`` is ``POST /callback/onedrive/{session_id}/{secret}`` through the Cloudreve API.

A 0-byte file cannot go through an upload session (Graph takes no empty range, the web client
refuses it, and the server's callback would find no object). The writer takes the server's
non-session path instead (case BR-06): it cancels the session (``DELETE /file/upload``, which
removes the placeholder and its lock) and stores the empty file with ``PUT /file/content``, where
the server writes to OneDrive itself; ``finish`` then has nothing to call back. This needs an api
with :class:`ContentApi`'s methods (``DriveClient`` has them); without them the writer raises
``UnsupportedFeature``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Protocol, cast, runtime_checkable

import structlog

from transfer.backend import PartResult, WriterContext
from transfer.errors import UnsupportedFeature, UploadFailed
from transfer.policies._storage import (
    BadUploadSession,
    PartUrlExpired,
    StorageError,
    StorageResponse,
    http_of,
    redact,
    send,
    storage_error,
)

__all__ = ["FRAGMENT_ALIGN", "ContentApi", "OneDriveWriter", "fragment_size"]

_log = structlog.get_logger()

FRAGMENT_ALIGN = 327680
"""Graph's fragment granularity: 320 KiB."""

_REALIGN_CODES = frozenset({"fragmentOverlap", "invalidRange", "InvalidRange"})
_MAX_REALIGN = 3


def fragment_size(requested: int) -> int:
    """Round ``requested`` down to a multiple of 320 KiB, never below 320 KiB.

    ``fragment_size(134217728) == 134021120``.
    """
    return max(FRAGMENT_ALIGN, requested - requested % FRAGMENT_ALIGN)


@runtime_checkable
class ContentApi(Protocol):
    """The Cloudreve calls the 0-byte path needs (implemented by ``DriveClient``)."""

    async def delete_upload_session(self, session_id: str, uri: str) -> None:
        """``DELETE /file/upload``: cancel a session and remove its placeholder."""
        ...

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
        """Call an authenticated API route and return the envelope's ``data``."""
        ...


class _RangeRejected(Exception):
    """Graph refused a fragment as out of place; carries its answer."""

    def __init__(self, resp: StorageResponse) -> None:
        super().__init__(resp.status)
        self.resp = resp


class OneDriveWriter:
    """Sends fragments to a Graph upload session in order, realigning on overlap."""

    policy_type = "onedrive"
    single_chunk = False

    def __init__(self, ctx: WriterContext) -> None:
        session = ctx.session
        if session.policy_type != self.policy_type:
            raise BadUploadSession(f"OneDriveWriter cannot write a {session.policy_type!r} session")
        if not session.upload_urls:
            raise BadUploadSession(f"onedrive session {session.session_id} has no upload URL")
        self._ctx = ctx
        self._http = http_of(ctx)
        self._url = session.upload_urls[0]
        self._size = session.size
        self._fragment = fragment_size(session.chunk_size) if session.chunk_size > 0 else 0
        # Bytes of the previous chunk not sent yet (misaligned chunk size), and their offset.
        self._carry = b""
        self._carry_offset = 0
        if session.chunk_size > 0 and session.chunk_size % FRAGMENT_ALIGN:
            _log.warning(
                "onedrive_chunk_size_misaligned",
                chunk_size=session.chunk_size,
                fragment_size=self._fragment,
                session_id=session.session_id,
            )

    @property
    def max_concurrency(self) -> int | None:
        """1: Graph takes the ranges of one upload session strictly in order."""
        return 1

    async def write_chunk(self, index: int, offset: int, data: bytes) -> PartResult:
        """Send chunk ``index`` (bytes ``offset``..) as one or more aligned fragments.

        An empty file is stored through ``PUT /file/content`` (see the module docstring).

        Raises:
            UnsupportedFeature: the file is empty and the api cannot store it without a session.
            PartUrlExpired: the upload session is gone, or Graph lacks bytes before this chunk.
            ServerError, RateLimited, NetworkError: retryable; the chunk can be sent again.
            StorageError: any other refusal.
        """
        if self._size == 0:
            await self._store_empty()
            return PartResult(index)
        if self._carry and self._carry_offset + len(self._carry) == offset:
            start, buffer = self._carry_offset, self._carry + data
        else:
            start, buffer = offset, data
        # The carry is replaced only once the buffer went out, so a retry of this chunk with the
        # same writer still starts where Graph expects it.
        sent_to = await self._send_buffer(start, buffer)
        self._carry, self._carry_offset = buffer[sent_to - start :], sent_to
        _log.debug("chunk_uploaded", policy=self.policy_type, chunk=index, offset=offset)

        return PartResult(index)

    async def finish(self, parts: list[PartResult]) -> None:
        """Call Cloudreve back (``POST /callback/onedrive/...``), which checks the stored size.

        Raises:
            UploadFailed: bytes of the last chunk are still held back (the driver did not send
                the final chunk).
            ApiError: the callback failed; the upload is not done.
        """
        if self._carry:
            raise UploadFailed(
                self._ctx.session.uri,
                len(parts) - 1,
                self._carry_offset,
                f"{len(self._carry)} bytes never sent before finish",
            )
        if self._size == 0:
            return
        session = self._ctx.session
        await self._ctx.api.upload_callback(
            self.policy_type, session.session_id, session.callback_secret
        )

    async def _store_empty(self) -> None:
        """Store a 0-byte file through Cloudreve's non-session path (see the module docstring)."""
        api = self._ctx.api
        if not isinstance(api, ContentApi):
            raise UnsupportedFeature(
                "BR-06: a 0-byte file cannot use a OneDrive upload session and this api has no "
                "PUT /file/content"
            )
        session = self._ctx.session
        await api.delete_upload_session(session.session_id, session.uri)
        await api.call(
            "PUT",
            "/file/content",
            params={"uri": session.uri},
            data=b"",
            headers={"Content-Length": "0"},
            what="empty file content",
        )
        _log.debug("onedrive_empty_file_stored", session_id=session.session_id)

    async def _send_buffer(self, start: int, buffer: bytes) -> int:
        """Send ``buffer`` (file bytes from ``start``); return the offset sent up to.

        Only the file's final fragment may be shorter than a multiple of 320 KiB; a shorter
        tail is left unsent for the next chunk to carry.
        """
        end = start + len(buffer)
        position = start
        realigned = 0
        while position < end:
            length = self._next_length(position, end)
            if length == 0:
                break
            piece = buffer[position - start : position - start + length]
            try:
                await self._put(position, piece)
            except _RangeRejected as rejected:
                realigned += 1
                if realigned > _MAX_REALIGN:
                    raise PartUrlExpired(
                        416, 416, "fragments keep overlapping", "", "PUT", redact(self._url)
                    ) from None
                expected = await self._next_expected()
                if expected < start:
                    raise PartUrlExpired(
                        416,
                        416,
                        f"Graph expects byte {expected}, before this chunk's {start}",
                        "",
                        "PUT",
                        redact(self._url),
                    ) from None
                if expected == position:
                    # Refused where Graph itself expects the bytes: not an overlap at all.
                    raise storage_error(rejected.resp, "PUT", self._url) from None
                _log.info("onedrive_fragment_realigned", offset=position, expected=expected)
                position = min(expected, end)
                continue
            position += length

        return position

    def _next_length(self, position: int, end: int) -> int:
        remaining = end - position
        if end == self._size:
            # The file's last bytes: any length is fine for the final fragment.
            return min(remaining, self._fragment or remaining)
        if self._fragment and remaining >= self._fragment:
            return self._fragment
        return remaining - remaining % FRAGMENT_ALIGN

    async def _put(self, start: int, piece: bytes) -> None:
        end = start + len(piece) - 1
        headers = {
            "Content-Range": f"bytes {start}-{end}/{self._size}",
            "Content-Length": str(len(piece)),
        }
        resp = await send(self._http, "PUT", self._url, data=piece, headers=headers)
        if resp.status in (200, 201, 202):
            return
        if resp.status == 416 or _graph_code(resp) in _REALIGN_CODES:
            raise _RangeRejected(resp)
        raise storage_error(resp, "PUT", self._url)

    async def _next_expected(self) -> int:
        """Ask the upload session where Graph wants the next byte (end of file when complete)."""
        resp = await send(self._http, "GET", self._url)
        if resp.status != 200:
            raise storage_error(resp, "GET", self._url)
        try:
            doc = json.loads(resp.body)
            ranges = cast(list[str], doc.get("nextExpectedRanges") or [])
            if not ranges:
                return self._size
            return int(ranges[0].split("-", 1)[0])
        except (ValueError, AttributeError, TypeError) as exc:
            raise StorageError(
                resp.status, "unreadable upload session status", method="GET", url=redact(self._url)
            ) from exc


def _graph_code(resp: StorageResponse) -> str:
    """Return Graph's innermost error code from an error body, or ``""``."""
    try:
        doc = json.loads(resp.body)
    except ValueError:
        return ""
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return ""
    inner = error.get("innererror") or error.get("innerError")
    if isinstance(inner, dict) and inner.get("code"):
        return str(inner["code"])
    return str(error.get("code", ""))
