"""The chunked upload driver (contract 6): open or resume a session, send chunks, verify.

The driver cuts the file at exactly the session's ``chunk_size`` and sends the chunks through
the policy's :class:`~transfer.backend.ChunkWriter`, up to the policy's ``chunk_concurrency`` at
once (strictly in order when that is 1). Chunks are read from disk at their offset, so memory is
bounded by concurrency x chunk size. Every opened session and every accepted chunk is recorded in
the :class:`~transfer.backend.UploadJournal`, so a new process re-sends only the missing chunks.

An expired session (by ``expires`` against server time, or ``40011`` on a resumed session) is
cancelled and the file starts again from chunk 0 in a new session. The driver never decides
*whether* to upload.
"""

from __future__ import annotations

import math
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio
import structlog

from transfer.accounting import BandwidthLimiter
from transfer.api import UploadSession
from transfer.backend import PartResult, RemoteEntry, SavedUpload, UploadJournal, WriterContext
from transfer.client import DriveClient
from transfer.config import TransferConfig
from transfer.errors import (
    ApiError,
    FerryError,
    IntegrityError,
    LockConflict,
    NotFound,
    ObjectExists,
    SessionExpired,
    SourceChanged,
    UnsupportedFeature,
    UploadFailed,
)
from transfer.names import nfc
from transfer.policies import make_writer
from transfer.uris import join_remote, to_uri

__all__ = ["ChunkPlan", "Uploader", "chunk_plan", "version_tuple"]

log = structlog.get_logger()

_ORDERED_COMPLETION = (4, 18, 0)
_MAX_RESTARTS = 2
# A session this close to its expiry is not worth another chunk.
_EXPIRY_MARGIN_S = 5.0
# The fingerprint of a local file that is no longer there.
_MISSING = "missing"

_WriteFn = Callable[[int, int, bytes], Awaitable[PartResult]]


def version_tuple(version: str) -> tuple[int, ...]:
    """Parse ``"4.18.0"`` / ``"4.14.0-pro"`` into ``(4, 18, 0)``; unknown parts count as 0."""
    numbers: list[int] = []
    for part in version.split("-", 1)[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits) if digits else 0)
    return tuple(numbers)


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """How a file of ``size`` bytes is cut: ``count`` chunks of ``chunk_size`` (last shorter)."""

    size: int
    chunk_size: int
    count: int

    def offset(self, index: int) -> int:
        """Byte offset of chunk ``index``."""
        return index * self.chunk_size

    def length(self, index: int) -> int:
        """Byte length of chunk ``index``."""
        if self.count == 1:
            return self.size
        return min(self.chunk_size, self.size - self.offset(index))


def chunk_plan(size: int, chunk_size: int, *, single: bool = False) -> ChunkPlan:
    """Cut ``size`` bytes per contract 6.3: ``max(1, ceil(size / chunk_size))`` chunks.

    ``chunk_size`` 0 (or ``single``) means one request with the whole file; an empty file is one
    zero-length chunk.
    """
    if size < 0 or chunk_size < 0:
        raise ValueError("size and chunk_size must not be negative")
    if chunk_size == 0 or single or size == 0:
        return ChunkPlan(size=size, chunk_size=max(size, chunk_size), count=1)

    return ChunkPlan(size=size, chunk_size=chunk_size, count=max(1, math.ceil(size / chunk_size)))


@dataclass(frozen=True, slots=True)
class _Target:
    """What one upload call is about: the local file, where it goes, and its journal entry."""

    local: Path
    path: str
    uri: str
    size: int
    mtime_ms: int
    overwrite: bool
    journal: UploadJournal
    key: str
    source: str
    """Fingerprint of the local content (size and mtime in ns); see ``SavedUpload.source``."""
    resumed: Callable[[int], None] | None = None
    """Told how many bytes a resumed session already holds."""


@dataclass(slots=True)
class _Run:
    """One attempt at sending the chunks of one session."""

    local: Path
    key: str
    journal: UploadJournal
    saved: SavedUpload
    source: str
    plan: ChunkPlan
    concurrency: int
    progress: Callable[[int], None] | None
    acked: dict[int, str] = field(default_factory=dict)
    error: FerryError | None = None


