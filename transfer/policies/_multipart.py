"""The S3-style multipart flow shared by the s3, ks3, cos, oss and obs writers (contract 6.3).

Every one of them PUTs chunk ``i`` to the presigned ``upload_urls[i]`` with
``Content-Type: application/octet-stream`` and the exact length, keeps the ``ETag`` header as
received (quotes included), then POSTs ``completeURL``. They differ only in the complete request
and in who calls Cloudreve back; subclasses set these class attributes:

* ``complete_content_type``: the ``Content-Type`` of the complete POST. The server presigns it
  into the URL for ks3, oss and obs (``application/octet-stream``); s3 and cos do not sign it,
  and moto refuses a complete without an XML or binary type, so they send ``application/xml``.
* ``complete_with_parts``: send the ``<CompleteMultipartUpload>`` XML (oss sends an empty body
  and lets ``x-oss-complete-all`` pick the parts).
* ``complete_headers``: extra headers the server signed into the complete URL.
* ``client_callback``: call ``/callback/{type}/...`` after the complete (s3, ks3, cos); oss and
  obs call Cloudreve back from the storage.
* ``min_part_size``: the storage's smallest part but the last (0 = not known); a session that
  cuts a file into smaller parts is warned about before the first part is sent, because the
  storage will refuse the complete (S3 ``EntityTooSmall``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import ClassVar
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import structlog

from transfer.backend import PartResult, WriterContext
from transfer.errors import ApiError, UploadFailed
from transfer.policies._storage import (
    BadUploadSession,
    PartUrlExpired,
    StorageError,
    StorageResponse,
    http_of,
    presigned_expiry,
    redact,
    send,
    storage_error,
)

__all__ = ["S3_MIN_PART", "MultipartWriter", "check_parts", "complete_xml"]

_log = structlog.get_logger()

S3_MIN_PART = 5 << 20
"""S3's smallest part but the last (5 MiB); KS3 has the same limit."""


def complete_xml(parts: Sequence[PartResult]) -> bytes:
    """Return the ``CompleteMultipartUpload`` body for ``parts`` (part number = index + 1)."""
    items = "".join(
        f"<Part><PartNumber>{p.index + 1}</PartNumber><ETag>{escape(p.etag)}</ETag></Part>"
        for p in sorted(parts, key=lambda p: p.index)
    )

    return f"<CompleteMultipartUpload>{items}</CompleteMultipartUpload>".encode()


def check_parts(
    parts: Sequence[PartResult], count: int, uri: str, chunk_size: int, *, need_etag: bool
) -> list[PartResult]:
    """Return ``parts`` sorted by index after checking it holds exactly chunks ``0..count-1``.

    Raises:
        UploadFailed: a chunk is missing, repeated, out of range or has no ETag (not retryable:
            the caller's bookkeeping is wrong, sending the complete would corrupt the object).
    """
    ordered = sorted(parts, key=lambda p: p.index)
    seen = [p.index for p in ordered]
    if seen != list(range(count)):
        missing = sorted(set(range(count)) - set(seen)) or [count]
        first = missing[0]
        raise UploadFailed(
            uri, first, first * chunk_size, f"parts {seen} do not cover 0..{count - 1}"
        )
    for part in ordered:
        if need_etag and not part.etag:
            raise UploadFailed(uri, part.index, part.index * chunk_size, "part has no ETag")

    return ordered


