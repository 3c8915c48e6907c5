"""Ranged, resumable downloads into a ``.part`` file, then an atomic rename (contract 7).

The URL comes from ``POST /file/url`` and is fetched verbatim without any token. Large files are
fetched in parallel segments; a ``.part`` file left by an earlier run is resumed with ``Range``
and ``If-Range`` (the entity id is the ``ETag``), and restarted from zero when the server ignores
the range or the file's version changed. An expired or stale URL (401/403/404/410, or a
``40005``/``40071`` envelope) is re-issued once per expiry and the bytes on disk are kept. At the
end the size is verified, the mtime is set from ``updated_at`` and the file is renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio
import structlog

from transfer.accounting import BandwidthLimiter
from transfer.api import decode_response
from transfer.backend import RemoteEntry
from transfer.client import DriveClient, StreamAnswer
from transfer.errors import (
    ApiError,
    DownloadFailed,
    FerryError,
    IntegrityError,
    ServerError,
    UnsupportedFeature,
)
from transfer.names import MAX_NAME_BYTES

__all__ = ["Downloader", "part_path"]

log = structlog.get_logger()

_SEGMENT_BYTES = 16 << 20
_SEGMENTS = 4
_WRITE_BLOCK = 1 << 20
_MAX_URL_REFRESHES = 3
_CHECKPOINT_EVERY_S = 1.0
_STATE_SUFFIX = ".json"
_TMP_SUFFIX = ".tmp"
_MAX_RESTARTS = 1
_URL_DEAD = frozenset({401, 403, 404, 410})


def part_path(local: Path) -> Path:
    """The temporary name a download is written to before the rename."""
    name = local.name + ".part"
    # The longest name derived from it is the state file's temporary name: it must fit too.
    if len((name + _STATE_SUFFIX + _TMP_SUFFIX).encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        digest = hashlib.sha256(local.name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        name = f".ferry-{digest}.part"
    return local.with_name(name)


def _state_path(part: Path) -> Path:
    return part.with_name(part.name + _STATE_SUFFIX)


class _Restart(Exception):
    """The server ignored our range or the entity changed: start again from byte 0."""


class _UrlSource:
    """The current download URL of one file, re-issued when a fetch finds it dead."""

    def __init__(self, client: DriveClient, uri: str) -> None:
        self._client = client
        self._uri = uri
        self._url: str | None = None
        self._lock = anyio.Lock()
        self.issued = 0

    async def get(self) -> str:
        async with self._lock:
            if self._url is None:
                batch = await self._client.file_urls([self._uri], no_cache=self.issued > 0)
                if len(batch.urls) != 1 or not batch.urls[0]:
                    raise ApiError(200, 0, "malformed response: no download url")
                self._url = batch.urls[0]
                self.issued += 1
            return self._url

    def invalidate(self, url: str) -> None:
        if self._url == url:
            self._url = None


@dataclass(slots=True)
class _Job:
    entry: RemoteEntry
    part: Path
    urls: _UrlSource
    segment_size: int
    progress: Callable[[int], None] | None
    done: set[int] = field(default_factory=set)
    reached: dict[int, int] = field(default_factory=dict)
    """Bytes on disk per unfinished segment: where a resumed segment continues."""
    error: FerryError | _Restart | None = None
    state_lock: anyio.Lock = field(default_factory=anyio.Lock)
    saved_at: float = 0.0

    @property
    def segments(self) -> int:
        if self.entry.size == 0:
            return 1
        return -(-self.entry.size // self.segment_size)

    def bytes_on_disk(self) -> int:
        """Bytes of the ``.part`` file that finished and unfinished segments already hold."""
        size, seg = self.entry.size, self.segment_size
        done = sum(min(size, (i + 1) * seg) - i * seg for i in self.done if i * seg < size)
        return done + sum(max(0, pos - i * seg) for i, pos in self.reached.items())


class Downloader:
    """Downloads drive files to local paths; shared by all workers of one drive.

    Args:
        client: the drive's API client (its storage session carries no token).
        limiter: shared download bandwidth limiter, if any.
        segment_size: bytes per parallel segment; files up to one segment go in one stream.
        segments: segments of one file fetched at once.
        max_attempts: tries per segment after network or server errors (progress resets it).
        sleep: backoff sleep, injectable for tests.
    """

    def __init__(
        self,
        client: DriveClient,
        *,
        limiter: BandwidthLimiter | None = None,
        segment_size: int = _SEGMENT_BYTES,
        segments: int = _SEGMENTS,
        max_attempts: int = 5,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if segment_size <= 0 or segments <= 0:
            raise ValueError("segment_size and segments must be positive")
        self.client = client
        self.limiter = limiter
        self.segment_size = segment_size
        self.segments = segments
        self.max_attempts = max_attempts
        self._sleep = sleep

    async def download(
        self,
        entry: RemoteEntry,
        local: Path,
        *,
        progress: Callable[[int], None] | None = None,
        resumed: Callable[[int], None] | None = None,
    ) -> None:
        """Download ``entry`` to ``local`` (the final path; its folder is created).

        ``progress`` is told of the bytes written as they arrive; ``resumed`` is told how many
        bytes a resumed ``.part`` file already holds.

        Raises:
            UnsupportedFeature: ``entry`` is a folder.
            DownloadFailed: the file is an unfinished upload, or fetching failed for good.
            IntegrityError: the bytes on disk do not add up to the entry's size.
        """
        if entry.is_dir:
            raise UnsupportedFeature(f"{entry.path} is a folder; create it instead")
        if entry.primary_entity is None:
            entry = await self._identified(entry)
        if entry.uploading and not await self._has_finished_primary(entry):
            raise DownloadFailed(entry.path, 0, "file is an unfinished upload")
        await anyio.Path(local.parent).mkdir(parents=True, exist_ok=True)
        part = part_path(local)
        job = _Job(entry, part, _UrlSource(self.client, entry.uri), self.segment_size, progress)
        for restart in range(_MAX_RESTARTS + 1):
            await anyio.to_thread.run_sync(self._prepare, job, restart > 0)
            kept = job.bytes_on_disk()
            if kept > 0:
                log.info("download_resumed", path=entry.path, bytes_kept=kept)
                if resumed is not None:
                    resumed(kept)
            try:
                await self._fetch_all(job)
                break
            except _Restart:
                if restart >= _MAX_RESTARTS:
                    raise DownloadFailed(entry.path, 0, "server keeps ignoring Range") from None
                log.warning("download_restarted", path=entry.path)
        await anyio.to_thread.run_sync(self._finish, job, local)
        log.info("download_completed", path=entry.path, size_bytes=entry.size)

    async def _identified(self, entry: RemoteEntry) -> RemoteEntry:
        """Fill in the entity (and current size and mtime) of an entry built without them.

        A ``.part`` file may only be resumed against the entity it was started on; without the
        entity id neither the saved state nor ``If-Range`` could tell a changed file apart.
        """
        info = await self.client.file_info(entry.uri)
        return replace(
            entry,
            primary_entity=info.primary_entity,
            size=info.size,
            updated_at=info.updated_at,
            metadata=info.metadata,
        )

    async def _has_finished_primary(self, entry: RemoteEntry) -> bool:
        """True when an entry in upload state still serves a finished older version.

        The server marks the file with ``sys:upload_session_id`` for a new version too, while
        the primary entity stays the previous, complete one; a new file's only entity is the
        partial placeholder.
        """
        versions = [e for e in await self.client.entities(entry.uri) if e.type == 0]
        primary = [e for e in versions if e.id == entry.primary_entity]
        return len(versions) >= 2 and len(primary) == 1 and primary[0].size == entry.size

    def _prepare(self, job: _Job, fresh: bool) -> None:
        """Open or reset the ``.part`` file and load which segments an earlier run finished."""
        state = _state_path(job.part)
        record: dict[str, object] = {}
        if not fresh:
            try:
                loaded = json.loads(state.read_text(encoding="utf-8"))
                record = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                record = {}
        same = (
            job.part.exists()
            and record.get("entity") == job.entry.primary_entity
            and record.get("size") == job.entry.size
            and record.get("segment_size") == job.segment_size
        )
        job.done = set()
        job.reached = {}
        if same:
            done = record.get("done")
            job.done = {i for i in done if isinstance(i, int)} if isinstance(done, list) else set()
            reached = record.get("reached")
            if isinstance(reached, dict):
                job.reached = {
                    int(k): v for k, v in reached.items() if k.isdigit() and isinstance(v, int)
                }
        else:
            with job.part.open("wb") as fh:
                fh.truncate(job.entry.size)
        self._save_state(job)

    def _save_state(self, job: _Job) -> None:
        state = _state_path(job.part)
        tmp = state.with_name(state.name + _TMP_SUFFIX)
        record = {
            "entity": job.entry.primary_entity,
            "size": job.entry.size,
            "segment_size": job.segment_size,
            "done": sorted(job.done),
            "reached": {str(k): v for k, v in job.reached.items()},
        }
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, state)

    def _finish(self, job: _Job, local: Path) -> None:
        actual = job.part.stat().st_size
        if actual != job.entry.size or len(job.done) != job.segments:
            raise IntegrityError(job.entry.path, job.entry.size, actual)
        mtime = job.entry.updated_at.timestamp()
        os.utime(job.part, (time.time(), mtime))
        os.replace(job.part, local)
        _state_path(job.part).unlink(missing_ok=True)

    async def _fetch_all(self, job: _Job) -> None:
        todo = [i for i in range(job.segments) if i not in job.done]
        if not todo:
            return
        pending = iter(todo)
        async with anyio.create_task_group() as tg:

            async def worker() -> None:
                for index in pending:
                    try:
                        await self._fetch_segment(job, index)
                    except (FerryError, _Restart) as exc:
                        job.error = job.error or exc
                        tg.cancel_scope.cancel()
                        return

            for _ in range(min(self.segments, len(todo))):
                tg.start_soon(worker)
        if job.error is not None:
            error, job.error = job.error, None
            raise error

    async def _fetch_segment(self, job: _Job, index: int) -> None:
        """Fetch one segment, retrying network errors and re-issuing dead URLs."""
        size = job.entry.size
        start = index * job.segment_size
        end = min(size, start + job.segment_size)
        pos = max(start, min(end, job.reached.get(index, start)))
        attempts = 0
        refreshes = 0
        with job.part.open("r+b") as fh:
            while pos < end or (size == 0 and index not in job.done):
                url = await job.urls.get()
                before = pos
                try:
                    pos = await self._fetch_once(job, index, fh.fileno(), url, pos, end)
                except _DeadUrl as dead:
                    pos = max(pos, job.reached.get(index, pos))
                    refreshes += 1
                    if refreshes > _MAX_URL_REFRESHES:
                        raise DownloadFailed(job.entry.path, pos, str(dead)) from None
                    log.info("download_url_refreshed", path=job.entry.path, offset=pos)
                    job.urls.invalidate(url)
                    continue
                except FerryError as exc:
                    pos = max(pos, job.reached.get(index, pos))
                    # Attempts count failures in a row without progress.
                    attempts = 1 if pos > before else attempts + 1
                    if not exc.retryable or attempts >= self.max_attempts:
                        raise DownloadFailed(
                            job.entry.path, pos, str(exc), retryable=exc.retryable, fatal=exc.fatal
                        ) from exc
                    await self._backoff(attempts)
                    continue
                attempts = 0
                if size == 0:
                    break
        job.done.add(index)
        job.reached.pop(index, None)
        await self._checkpoint(job)

    async def _checkpoint(self, job: _Job) -> None:
        """Persist which bytes are on disk (at most every second while data flows)."""
        job.saved_at = time.monotonic()
        async with job.state_lock:
            await anyio.to_thread.run_sync(self._save_state, job)

    async def _backoff(self, attempt: int) -> None:
        await self._sleep(min(30.0, 0.5 * 2.0 ** (attempt - 1)))

    async def _fetch_once(
        self, job: _Job, index: int, fd: int, url: str, pos: int, end: int
    ) -> int:
        """One GET of ``[pos, end)``; returns the new position (progress may be partial)."""
        size = job.entry.size
        headers: dict[str, str] = {}
        if size > 0 and (pos > 0 or end < size):
            headers["Range"] = f"bytes={pos}-{end - 1}"
            if job.entry.primary_entity:
                headers["If-Range"] = f'"{job.entry.primary_entity}"'
        async with self.client.stream(url, headers=headers) as answer:
            await self._check_answer(answer, job, pos, end, url)
            buffer = bytearray()
            try:
                async for block in answer.blocks():
                    if pos + len(buffer) + len(block) > end:
                        # The file is larger than the entry says: it changed since listing.
                        raise IntegrityError(job.entry.path, end, "a longer body")
                    buffer += block
                    if len(buffer) >= _WRITE_BLOCK:
                        pos = await self._write(job, index, fd, pos, bytes(buffer))
                        buffer.clear()
            except FerryError:
                # Bytes that arrived before the failure are good: keep them for the resume.
                if buffer:
                    await self._write(job, index, fd, pos, bytes(buffer))
                await self._checkpoint(job)
                raise
            if buffer:
                pos = await self._write(job, index, fd, pos, bytes(buffer))
        if pos < end:
            raise ServerError(200, 0, "body ended before the range did")
        return pos

    async def _write(self, job: _Job, index: int, fd: int, pos: int, data: bytes) -> int:
        if self.limiter is not None:
            await self.limiter.acquire(len(data))
        await anyio.to_thread.run_sync(_pwrite_all, fd, data, pos)
        if job.progress is not None:
            job.progress(len(data))
        job.reached[index] = pos + len(data)
        if time.monotonic() - job.saved_at >= _CHECKPOINT_EVERY_S:
            await self._checkpoint(job)
        return pos + len(data)

    async def _check_answer(
        self, answer: StreamAnswer, job: _Job, pos: int, end: int, url: str
    ) -> None:
        """Classify an answer before reading its body: dead URL, error, restart, or data."""
        status = answer.status
        if status in _URL_DEAD:
            raise _DeadUrl(f"HTTP {status}")
        if status == 200 and await self._is_error_envelope(answer, pos, end, url):
            raise _DeadUrl("signature rejected")
        if status == 429 or status >= 500:
            body = await answer.read()
            decode_response(status, answer.headers, body, "GET", url.split("?", 1)[0])
            raise ServerError(status, status, f"HTTP {status}")
        if status == 200:
            if pos != 0 or end != job.entry.size:
                raise _Restart
            return
        if status == 206:
            if not answer.headers.get("Content-Range", "").startswith(f"bytes {pos}-"):
                raise _Restart
            return
        if status == 416:
            raise _Restart
        raise ApiError(status, status, f"unexpected HTTP {status} from content URL")

    @staticmethod
    async def _is_error_envelope(answer: StreamAnswer, pos: int, end: int, url: str) -> bool:
        """True for a JSON error envelope where file bytes were expected (bad or expired sign)."""
        if not answer.headers.get("Content-Type", "").startswith("application/json"):
            return False
        length = answer.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) == end - pos:
            return False
        if int(length) > 4096:
            return False
        body = await answer.read()
        try:
            decode_response(200, answer.headers, body, "GET", url.split("?", 1)[0])
        except ApiError as exc:
            return exc.code != 0
        return False


def _pwrite_all(fd: int, data: bytes, pos: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, pos)
        view = view[written:]
        pos += written


class _DeadUrl(Exception):
    """The download URL expired, was revoked, or points at a moved blob."""
