"""Chunk writer for ``remote`` (slave node) policies (contract 6.4, "Remote specifics").

Chunks go to ``POST {upload_urls[0]}?chunk={index}`` with the session's ``credential`` verbatim
as ``Authorization``. The credential is an HMAC over the URL path and every ``X-Cr-*`` header, so
no ``X-Cr-*`` header is ever sent, and no Cloudreve token either (the storage session carries
none). The slave calls the master back once all chunks are in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from transfer.backend import PartResult, WriterContext
from transfer.errors import ApiError

__all__ = ["RemoteWriter", "StorageApi"]


@runtime_checkable
class StorageApi(Protocol):
    """Token-free exchanges with storage hosts, under the remote's pacer (``DriveClient``)."""

    async def storage_call(
        self, method: str, url: str, *, headers: Mapping[str, str], data: bytes, what: str
    ) -> object:
        """Send one request to a storage URL and return the decoded envelope ``data``."""
        ...


class RemoteWriter:
    """Sends chunks to a slave node; the slave completes the upload through the master."""

    policy_type = "remote"
    single_chunk = False

    def __init__(self, ctx: WriterContext) -> None:
        if not isinstance(ctx.api, StorageApi):
            raise TypeError("RemoteWriter needs an api with storage_call (a DriveClient)")
        if not ctx.session.upload_urls:
            raise ApiError(200, 0, "malformed response: remote session without upload_urls")
        self._api: StorageApi = ctx.api
        self._url = ctx.session.upload_urls[0]
        self._credential = ctx.session.credential

    @property
    def max_concurrency(self) -> int | None:
        """None: the policy's ``chunk_concurrency`` applies."""
        return None

    async def write_chunk(self, index: int, offset: int, data: bytes) -> PartResult:
        """Send one chunk to the slave; its envelope is checked like any API answer."""
        separator = "&" if "?" in self._url else "?"
        headers = {"Authorization": self._credential, "Content-Type": "application/octet-stream"}
        await self._api.storage_call(
            "POST",
            f"{self._url}{separator}chunk={index}",
            headers=headers,
            data=data,
            what=f"remote chunk {index}",
        )
        return PartResult(index=index)

    async def finish(self, parts: list[PartResult]) -> None:
        """Nothing to do: the slave calls the master back after the last chunk."""