class MultipartWriter:
    """Chunk writer for presigned multipart uploads; subclasses pick the complete request."""

    policy_type: str = ""
    single_chunk: bool = False
    complete_content_type: ClassVar[str] = "application/xml"
    complete_with_parts: ClassVar[bool] = True
    complete_headers: ClassVar[Mapping[str, str]] = {}
    client_callback: ClassVar[bool] = True
    min_part_size: ClassVar[int] = 0

    def __init__(self, ctx: WriterContext) -> None:
        session = ctx.session
        if session.policy_type != self.policy_type:
            raise BadUploadSession(
                f"{type(self).__name__} cannot write a {session.policy_type!r} session"
            )
        if not session.upload_urls:
            raise BadUploadSession(f"{self.policy_type} session {session.session_id} has no URLs")
        if not session.complete_url:
            raise BadUploadSession(
                f"{self.policy_type} session {session.session_id} has no completeURL"
            )
        self._ctx = ctx
        self._http = http_of(ctx)
        self._completed = False
        self._upload_gone: PartUrlExpired | None = None
        if not session.acked:
            self._warn_if_parts_too_small()

    @property
    def max_concurrency(self) -> int | None:
        """None: parts are independent, the session's ``chunk_concurrency`` applies."""
        return None

    def _warn_if_parts_too_small(self) -> None:
        """Warn when the storage will refuse to complete this session for its part size."""
        session = self._ctx.session
        chunk_size = session.chunk_size
        one_part = chunk_size == 0 or session.size <= chunk_size
        if one_part or chunk_size >= self.min_part_size:
            return
        _log.warning(
            "upload_part_too_small",
            policy=self.policy_type,
            uri=session.uri,
            session_id=session.session_id,
            part_bytes=chunk_size,
            min_part_bytes=self.min_part_size,
            parts=math.ceil(session.size / chunk_size),
        )

    async def write_chunk(self, index: int, offset: int, data: bytes) -> PartResult:
        """PUT chunk ``index`` to its presigned URL and return the part's ETag as received.

        Raises:
            PartUrlExpired: the URL's expiry has passed (checked first, nothing is sent) or the
                storage answered "Request has expired" / "NoSuchUpload".
            ServerError, RateLimited, NetworkError: retryable; only this part needs re-sending.
            StorageError: any other refusal (not retryable).
        """
        urls = self._ctx.session.upload_urls
        if not 0 <= index < len(urls):
            raise BadUploadSession(
                f"chunk {index} has no upload URL ({len(urls)} in session "
                f"{self._ctx.session.session_id})"
            )
        url = urls[index]
        self._check_fresh(url, "PUT")
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        resp = await send(self._http, "PUT", url, data=data, headers=headers)
        if resp.status != 200:
            raise storage_error(resp, "PUT", url)
        etag = resp.headers.get("ETag")
        if not etag:
            raise StorageError(
                resp.status, "part accepted without an ETag header", method="PUT", url=redact(url)
            )
        _log.debug(
            "chunk_uploaded",
            policy=self.policy_type,
            chunk=index,
            offset=offset,
            size_bytes=len(data),
        )

        return PartResult(index, etag)

    async def finish(self, parts: list[PartResult]) -> None:
        """Complete the multipart upload, then call Cloudreve back when the policy needs it.

        Safe to call again after a retryable failure: a complete that succeeded is not re-sent.
        A complete that finds the multipart upload gone (an earlier complete's answer was lost)
        goes on to the callback, which checks the stored object's size; if that fails too, the
        storage side is lost and :class:`PartUrlExpired` asks for a new session.

        Raises:
            UploadFailed: ``parts`` does not hold every chunk with its ETag.
            PartUrlExpired, ServerError, StorageError: as for :meth:`write_chunk`; also for an
                error document inside a 200 answer.
            ApiError: the Cloudreve callback failed (never reported as done).
        """
        session = self._ctx.session
        ordered = check_parts(
            parts,
            len(session.upload_urls),
            session.uri,
            session.chunk_size,
            need_etag=self.complete_with_parts,
        )
        if not self._completed:
            await self._complete(ordered)
            self._completed = True
        if not self.client_callback:
            return
        try:
            await self._ctx.api.upload_callback(
                self.policy_type, session.session_id, session.callback_secret
            )
        except ApiError as exc:
            if self._upload_gone is None or exc.retryable:
                raise
            # The complete found no multipart upload and the server has no whole object either:
            # the storage side is lost, only a new session can finish the file.
            raise self._upload_gone from exc

    async def _complete(self, parts: list[PartResult]) -> None:
        url = self._ctx.session.complete_url
        self._check_fresh(url, "POST")
        body = complete_xml(parts) if self.complete_with_parts else b""
        headers = {"Content-Type": self.complete_content_type, **self.complete_headers}
        resp = await send(self._http, "POST", url, data=body, headers=headers)
        if resp.status == 200:
            error = _error_in_body(resp, url)
            if error is None:
                _log.debug("multipart_completed", policy=self.policy_type, parts=len(parts))
                return
            raise error
        error = storage_error(resp, "POST", url)
        if self.client_callback and isinstance(error, PartUrlExpired) and resp.status == 404:
            # Workaround: an earlier complete (this process or a crashed one) may have succeeded
            # with its answer lost; S3 then says NoSuchUpload. The callback checks the stored
            # object's size, so it tells a completed upload from a lost one.
            _log.debug("multipart_complete_assumed", policy=self.policy_type)
            self._upload_gone = error
            return
        raise error

    def _check_fresh(self, url: str, method: str) -> None:
        expiry = presigned_expiry(url)
        if expiry is not None and self._ctx.clock() >= expiry:
            raise PartUrlExpired(
                403, 403, "presigned URL expired before sending", "", method, redact(url)
            )


def _error_in_body(resp: StorageResponse, url: str) -> ApiError | None:
    """Return the error an HTTP 200 complete answer hides in its body, or None.

    S3 may answer 200 and then stream an ``<Error>`` document when the complete fails late; with
    a storage callback (oss, obs) the body is Cloudreve's JSON envelope.
    """
    text = resp.body.decode("utf-8", errors="replace").strip()
    if text.startswith("<"):
        try:
            root = ElementTree.fromstring(text)
        except ElementTree.ParseError:
            return StorageError(200, "unparsable complete answer", method="POST", url=redact(url))
        if root.tag.rpartition("}")[2] == "Error":
            # Classify as the same document with a failure status would be.
            failed = StorageResponse(_status_for(root), resp.headers, resp.body)
            return storage_error(failed, "POST", url)
    elif text.startswith("{"):
        return _envelope_error(text, url)

    return None


def _status_for(root: ElementTree.Element) -> int:
    code = root.findtext("Code") or ""
    return 500 if code in ("InternalError", "ServiceUnavailable", "SlowDown") else 400


def _envelope_error(text: str, url: str) -> ApiError | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("code"), int) and doc["code"] != 0:
        return StorageError(
            200,
            f"storage callback to Cloudreve failed: code {doc['code']}: {doc.get('msg', '')}",
            storage_code=str(doc["code"]),
            method="POST",
            url=redact(url),
        )

    return None
