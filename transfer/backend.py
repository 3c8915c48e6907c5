"""Declarations shared by the transfer engine and its callers; no logic.

Three seams live here:

* :class:`RemoteEntry` is what a listing of a drive yields to the planner in ``jobs``.
* :class:`UploadJournal` is how the upload driver persists a session and every acknowledged
  chunk, so that a new process can resume and re-send only the missing chunks. ``jobs.state``
  implements it on SQLite; tests may use :class:`MemoryJournal`-like fakes.
* :class:`ChunkWriter` is one storage policy's way of sending chunks and finishing an upload
  (``transfer/policies/``). The upload driver picks a writer by ``policy_type`` and never knows
  which storage it talks to.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """One file or folder of a drive listing.

    ``path`` is the decoded path below the drive root, ``/``-separated and starting with ``/``
    (``/photos/a b#1.jpg``); ``uri`` is the server's ``cloudreve://`` form.
    """

    path: str
    name: str
    is_dir: bool
    size: int
    updated_at: datetime
    id: str
    uri: str
    primary_entity: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def uploading(self) -> bool:
        """True for an unfinished upload placeholder (``sys:upload_session_id`` is set)."""
        return "sys:upload_session_id" in self.metadata


@dataclass(frozen=True, slots=True)
class SavedUpload:
    """An upload session as persisted between processes (contract 6.6 guidance).

    ``acked`` maps a chunk index to what the storage answered for it: the part ETag for
    S3-like policies, ``""`` where the policy has none.
    """

    session_id: str
    uri: str
    size: int
    chunk_size: int
    expires: int
    policy_type: str
    callback_secret: str
    upload_id: str = ""
    upload_urls: tuple[str, ...] = ()
    credential: str = ""
    complete_url: str = ""
    mime_type: str = ""
    upload_policy: str = ""
    acked: Mapping[int, str] = field(default_factory=dict)
    source: str = ""
    """Fingerprint of the local content the session was opened for (size and mtime in ns).

    A resume whose source no longer matches cancels the session and starts over: chunks
    acknowledged for other content are never combined with new bytes.
    """


class UploadJournal(Protocol):
    """Durable record of open upload sessions, keyed by a caller-chosen item key."""

    async def load(self, key: str) -> SavedUpload | None:
        """Return the session saved for ``key`` with its acknowledged chunks, or None."""
        ...

    async def session_opened(self, key: str, session: SavedUpload) -> None:
        """Record a new session for ``key``, replacing any earlier one and its chunks."""
        ...

    async def chunk_acked(self, key: str, index: int, etag: str) -> None:
        """Record that chunk ``index`` of the session for ``key`` was accepted."""
        ...

    async def session_closed(self, key: str) -> None:
        """Forget the session for ``key`` (completed, cancelled or deleted)."""
        ...


@dataclass(frozen=True, slots=True)
class PartResult:
    """What one accepted chunk returned: its index and the storage's ETag (or ``""``)."""

    index: int
    etag: str = ""


class ChunkWriter(Protocol):
    """Sends the chunks of one upload session to one storage policy and finishes it."""

    policy_type: str

    single_chunk: bool
    """True when the storage takes the whole file in one request (upyun's form upload).

    The upload driver then sends exactly one chunk, index 0 at offset 0, holding all ``size``
    bytes, whatever the session's ``chunk_size`` says. False for every chunked policy.
    """

    @property
    def max_concurrency(self) -> int | None:
        """Chunks this policy accepts in parallel; None means the session's own setting."""
        ...

    async def write_chunk(self, index: int, offset: int, data: bytes) -> PartResult:
        """Send one chunk; raise a ``transfer.errors`` error on failure."""
        ...

    async def finish(self, parts: list[PartResult]) -> None:
        """Complete the upload once every chunk is in (complete XML, callback, nothing)."""
        ...


class CallbackApi(Protocol):
    """The Cloudreve calls a storage writer needs besides the storage itself."""

    async def upload_callback(self, policy_type: str, session_id: str, secret: str) -> None:
        """Call ``/callback/{policy_type}/{session_id}/{secret}`` with the policy's method.

        GET for s3, ks3 and cos; POST for onedrive (contract 6.3). Raises on a non-zero code.
        """
        ...


@dataclass(frozen=True, slots=True)
class WriterContext:
    """Everything a :class:`ChunkWriter` is built from.

    ``storage_http`` is an aiohttp ``ClientSession`` that carries no Cloudreve token and no
    cookies: presigned storage URLs must never see our credentials. It is typed loosely here to
    keep this module free of aiohttp; writers annotate it as ``aiohttp.ClientSession``.
    """

    session: SavedUpload
    storage_http: object
    api: CallbackApi
    clock: Callable[[], float] = time.time
    """Server-adjusted unix time in seconds; writers compare it with presigned URL expiries."""
