"""Runs one job: plan, transfer in parallel, mirror deletes, and record the outcome.

:func:`job_lock` is the per-job lock file the caller holds around :func:`run_job`.

The scheduler owns the run's :class:`transfer.Stats` and its stats timer, binds ``job_id`` and
``run_id`` into structlog's context, and turns what happened into an exit code:

* 0 every planned item is done; 1 some items failed (a re-run resumes them);
* 3 authentication failed; 6 a fatal remote error (unreachable, quota) stopped the run;
* 5 ``max_transfer`` or ``max_duration`` stopped the run;
* 130 / 143 the run was interrupted by SIGINT / SIGTERM (see :class:`Interrupt`).

It builds no HTTP requests and no SQL: the drive comes from a ``connect`` callable and the state
from :class:`jobs.state.StateDB`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import anyio
import structlog

from jobs.errors import JobLocked
from jobs.plan import (
    PlanSummary,
    RemoteLister,
    entry_for,
    plan_job,
    sha256_file,
    to_ns,
)
from jobs.progress import Reporter, snapshot_fields
from jobs.spec import JobSpec
from jobs.state import ItemOutcome, PlanRow, StateDB
from transfer import (
    AuthError,
    BandwidthLimiter,
    FerryError,
    RemoteEntry,
    Stats,
    StatsSnapshot,
    UploadJournal,
)

__all__ = [
    "EXIT_AUTH",
    "EXIT_DONE",
    "EXIT_FATAL",
    "EXIT_LIMIT",
    "EXIT_LOCKED",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "Connect",
    "DriveLike",
    "DriveOptions",
    "Interrupt",
    "RunOutcome",
    "job_lock",
    "run_job",
    "worst_exit",
]

log = structlog.get_logger()

EXIT_DONE = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_LOCKED = 4
EXIT_LIMIT = 5
EXIT_FATAL = 6
_PRIORITY = (130, 143, EXIT_USAGE, EXIT_AUTH, EXIT_FATAL, EXIT_LOCKED, EXIT_LIMIT, EXIT_PARTIAL)
_DELETE_BATCH = 500
_UNLIMITED = 1 << 50


class DriveLike(RemoteLister, Protocol):
    """The part of :class:`transfer.Drive` a run uses."""

    async def mkdir(self, path: str) -> RemoteEntry:
        """Create a folder and its ancestors."""
        ...

    async def delete(self, paths: Sequence[str], *, hard: bool = False) -> None:
        """Delete files or folders (to the trash unless ``hard``)."""
        ...

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
        """Upload one file, resuming the session journaled under ``key``."""
        ...

    async def download(
        self,
        entry: RemoteEntry,
        local: Path,
        *,
        progress: Callable[[int], None] | None = None,
        resumed: Callable[[int], None] | None = None,
        thumbnail_dir: Path | None = None,
    ) -> None:
        """Download one file to ``local`` (atomically, resuming a ``.part``)."""
        ...

    async def abandon_upload(self, journal: UploadJournal, key: str) -> bool:
        """Cancel the upload session journaled under ``key``."""
        ...


@dataclass(frozen=True, slots=True)
class DriveOptions:
    """What a run hands to the drive: bandwidth buckets (None = unlimited) and a retry hook."""

    up: BandwidthLimiter | None
    down: BandwidthLimiter | None
    on_retry: Callable[[object], None] | None = None


Connect = Callable[[JobSpec, DriveOptions], AbstractAsyncContextManager[DriveLike]]
"""Opens a signed-in drive for the remote side of a job."""


@dataclass(slots=True)
class Interrupt:
    """Shared between the CLI's signal handler and running jobs: which signal stopped them."""

    signum: int | None = None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What one run did and how it ended."""

    job: str
    run_id: int
    exit_code: int
    status: str
    snapshot: StatsSnapshot
    planned: dict[str, tuple[int, int]]
    deletes: int
    message: str = ""


def worst_exit(codes: Sequence[int]) -> int:
    """Return the exit code of several runs: the most severe one."""
    for code in _PRIORITY:
        if code in codes:
            return code
    return EXIT_DONE


@contextmanager
def job_lock(state_dir: Path, job: str) -> Iterator[Path]:
    """Hold the job's lock file (``fcntl.flock``) for the block.

    Raises:
        JobLocked: another process holds it.
    """
    lock_dir = state_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{job}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise JobLocked(job, path) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Run:
    """Mutable state of one run while it executes."""

    job: JobSpec
    db: StateDB
    job_id: int
    run_id: int
    stats: Stats
    journal: UploadJournal
    reporter: Reporter
    stats_interval_s: float
    limit: str = ""
    fatal_error: FerryError | None = None
    started_bytes: int = 0
    deletes: int = 0
    pending_items: list[ItemOutcome] = field(default_factory=list)
    pending_plan: list[tuple[int, str]] = field(default_factory=list)
    last_flush: float = 0.0

    async def record(
        self,
        row: PlanRow,
        status: str,
        error: str = "",
        fingerprint: tuple[str, str, int] = ("", "", 0),
    ) -> None:
        """Buffer an item outcome; flush in batches so state costs little per file."""
        self.pending_items.append(
            ItemOutcome(row.key, row.size, row.mtime_ns, status, error, *fingerprint)
        )
        self.pending_plan.append((row.seq, status))
        now = time.monotonic()
        if len(self.pending_items) >= 200 or now - self.last_flush > 1.0:
            await self.flush()

    async def flush(self) -> None:
        """Write buffered outcomes in one transaction."""
        items, plan = self.pending_items, self.pending_plan
        self.pending_items, self.pending_plan = [], []
        self.last_flush = time.monotonic()
        if items:
            await self.db.record_items(self.job_id, self.run_id, items)
            await self.db.set_plan_status(self.run_id, plan)


async def run_job(
    db: StateDB,
    job: JobSpec,
    connect: Connect,
    *,
    reporter: Reporter,
    interrupt: Interrupt,
    stats_interval_s: float = 10.0,
) -> RunOutcome:
    """Run ``job`` once (the caller holds its lock) and record the run in ``db``.

    Errors of single items are counted, logged and recorded; a fatal error (authentication,
    quota, unreachable server) ends the run early with its exit code. Cancellation (a signal)
    propagates after the run is recorded as interrupted.
    """
    job_id = await db.job_id(job.name)
    run_id = await db.start_run(job_id)
    structlog.contextvars.bind_contextvars(job_id=job.name, run_id=run_id)
    stats = Stats()
    run = _Run(job, db, job_id, run_id, stats, db.journal(), reporter, stats_interval_s)
    summary = PlanSummary()
    exit_code, status, message = EXIT_FATAL, "failed", ""
    log.info(
        "job_started", kind=job.kind, mode=job.mode, source=str(job.source), target=str(job.target)
    )
    try:
        options = _options(job, stats)
        async with connect(job, options) as drive:
            summary = await plan_job(db, run_id, job, drive, now=time.time)
            if summary.listing_complete:
                await _execute(run, drive, summary, options)
        exit_code, status, message = _verdict(run, summary)
    except AuthError as exc:
        exit_code, status, message = EXIT_AUTH, "auth_failed", str(exc)
        log.error("job_failed", reason="auth_failed", error=str(exc))
    except FerryError as exc:
        exit_code, status, message = EXIT_FATAL, "fatal", str(exc)
        log.error("job_failed", reason="fatal", error=str(exc), error_type=type(exc).__name__)
    except BaseException:
        if interrupt.signum is not None:
            exit_code, status = 128 + interrupt.signum, "interrupted"
            message = f"interrupted by signal {interrupt.signum}"
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await _finish(run, summary, exit_code, status, message)
    return RunOutcome(
        job.name, run_id, exit_code, status, stats.snapshot(), summary.actions, run.deletes, message
    )


async def _finish(
    run: _Run, summary: PlanSummary, exit_code: int, status: str, message: str
) -> None:
    await run.flush()
    snap = run.stats.snapshot()
    checks = summary.actions.get("skip", (0, 0))[0]
    errors = snap.errors + summary.errors
    await run.db.finish_run(
        run.run_id,
        status=status,
        exit_code=exit_code,
        counts={
            "bytes": snap.bytes,
            "transfers": snap.transfers,
            "checks": checks,
            "errors": errors,
            "deletes": run.deletes,
        },
        message=message,
    )
    log.info(
        "job_finished",
        status=status,
        exit_code=exit_code,
        deletes=run.deletes,
        **{**snapshot_fields(snap), "checks": checks, "errors": errors},
    )
    structlog.contextvars.unbind_contextvars("job_id", "run_id")


def _verdict(run: _Run, summary: PlanSummary) -> tuple[int, str, str]:
    snap = run.stats.snapshot()
    if isinstance(run.fatal_error, AuthError):
        return EXIT_AUTH, "auth_failed", str(run.fatal_error)
    if run.fatal_error is not None or run.stats.fatal:
        return EXIT_FATAL, "fatal", str(run.fatal_error or "a fatal error stopped the run")
    if run.limit:
        return EXIT_LIMIT, "limit_reached", f"{run.limit} reached"
    errors = snap.errors + summary.errors
    if errors or not summary.listing_complete:
        return EXIT_PARTIAL, "partial", f"{errors} item(s) failed"
    return EXIT_DONE, "done", ""


def _options(job: JobSpec, stats: Stats) -> DriveOptions:
    def on_retry(_: object) -> None:
        stats.record_retry()

    if job.bwlimit is None:
        return DriveOptions(None, None, on_retry)
    limiter = BandwidthLimiter(job.bwlimit.rate_at(datetime.now().time()) or _UNLIMITED)
    if job.target.is_remote:
        return DriveOptions(limiter, None, on_retry)
    return DriveOptions(None, limiter, on_retry)


async def _execute(
    run: _Run, drive: DriveLike, summary: PlanSummary, options: DriveOptions
) -> None:
    """Create folders, transfer files in parallel, then apply mirror deletes."""
    copies = summary.actions.get("copy", (0, 0))
    run.reporter.start(run.job.name, copies[0], copies[1])
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stats_timer, run)
            tg.start_soon(_bandwidth_timer, run, options)
            await _transfer_phase(run, drive)
            tg.cancel_scope.cancel()
    finally:
        run.reporter.stop(run.stats.snapshot())
    await run.flush()
    if run.stats.fatal or run.limit:
        await _mark_blocked(run, "fatal_error" if run.stats.fatal else run.limit)
    else:
        await _abandon_orphaned_sessions(run, drive)
        if run.job.mode == "mirror":
            await _delete_phase(run, drive, summary)


async def _abandon_orphaned_sessions(run: _Run, drive: DriveLike) -> None:
    """Cancel journaled upload sessions of files this run no longer plans to copy.

    A file renamed or deleted locally after a crash leaves its session behind; cancelling it
    removes the placeholder, lock and quota reservation now instead of when it expires. A
    failed cancel is logged and retried by the next run.
    """
    prefix = f"{run.job.name}:"
    keys = {key[len(prefix) :]: key for key in await run.db.journal_keys(prefix)}
    planned = await run.db.planned_targets(run.run_id, keys)
    for target, key in keys.items():
        if target in planned:
            continue
        try:
            await drive.abandon_upload(run.journal, key)
        except FerryError as exc:
            log.warning("upload_session_orphaned", key=key, path=target, error=str(exc))


async def _mark_blocked(run: _Run, reason: str) -> None:
    """Record the copies a fatal error or a limit kept from running as ``blocked``."""
    blocked = 0
    async for page in run.db.plan_pages(run.run_id, "copy"):
        for row in page:
            await run.record(row, "blocked", reason)
            blocked += 1
    await run.flush()
    if blocked:
        log.warning("items_blocked", count=blocked, reason=reason)


async def _transfer_phase(run: _Run, drive: DriveLike) -> None:
    with anyio.move_on_after(run.job.max_duration or float("inf")) as scope:
        await _mkdirs(run, drive)
        send, receive = anyio.create_memory_object_stream[PlanRow](run.job.transfers)
        async with anyio.create_task_group() as tg:
            for _ in range(run.job.transfers):
                tg.start_soon(_worker, run, drive, receive.clone())
            receive.close()
            async with send:
                async for row in _copies(run):
                    await send.send(row)
    if scope.cancelled_caught:
        run.limit = "max_duration"
        log.warning("limit_reached", limit="max_duration", limit_s=run.job.max_duration)


async def _copies(run: _Run) -> AsyncIterator[PlanRow]:
    """Yield planned copies until they run out, a fatal error occurs or a limit is hit."""
    async for page in run.db.plan_pages(run.run_id, "copy"):
        for row in page:
            if run.stats.fatal:
                return
            cap = run.job.max_transfer
            if cap is not None and run.started_bytes + row.size > cap:
                run.limit = "max_transfer"
                log.warning("limit_reached", limit="max_transfer", limit_bytes=cap)
                return
            run.started_bytes += row.size
            yield row


async def _mkdirs(run: _Run, drive: DriveLike) -> None:
    async for page in run.db.plan_pages(run.run_id, "mkdir"):
        for row in page:
            try:
                if run.job.target.is_remote:
                    await drive.mkdir(row.dst)
                else:
                    await anyio.Path(run.job.target.path, row.dst).mkdir(
                        parents=True, exist_ok=True
                    )
                await run.record(row, "done")
            except (FerryError, OSError) as exc:
                run.stats.record_error(exc)
                log.error("mkdir_failed", path=row.dst, error=str(exc))
                await run.record(row, "failed", str(exc))
                if getattr(exc, "fatal", False):
                    raise


async def _worker(
    run: _Run, drive: DriveLike, rows: anyio.abc.ObjectReceiveStream[PlanRow]
) -> None:
    async with rows:
        async for row in rows:
            if run.stats.fatal:
                continue
            await _transfer_one(run, drive, row)


async def _transfer_one(run: _Run, drive: DriveLike, row: PlanRow) -> None:
    """Move one file; record and log the outcome; raise only cancellation."""
    handle = run.stats.start_transfer(row.key, row.size)
    try:
        if run.job.target.is_remote:
            local = Path(run.job.source.path, row.src)
            remote = await drive.upload(
                local,
                row.dst,
                overwrite=row.overwrite,
                journal=run.journal,
                key=f"{run.job.name}:{row.dst}",
                progress=handle.add_bytes,
                resumed=handle.add_resumed,
            )
        else:
            local = Path(run.job.target.path, row.dst)
            remote = entry_for(row)
            await anyio.Path(local.parent).mkdir(parents=True, exist_ok=True)
            thumbs = run.job.thumbnails
            folder = thumbs / Path(row.dst).parent if isinstance(thumbs, Path) else None
            await drive.download(
                remote,
                local,
                progress=handle.add_bytes,
                resumed=handle.add_resumed,
                thumbnail_dir=folder,
            )
        fingerprint = await _fingerprint(run, local, remote)
    except (FerryError, OSError) as exc:
        handle.done(exc)
        if isinstance(exc, FerryError) and exc.fatal and run.fatal_error is None:
            run.fatal_error = exc
        log.error("transfer_failed", path=row.key, error=str(exc), error_type=type(exc).__name__)
        await run.record(row, "failed", f"{type(exc).__name__}: {exc}")
        return
    # A cancellation (signal, max_duration) propagates above without done(): the transfer stays
    # in flight in the stats, resumable, and is not counted as a failure.
    handle.done(None)
    log.info("transfer_finished", path=row.key, size_bytes=row.size, target=row.dst)
    await run.record(row, "done", fingerprint=fingerprint)


async def _fingerprint(run: _Run, local: Path, remote: RemoteEntry) -> tuple[str, str, int]:
    """For ``compare = "checksum"``: the local content hash and the drive entry it matches."""
    if run.job.compare != "checksum":
        return ("", "", 0)
    digest = await anyio.to_thread.run_sync(sha256_file, local)
    return (digest, remote.id, to_ns(remote.updated_at))


async def _delete_phase(run: _Run, drive: DriveLike, summary: PlanSummary) -> None:
    """Delete what the source lacks, only after an error-free run and within ``max_delete``.

    ``max_delete`` counts items (a folder deleted whole counts every file below it); the
    planner refuses a plan above it.
    """
    count = summary.actions.get("delete", (0, 0))[0]
    if count == 0 or summary.deletes_refused:
        return  # the planner reported refused deletes as an issue
    errors = run.stats.snapshot().errors + summary.errors
    if errors or run.limit or not summary.listing_complete:
        log.warning("deletes_skipped", reason="run_had_errors", planned=count, errors=errors)
        return
    async for page in run.db.plan_pages(run.run_id, "delete"):
        for start in range(0, len(page), _DELETE_BATCH):
            await _delete_batch(run, drive, page[start : start + _DELETE_BATCH])


async def _delete_batch(run: _Run, drive: DriveLike, rows: list[PlanRow]) -> None:
    try:
        if run.job.target.is_remote:
            await drive.delete([row.dst for row in rows])
        else:
            await anyio.to_thread.run_sync(_delete_local, Path(run.job.target.path), rows)
    except (FerryError, OSError) as exc:
        run.stats.record_error(exc)
        log.error("delete_failed", count=len(rows), error=str(exc))
        for row in rows:
            await run.record(row, "failed", str(exc))
        return
    run.deletes += sum(row.items for row in rows)
    for row in rows:
        log.info("item_deleted", path=row.dst)
        await run.record(row, "deleted")


def _delete_local(root: Path, rows: list[PlanRow]) -> None:
    for row in rows:
        path = root / row.dst
        # Only a folder the plan deleted whole is removed with what it holds.
        if row.is_dir and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


async def _stats_timer(run: _Run) -> None:
    while True:
        await anyio.sleep(run.stats_interval_s)
        run.reporter.update(run.stats.snapshot())


async def _bandwidth_timer(run: _Run, options: DriveOptions) -> None:
    """Follow the time-of-day bandwidth table while the run lasts."""
    schedule = run.job.bwlimit
    limiter = options.up or options.down
    if schedule is None or limiter is None or len(schedule.slots) < 2:
        return
    while True:
        await anyio.sleep(30)
        limiter.rate_bytes_per_s = schedule.rate_at(datetime.now().time()) or _UNLIMITED
