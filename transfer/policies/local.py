"""Chunk writer for ``local`` policies and every policy with ``relay: true`` (contract 6.4).

Chunks go to ``POST /api/v4/file/upload/{session_id}/{index}`` with the access token; the server
completes the upload itself once every index is in, so :meth:`LocalWriter.finish` does nothing.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from transfer.backend import PartResult, WriterContext

__all__ = ["ChunkApi", "LocalWriter"]


@runtime_checkable
class ChunkApi(Protocol):
    """The Cloudreve call a local writer needs (implemented by ``DriveClient``)."""

    async def upload_chunk(self, session_id: str, index: int, data: bytes) -> None:
        """Send chunk ``index`` of a session; raises a ``transfer.errors`` error on failure."""
        ...


class LocalWriter:
    """Sends chunks to Cloudreve itself; the server finishes the file."""

    policy_type = "local"
    single_chunk = False

    def __init__(self, ctx: WriterContext) -> None:
        if not isinstance(ctx.api, ChunkApi):
            raise TypeError("LocalWriter needs an api with upload_chunk (a DriveClient)")
        self._api: ChunkApi = ctx.api
        self._session_id = ctx.session.session_id

    @property
    def max_concurrency(self) -> int | None:
        """None: the policy's ``chunk_concurrency`` applies."""
        return None

    async def write_chunk(self, index: int, offset: int, data: bytes) -> PartResult:
        """Send one chunk; the offset is implied by the index and the session's chunk size."""
        await self._api.upload_chunk(self._session_id, index, data)
        return PartResult(index=index)

    async def finish(self, parts: list[PartResult]) -> None:
        """Nothing to do: the chunk that completes the set finishes the upload on the server."""