class Uploader:
    """Uploads local files to one drive; shared by all workers of that drive.

    Args:
        client: the drive's API client.
        config: chunk concurrency cap, NFC and retry settings.
        limiter: shared upload bandwidth limiter, if any.
        server_version: from ``/site/ping``; before 4.18.0 the last chunk goes last.
    """

    def __init__(
        self,
        client: DriveClient,
        config: TransferConfig,
        *,
        limiter: BandwidthLimiter | None = None,
        server_version: str = "4.18.0",
    ) -> None:
        self.client = client
        self.config = config
        self.limiter = limiter
        self.ordered_last = version_tuple(server_version) < _ORDERED_COMPLETION

    async def upload(
        self,
        local: Path,
        remote_path: str,
        *,
        overwrite: bool,
        journal: UploadJournal,
        key: str,
        progress: Callable[[int], None] | None = None,
        resumed: Callable[[int], None] | None = None,
    ) -> RemoteEntry:
        """Upload ``local`` to ``remote_path``, resuming the session journaled under ``key``.

        ``progress`` is told of each chunk's bytes once the storage acknowledged them;
        ``resumed`` is told once per resume how many bytes the resumed session already holds.

        A journaled session is resumed only for the same content: when the local file's size or
        mtime changed since the session was opened, the session is cancelled and the upload
        starts over, so chunks acknowledged for other bytes are never kept. The file is stat'ed
        again after each chunk is read and once more after the last chunk is sent, before the
        upload is finished, so a file changed during the upload is never reported done.

        Raises:
            ObjectExists, QuotaExceeded, LockConflict, ApiError: the session could not be opened.
            UploadFailed: a chunk failed; its flags copy the cause's (the session stays journaled
                when the failure is retryable, so a later call resumes it).
            StorageError, ApiError: the storage refused the completion or the callback failed;
                unless retryable, the session is cancelled and forgotten.
            SourceChanged: ``local`` changed (or vanished) during the upload; the session is
                cancelled and forgotten. Where the server completes on the last chunk (local,
                remote) the drive may keep the file as it was when the upload started.
            IntegrityError: the server's file does not show the full size afterwards.
            UnsupportedFeature: ``local`` is a socket, device or folder (a pipe is spooled to a
                temporary file first).
        """
        st = await anyio.Path(local).stat()
        if stat.S_ISFIFO(st.st_mode):
            return await self._upload_spooled(local, remote_path, overwrite, journal, key, progress)
        if not stat.S_ISREG(st.st_mode):
            raise UnsupportedFeature(f"{local} is neither a regular file nor a pipe")
        size, mtime_ms = st.st_size, st.st_mtime_ns // 1_000_000
        path = join_remote(nfc(remote_path) if self.config.upload_nfc else remote_path)
        source = _fingerprint_of(st)
        target = _Target(
            local, path, to_uri(path), size, mtime_ms, overwrite, journal, key, source, resumed
        )
        saved, concurrency = await self._session_for(target)
        saved = await self._send_until_done(target, saved, concurrency, progress)
        entry = await self._verify(local, target.uri, size, saved, journal, key)
        await journal.session_closed(key)
        log.info("upload_completed", path=path, size_bytes=size)

        return entry

    async def _upload_spooled(
        self,
        pipe: Path,
        remote_path: str,
        overwrite: bool,
        journal: UploadJournal,
        key: str,
        progress: Callable[[int], None] | None,
    ) -> RemoteEntry:
        """Upload a pipe: spool it to a temporary file first, so the size is known (BR-20).

        A spooled source cannot be re-read, so a session journaled under ``key`` is never
        resumed for it.
        """
        saved = await journal.load(key)
        if saved is not None:
            await self._cancel(saved, journal, key)
        spool = await anyio.to_thread.run_sync(_spool, pipe)
        try:
            return await self.upload(
                spool, remote_path, overwrite=overwrite, journal=journal, key=key, progress=progress
            )
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.Path(spool).unlink(missing_ok=True)

    async def _session_for(self, target: _Target) -> tuple[SavedUpload, int]:
        """Resume the journaled session when it is still good, else open a new one."""
        saved = await target.journal.load(target.key)
        previous = saved
        if saved is not None and not self._resumable(saved, target):
            await self._discard(saved, target)
            saved = None
        if saved is None:
            return await self._new_session(target, previous)
        log.info("upload_resumed", path=target.path, chunks_acked=len(saved.acked))

        return saved, await self._policy_concurrency(target.path)

    async def _new_session(
        self, target: _Target, previous: SavedUpload | None
    ) -> tuple[SavedUpload, int]:
        session = await self._open(target, previous)
        self._warn_if_session_too_short(target, session)
        return session.saved, session.chunk_concurrency

    def _warn_if_session_too_short(self, target: _Target, session: UploadSession) -> None:
        """Warn when the chunks, at the pace seen so far, would outlive the session (BR-30)."""
        saved = session.saved
        plan = chunk_plan(saved.size, saved.chunk_size)
        # expected_call_s holds twice the slowest chunk seen: halve it for an estimate.
        per_chunk_s = self.client.expected_call_s / 2
        estimate_s = plan.count * per_chunk_s / max(1, session.chunk_concurrency)
        left_s = saved.expires - self.client.server_time()
        if estimate_s > left_s:
            log.warning(
                "upload_session_too_short",
                path=target.path,
                estimate_s=round(estimate_s, 1),
                session_left_s=round(left_s, 1),
            )

    async def _send_until_done(
        self,
        target: _Target,
        saved: SavedUpload,
        concurrency: int,
        progress: Callable[[int], None] | None,
    ) -> SavedUpload:
        """Send the chunks and finish; on a lost session check for completion, else start anew.

        Any other failure that is not retryable cancels the session and forgets it, so that the
        next call opens a new session instead of resuming one that cannot succeed.
        """
        restarts = 0
        while True:
            try:
                await self._send(target, saved, concurrency, progress)
                return saved
            except SessionExpired as exc:
                mtime = target.mtime_ms if target.overwrite else None
                if await self._completed(target.uri, target.size, mtime):
                    return saved
                if restarts >= _MAX_RESTARTS:
                    raise UploadFailed(
                        str(target.local), 0, 0, "upload session lost", retryable=True
                    ) from exc
            except FerryError as exc:
                if not exc.retryable:
                    # A permanent failure, of a chunk or of the completion (S3 EntityTooSmall,
                    # InvalidPart), would fail the same way on every resume of this session.
                    await self._drop(saved, target)
                raise
            restarts += 1
            log.warning("upload_session_expired", path=target.path, session_id=saved.session_id)
            await self._cancel(saved, target.journal, target.key)
            saved, concurrency = await self._new_session(target, saved)

    def _resumable(self, saved: SavedUpload, target: _Target) -> bool:
        if saved.uri != target.uri or saved.size != target.size:
            return False
        if saved.source != target.source:
            # Chunks acknowledged for other content must never be combined with these bytes.
            log.info("upload_source_changed", path=target.path, session_id=saved.session_id)
            return False
        return not self._expired(saved)

    def _expired(self, saved: SavedUpload) -> bool:
        return self.client.server_time() >= saved.expires - _EXPIRY_MARGIN_S

    async def _policy_concurrency(self, path: str) -> int:
        """The policy's chunk concurrency for a resumed session (read from the parent listing)."""
        if self.config.chunk_concurrency == 1:
            return 1
        parent = path.rsplit("/", 1)[0] or "/"
        try:
            page = await self.client.list_page(to_uri(parent), page_size=1)
        except NotFound:
            return 1
        value = page.policy.get("chunk_concurrency")
        policy = value if isinstance(value, int) and value > 0 else 1
        cap = self.config.chunk_concurrency

        return policy if cap is None else min(cap, policy)

    async def _open(self, target: _Target, previous: SavedUpload | None) -> UploadSession:
        """Open a session; an orphan placeholder or lock of our previous session is removed once."""
        uri, size, mtime_ms = target.uri, target.size, target.mtime_ms
        try:
            session = await self.client.create_upload_session(
                uri, size, last_modified_ms=mtime_ms, overwrite=target.overwrite
            )
        except (ObjectExists, LockConflict) as exc:
            if previous is None or not await self._is_our_orphan(exc, uri, previous):
                raise
            log.warning("upload_orphan_removed", uri=uri, session_id=previous.session_id)
            await self._cancel(previous, target.journal, target.key)
            session = await self.client.create_upload_session(
                uri, size, last_modified_ms=mtime_ms, overwrite=target.overwrite
            )
        saved = replace(session.saved, uri=uri, acked={}, source=target.source)
        await target.journal.session_opened(target.key, saved)
        cap = self.config.chunk_concurrency
        concurrency = (
            session.chunk_concurrency if cap is None else min(cap, session.chunk_concurrency)
        )

        return replace(session, saved=saved, chunk_concurrency=max(1, concurrency))

    async def _is_our_orphan(self, exc: ApiError, uri: str, previous: SavedUpload) -> bool:
        if previous.uri != uri:
            return False
        if isinstance(exc, LockConflict):
            return any(_is_upload_lock(item) for item in exc.conflicts) or not exc.conflicts
        try:
            entry = await self.client.file_info(uri)
        except NotFound:
            return False
        return entry.metadata.get("sys:upload_session_id") == previous.session_id

    async def _drop(self, saved: SavedUpload, target: _Target) -> None:
        """Cancel the session of an upload that failed for good and forget it.

        Runs while the failure propagates: a failing cancel is logged, never raised over it, and
        the journal then keeps the session so that the next run cancels it before starting over.
        """
        with anyio.CancelScope(shield=True):
            try:
                await self._cancel(saved, target.journal, target.key)
            except FerryError as exc:
                log.warning(
                    "upload_session_cancel_failed", session_id=saved.session_id, error=str(exc)
                )

    async def _discard(self, saved: SavedUpload, target: _Target) -> None:
        """Cancel a session we will not resume; if that fails, its orphan is handled at open."""
        try:
            await self._cancel(saved, target.journal, target.key)
        except FerryError as exc:
            if exc.fatal:
                raise
            log.warning("upload_session_cancel_failed", session_id=saved.session_id, error=str(exc))

    async def abandon(self, journal: UploadJournal, key: str) -> bool:
        """Cancel the session journaled under ``key`` and forget it; False when there is none.

        For files that will not be uploaded any more (renamed or deleted locally after a crash):
        their placeholder, lock and quota reservation go now instead of when the session
        expires. A session the server no longer has is simply forgotten.
        """
        saved = await journal.load(key)
        if saved is None:
            return False
        await self._cancel(saved, journal, key)
        log.info("upload_session_abandoned", uri=saved.uri, session_id=saved.session_id)

        return True

    async def _cancel(self, saved: SavedUpload, journal: UploadJournal, key: str) -> None:
        """Delete a session and its placeholder; a session the server no longer has is fine."""
        try:
            await self.client.delete_upload_session(saved.session_id, saved.uri)
        except (NotFound, SessionExpired) as exc:
            log.debug("upload_session_gone", session_id=saved.session_id, api_code=exc.code)
        await journal.session_closed(key)

    async def _completed(self, uri: str, size: int, version_mtime_ms: int | None) -> bool:
        """True when the file is whole on the server (contract 6.9: 40011 after completion).

        For a new version (``version_mtime_ms`` given) the old version may have the same size,
        so the file's ``updated_at`` must also be the ``last_modified`` we sent.
        """
        try:
            entry = await self.client.file_info(uri)
        except NotFound:
            return False
        if entry.uploading or entry.size != size:
            return False
        if version_mtime_ms is None:
            return True
        return abs(entry.updated_at.timestamp() * 1000 - version_mtime_ms) < 1000

    async def _send(
        self,
        target: _Target,
        saved: SavedUpload,
        concurrency: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        """Send every chunk not yet acknowledged, then finish the upload with the writer.

        The source is checked once more between the last chunk and the finish: for policies the
        client completes (S3 family, OneDrive, Qiniu) a changed file is then never completed.
        """
        writer = make_writer(
            WriterContext(
                session=saved,
                storage_http=self.client.storage_http,
                api=self.client,
                clock=self.client.server_time,
            )
        )
        plan = chunk_plan(saved.size, saved.chunk_size, single=writer.single_chunk)
        if writer.max_concurrency is not None:
            concurrency = min(concurrency, writer.max_concurrency)
        run = _Run(
            target.local,
            target.key,
            target.journal,
            saved,
            target.source,
            plan,
            max(1, concurrency),
            progress,
        )
        run.acked.update({i: etag for i, etag in saved.acked.items() if 0 <= i < plan.count})
        if run.acked and target.resumed is not None:
            target.resumed(sum(plan.length(i) for i in run.acked))
        todo = [i for i in range(plan.count) if i not in run.acked]
        await self._send_indices(run, writer.write_chunk, todo)
        _check_source(run, await anyio.to_thread.run_sync(_fingerprint, run.local))
        parts = [PartResult(index=i, etag=run.acked[i]) for i in range(plan.count)]
        await writer.finish(parts)

    async def _send_indices(self, run: _Run, write: _WriteFn, todo: list[int]) -> None:
        """Run the chunks in ``todo`` with ``run.concurrency`` workers, in index order."""
        last = run.plan.count - 1
        hold_last = self.ordered_last and run.concurrency > 1 and last in todo and len(todo) > 1
        first = [i for i in todo if not (hold_last and i == last)]
        if run.concurrency == 1:
            for index in first:
                await self._send_chunk(run, write, index)
        else:
            await self._pool(run, write, iter(first))
        if run.error is not None:
            raise run.error
        if hold_last:
            # Servers before 4.18.0 complete on the last index, whatever else arrived.
            await self._send_chunk(run, write, last)

    async def _pool(self, run: _Run, write: _WriteFn, indices: Iterator[int]) -> None:
        async with anyio.create_task_group() as tg:

            async def worker() -> None:
                for index in indices:
                    try:
                        await self._send_chunk(run, write, index)
                    except FerryError as exc:
                        if run.error is None:
                            run.error = exc
                        tg.cancel_scope.cancel()
                        return

            for _ in range(run.concurrency):
                tg.start_soon(worker)

    async def _send_chunk(self, run: _Run, write: _WriteFn, index: int) -> None:
        """Read one chunk at its offset, check the file did not change, send it, and journal it."""
        offset, length = run.plan.offset(index), run.plan.length(index)
        if self._expired(run.saved):
            raise SessionExpired(0, 40011, "upload session expired (local clock check)")
        data, source = await anyio.to_thread.run_sync(_read_chunk, run.local, offset, length)
        _check_source(run, source)
        if len(data) != length:
            raise IntegrityError(str(run.local), f"{length} bytes at {offset}", len(data))
        if self.limiter is not None:
            await self.limiter.acquire(length)
        started = time.monotonic()
        try:
            part = await write(index, offset, data)
        except SessionExpired:
            raise
        except FerryError as exc:
            raise UploadFailed(
                str(run.local), index, offset, str(exc), retryable=exc.retryable, fatal=exc.fatal
            ) from exc
        elapsed = time.monotonic() - started
        self.client.expected_call_s = max(self.client.expected_call_s, min(3600.0, 2 * elapsed))
        run.acked[index] = part.etag
        await run.journal.chunk_acked(run.key, index, part.etag)
        log.debug("chunk_uploaded", path=str(run.local), chunk=index, offset=offset)
        if run.progress is not None:
            run.progress(length)

    async def _verify(
        self,
        local: Path,
        uri: str,
        size: int,
        saved: SavedUpload,
        journal: UploadJournal,
        key: str,
    ) -> RemoteEntry:
        """Check file info shows the full size and no upload session (contract 6.9)."""
        entry = await self.client.file_info(uri)
        if entry.uploading:
            # A failed completion is not redone by re-sending chunks: cancel and start over.
            await self._cancel(saved, journal, key)
            raise UploadFailed(
                str(local), 0, 0, "server did not complete the upload", retryable=True
            )
        if entry.size != size:
            raise IntegrityError(str(local), size, entry.size)

        return entry


def _is_upload_lock(item: dict[str, object]) -> bool:
    owner = item.get("owner")
    if not isinstance(owner, dict):
        return False
    application = owner.get("application")
    return isinstance(application, dict) and application.get("type") == "upload"


def _spool(pipe: Path) -> Path:
    """Copy a pipe into a private temporary file and return its path."""
    fd, name = tempfile.mkstemp(prefix="ferry-spool-")
    with os.fdopen(fd, "wb") as out, pipe.open("rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
    return Path(name)


def _fingerprint_of(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


def _fingerprint(path: Path) -> str:
    """The fingerprint of ``path`` as it is now (see ``_Target.source``)."""
    try:
        return _fingerprint_of(path.stat())
    except FileNotFoundError:
        return _MISSING


def _check_source(run: _Run, source: str) -> None:
    if source != run.source:
        raise SourceChanged(str(run.local), run.source, source)


def _read_chunk(path: Path, offset: int, length: int) -> tuple[bytes, str]:
    """Read a chunk, then fingerprint the file: a change before or during the read shows."""
    try:
        data = _read_at(path, offset, length)
    except FileNotFoundError:
        return b"", _MISSING
    return data, _fingerprint(path)


def _read_at(path: Path, offset: int, length: int) -> bytes:
    """Read ``length`` bytes at ``offset`` (fewer only at end of file)."""
    parts: list[bytes] = []
    with path.open("rb") as fh:
        while length > 0:
            block = os.pread(fh.fileno(), min(length, 1 << 30), offset)
            if not block:
                break
            parts.append(block)
            offset += len(block)
            length -= len(block)
    return b"".join(parts)
