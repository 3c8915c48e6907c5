"""Chunk writer for the ``upyun`` policy: Upyun's form upload (contract 6.3).

The whole file goes in ONE ``multipart/form-data`` POST to ``upload_urls[0]`` with the fields
``policy`` (= ``upload_policy``), ``authorization`` (= ``credential``), ``content-type`` (= the
session's ``mime_type``, when set) and ``file`` LAST, as Upyun's form API requires. The writer
says ``single_chunk = True`` and ``max_concurrency`` 1, so the upload driver hands it the whole
file as chunk 0 (the server also answers ``chunk_size: 0`` for upyun). Upyun calls Cloudreve back
itself; ``finish`` sends nothing.

The file is held in memory for the one request: Upyun's form API has no chunked variant in
Cloudreve, so memory grows with the file's size for this policy.
"""

from __future__ import annotations

import io
from urllib.parse import unquote

import aiohttp
import structlog

from transfer.backend import PartResult, WriterContext
from transfer.errors import UnsupportedFeature
from transfer.policies._multipart import check_parts
from transfer.policies._storage import BadUploadSession, http_of, send, storage_error

__all__ = ["UpyunWriter"]

_log = structlog.get_logger()


class UpyunWriter:
    """Upyun form upload: the whole file in one POST; Upyun calls Cloudreve back."""

    policy_type = "upyun"
    single_chunk = True

    def __init__(self, ctx: WriterContext) -> None:
        session = ctx.session
        if session.policy_type != self.policy_type:
            raise BadUploadSession(f"UpyunWriter cannot write a {session.policy_type!r} session")
        if not session.upload_urls or not session.credential or not session.upload_policy:
            raise BadUploadSession(
                f"upyun session {session.session_id} lacks URL, credential or policy"
            )
        self._ctx = ctx
        self._http = http_of(ctx)

    @property
    def max_concurrency(self) -> int | None:
        """1: there is only one request."""
        return 1

    async def write_chunk(self, index: int, offset: int, data: bytes) -> PartResult:
        """POST the whole file as the form's ``file`` field.

        Raises:
            UnsupportedFeature: the driver sent anything but the whole file as chunk 0.
            PartUrlExpired: the signature or policy expired.
            ServerError, RateLimited, NetworkError: retryable.
            StorageError: any other refusal (Upyun's ``{"code", "message"}``).
        """
        session = self._ctx.session
        if index != 0 or offset != 0 or len(data) != session.size:
            raise UnsupportedFeature(
                f"upyun takes the whole file in one request, got chunk {index} "
                f"({len(data)} of {session.size} bytes at {offset})"
            )
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("policy", session.upload_policy)
        form.add_field("authorization", session.credential)
        if session.mime_type:
            form.add_field("content-type", session.mime_type)
        form.add_field(
            "file",
            io.BytesIO(data),
            filename=_file_name(session.uri),
            content_type=session.mime_type or "application/octet-stream",
        )
        url = session.upload_urls[0]
        resp = await send(self._http, "POST", url, data=form)
        if resp.status != 200:
            raise storage_error(resp, "POST", url)
        _log.debug("chunk_uploaded", policy=self.policy_type, chunk=0, size_bytes=len(data))

        return PartResult(0)

    async def finish(self, parts: list[PartResult]) -> None:
        """Nothing to send: Upyun called Cloudreve back when it stored the file.

        Raises:
            UploadFailed: the file was not sent.
        """
        session = self._ctx.session
        check_parts(parts, 1, session.uri, session.size, need_etag=False)


def _file_name(uri: str) -> str:
    name = unquote(uri.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0])
    return name or "file"
