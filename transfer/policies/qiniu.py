"""Chunk writer for the ``qiniu`` policy: Qiniu's multipart upload v2 (contract 6.3).

Chunk ``i`` is ``PUT {upload_urls[0]}/{i+1}`` with ``Authorization: UpToken {credential}``
(a Qiniu upload token the server issued for this object; never a Cloudreve token); Qiniu answers
``{"etag", "md5"}`` and the writer checks the md5 against the bytes sent. ``finish`` is
``POST {upload_urls[0]}`` with ``{"parts": [{"etag", "partNumber"}], "mimeType"}`` and the same
Authorization; Qiniu then calls Cloudreve back itself, so the client makes no callback.

Qiniu's errors are ``{"error": "..."}`` with the meaning in the HTTP status: 612 (no such upload:
expired, aborted or completed) asks for a new session, 599 and 5xx are retryable, 579 (the
storage's callback to Cloudreve failed) and the other 4xx are not.
"""

from __future__ import annotations

import hashlib
import json

import structlog

from transfer.backend import PartResult, WriterContext
from transfer.errors import ServerError
from transfer.policies._multipart import check_parts
from transfer.policies._storage import (
    BadUploadSession,
    StorageError,
    http_of,
    redact,
    send,
    storage_error,
)

__all__ = ["QiniuWriter"]

_log = structlog.get_logger()


class QiniuWriter:
    """Qiniu multipart upload v2 with an UpToken; Qiniu calls Cloudreve back."""

    policy_type = "qiniu"
    single_chunk = False

    def __init__(self, ctx: WriterContext) -> None:
        session = ctx.session
        if session.policy_type != self.policy_type:
            raise BadUploadSession(f"QiniuWriter cannot write a {session.policy_type!r} session")
        if not session.upload_urls or not session.credential:
            raise BadUploadSession(f"qiniu session {session.session_id} lacks URL or credential")
        self._ctx = ctx
        self._http = http_of(ctx)
        self._base = session.upload_urls[0].rstrip("/")
        self._auth = f"UpToken {session.credential}"

    @property
    def max_concurrency(self) -> int | None:
        """None: parts are independent, the session's ``chunk_concurrency`` applies."""
        return None

    async def write_chunk(self, index: int, offset: int, data: bytes) -> PartResult:
        """PUT part ``index + 1`` and return Qiniu's etag for it.

        Raises:
            PartUrlExpired: Qiniu no longer knows the upload (612) or the token expired.
            ServerError: retryable failure, including an md5 that does not match the bytes sent.
            StorageError: any other refusal.
        """
        url = f"{self._base}/{index + 1}"
        headers = {
            "Authorization": self._auth,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(data)),
        }
        resp = await send(self._http, "PUT", url, data=data, headers=headers)
        if resp.status != 200:
            raise storage_error(resp, "PUT", url)
        answer = _json_object(resp.body, resp.status, url)
        etag, md5 = answer.get("etag"), answer.get("md5")
        if not isinstance(etag, str) or not etag:
            raise StorageError(
                resp.status, "part answer without etag", method="PUT", url=redact(url)
            )
        if (
            isinstance(md5, str)
            and md5
            and md5 != hashlib.md5(data, usedforsecurity=False).hexdigest()
        ):
            raise ServerError(resp.status, resp.status, "part md5 mismatch", "", "PUT", redact(url))
        _log.debug("chunk_uploaded", policy=self.policy_type, chunk=index, offset=offset)

        return PartResult(index, etag)

    async def finish(self, parts: list[PartResult]) -> None:
        """Complete the upload; Qiniu stores the object and calls Cloudreve back.

        Raises:
            UploadFailed: a part is missing.
            PartUrlExpired, ServerError, StorageError: as for :meth:`write_chunk`.
        """
        session = self._ctx.session
        count = max(1, -(-session.size // session.chunk_size)) if session.chunk_size > 0 else 1
        ordered = check_parts(parts, count, session.uri, session.chunk_size, need_etag=True)
        body: dict[str, object] = {
            "parts": [{"etag": p.etag, "partNumber": p.index + 1} for p in ordered]
        }
        if session.mime_type:
            body["mimeType"] = session.mime_type
        headers = {"Authorization": self._auth, "Content-Type": "application/json"}
        resp = await send(
            self._http, "POST", self._base, data=json.dumps(body).encode(), headers=headers
        )
        if resp.status != 200:
            raise storage_error(resp, "POST", self._base)
        _log.debug("multipart_completed", policy=self.policy_type, parts=len(ordered))


def _json_object(body: bytes, status: int, url: str) -> dict[str, object]:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise StorageError(status, "answer is not a JSON object", method="PUT", url=redact(url))
    return doc
