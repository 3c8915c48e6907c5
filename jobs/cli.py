"""The ``ferry`` command line: parses arguments, loads the config, runs jobs, sets the exit code.

This is the only module that prints, reads the environment, or configures structlog. Exit codes:

====  ==========================================================
0     done
1     some items failed (a re-run resumes them)
2     usage or config error (nothing was contacted)
3     authentication failed
4     the job is already running (its lock is held)
5     a max_transfer / max_duration limit stopped the run
6     fatal remote error (unreachable server, quota)
130   interrupted by SIGINT; 143 interrupted by SIGTERM
141   standard output was closed early (``ferry history | head``)
====  ==========================================================
"""

# ruff: noqa: E402 - the imports below the SIGINT handler are meant to run after it is set.

from __future__ import annotations

import signal
import threading
from types import FrameType


def _exit_interrupted(signum: int, _: FrameType | None) -> None:
    """Exit with 128 + ``signum`` and no traceback."""
    raise SystemExit(128 + signum)


# Loading the modules below takes about a second; a Ctrl-C meanwhile exits 130 without a
# traceback. Python's own handler returns once they are loaded, and main() handles later ones.
# An ignored SIGINT stays ignored; handlers can only be set on the main thread.
_QUIET_SIGINT = (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
)
if _QUIET_SIGINT:
    signal.signal(signal.SIGINT, _exit_interrupted)

import argparse
import logging
import os
import sqlite3
import subprocess
import sys
import time
import unicodedata
from collections.abc import AsyncIterator, MutableSet, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TextIO

import anyio
import structlog
from croniter import croniter
from structlog.typing import EventDict, Processor, WrappedLogger

from jobs.config import AppConfig, load_config
from jobs.errors import ConfigError, ConfigIssue, JobLocked, SecretError
from jobs.plan import display_path, plan_job
from jobs.progress import LogReporter, Reporter, RichReporter
from jobs.scheduler import (
    EXIT_AUTH,
    EXIT_DONE,
    EXIT_FATAL,
    EXIT_LOCKED,
    EXIT_USAGE,
    DriveLike,
    DriveOptions,
    Interrupt,
    job_lock,
    run_job,
    worst_exit,
)
from jobs.spec import JobSpec, RemoteSpec
from jobs.state import RunRecord, StateDB
from transfer import AuthError, Drive, FerryError, PacerConfig, RemoteConfig, TransferConfig

if _QUIET_SIGINT:
    signal.signal(signal.SIGINT, signal.default_int_handler)

__all__ = ["main"]

_SECRET_TIMEOUT_S = 60
_EXIT_PIPE = 128 + signal.SIGPIPE
# Cloudreve CE has no API rate limit (contract section 10), so calls may start 2 ms apart; the
# pacer still widens the gap on every throttle answer (429) and narrows it again on success.
_PACER = PacerConfig(min_sleep_s=0.002)


def _version() -> str:
    try:
        return version("cloudreve-ferry")
    except PackageNotFoundError:
        return "unknown"


def _positive_seconds(text: str) -> float:
    """Parse a number of seconds that must be finite and more than 0 (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferry", description="Batch transfers and migrations for Cloudreve v4 drives."
    )
    parser.add_argument("--version", action="version", version=f"ferry {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log per request and chunk")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check the config file; contacts nothing")
    p.add_argument("config", type=Path)
    p = sub.add_parser("plan", help="dry run: what a run would copy, skip and delete")
    p.add_argument("config", type=Path)
    p.add_argument("--job", required=True, help="the job to plan")
    p.add_argument("--limit", type=int, default=50, help="items listed per action (default 50)")
    p = sub.add_parser("run", help="run jobs (all by default)")
    p.add_argument("config", type=Path)
    p.add_argument("--job", action="append", default=[], help="run only this job (repeatable)")
    p.add_argument(
        "--stats-interval",
        type=_positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds between stats_reported log lines (default 10)",
    )
    p.add_argument("--no-progress", action="store_true", help="log stats lines, draw no bars")
    p.add_argument(
        "--due",
        action="store_true",
        help="skip jobs whose schedule has not come round since their last run",
    )
    p = sub.add_parser("status", help="last run of each job, failed items, next schedule")
    p.add_argument("config", type=Path)
    p = sub.add_parser("history", help="past runs, newest first")
    p.add_argument("config", type=Path)
    p.add_argument("--job", help="only this job")
    p.add_argument("--limit", type=int, default=20)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ferry`` command line and return its exit code."""
    try:
        code = _command(argv)
        # Output still buffered for a pipe is written here, where a closed pipe is handled,
        # rather than at interpreter exit.
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        return _stdout_closed()
    except BaseExceptionGroup as group:
        if group.split(BrokenPipeError)[1] is not None:
            raise
        return _stdout_closed()
    return code


def _stdout_closed() -> int:
    """Exit quietly when the reader of stdout went away, as a process killed by SIGPIPE does."""
    # Workaround: the interpreter flushes stdout once more at exit and would print an
    # "Exception ignored" message for the closed pipe; the rest goes to /dev/null instead.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return _EXIT_PIPE


def _command(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    secrets: set[str] = set()
    _configure_logging(args.verbose, sys.stderr, secrets)
    try:
        config = load_config(args.config, _default_state_dir())
        if args.command == "validate":
            return _validate(config)
        if args.command == "status":
            return anyio.run(_status, config)
        if args.command == "history":
            return anyio.run(_history, config, args.job, args.limit)
        jobs = _select_jobs(config, [args.job] if args.command == "plan" else args.job)
        remotes = _resolve_remotes(config, jobs, secrets)
        if args.command == "plan":
            return anyio.run(_plan, config, remotes, jobs[0], args.limit)
        return anyio.run(_run, config, remotes, jobs, args)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"ferry: config error: {_issue_text(issue)}", file=sys.stderr)
        return EXIT_USAGE
    except SecretError as exc:
        print(f"ferry: secret error: {exc.issue}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        raise
    except (OSError, sqlite3.Error) as exc:
        # The state folder or database is unusable (permissions, a file in the way, disk full).
        print(f"ferry: state error in {args.config}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _issue_text(issue: ConfigIssue) -> str:
    """Show an issue as ``file:line: key: message``, or ``file: message`` for the whole file."""
    # Problems with the file itself (it cannot be read) have line 0 and no key.
    if issue.line == 0:
        return f"{issue.file}: {issue.message}"
    return str(issue)


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ferry"


def _configure_logging(verbose: bool, stream: TextIO, secrets: MutableSet[str]) -> None:
    """JSON lines when stderr is not a terminal, coloured console lines otherwise."""
    tty = stream.isatty()
    renderer: Processor = (
        # Tracebacks without local variables, which may hold a password or a token.
        structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
        )
        if tty
        else structlog.processors.JSONRenderer()
    )
    level = logging.DEBUG if verbose else (logging.WARNING if tty else logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redactor(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def _redactor(secrets: MutableSet[str]) -> Processor:
    """Replace every known secret inside string values with ``***`` (defence in depth)."""

    def redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        if not secrets:
            return event
        for key, value in event.items():
            if isinstance(value, str):
                for secret in secrets:
                    value = value.replace(secret, "***")
                event[key] = value
        return event

    return redact


def _validate(config: AppConfig) -> int:
    print(f"{_shown(config.file)}: OK, {len(config.remotes)} remote(s), {len(config.jobs)} job(s)")
    for job in config.jobs:
        mode = f" ({job.mode})" if job.kind == "sync" else ""
        print(f"  {job.name}: {job.kind}{mode} {_shown(job.source)} -> {_shown(job.target)}")
    print(f"  state: {_shown(config.state_dir)}")
    return EXIT_DONE


def _shown(path: object) -> str:
    """Return a path as one printable line: bytes that are not UTF-8 appear as ``\\xff``, and
    control characters escaped (``\\n``, ``\\t``, ``\\x1b``).

    A file name may hold a newline or a terminal escape; printed raw, one item would read as
    two lines, or recolour the terminal.
    """
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) == "Cc" else ch
        for ch in display_path(str(path))
    )


def _select_jobs(config: AppConfig, names: Sequence[str]) -> list[JobSpec]:
    if not names:
        if not config.jobs:
            raise ConfigError([config.issue(("jobs",), "the config defines no [[jobs]]")])
        return list(config.jobs)
    selected: list[JobSpec] = []
    for name in dict.fromkeys(names):  # a job named twice runs once
        job = config.job(name)
        if job is None:
            known = ", ".join(j.name for j in config.jobs) or "none"
            raise ConfigError([config.issue(("jobs",), f"no job named {name!r} (known: {known})")])
        selected.append(job)
    return selected


def _resolve_remotes(
    config: AppConfig, jobs: Sequence[JobSpec], secrets: set[str]
) -> dict[str, RemoteConfig]:
    """Build the :class:`RemoteConfig` of each remote the jobs use, reading their secrets."""
    remotes: dict[str, RemoteConfig] = {}
    for job in jobs:
        name = job.target.remote or job.source.remote
        if name is None or name in remotes:
            continue
        spec = config.remotes[name]
        password = _secret(config, name, spec)
        secrets.add(password)
        totp = None
        if spec.totp_secret_env is not None:
            totp = _env_secret(config, name, "totp_secret_env", spec.totp_secret_env)
            secrets.add(totp)
        remotes[name] = RemoteConfig(
            url=spec.url,
            email=spec.email,
            password=password,
            totp_secret=totp,
            verify_tls=spec.verify_tls,
            ca_bundle=spec.ca_bundle,
        )
    return remotes


def _secret(config: AppConfig, name: str, spec: RemoteSpec) -> str:
    if spec.password_env is not None:
        return _env_secret(config, name, "password_env", spec.password_env)
    assert spec.password_command is not None
    loc = ("remotes", name, "password_command")
    try:
        done = subprocess.run(
            spec.password_command,
            capture_output=True,
            text=True,
            timeout=_SECRET_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SecretError(
            config.issue(loc, f"cannot run the command: {type(exc).__name__}")
        ) from exc
    password = done.stdout.strip()
    if done.returncode != 0:
        raise SecretError(config.issue(loc, f"the command exited with status {done.returncode}"))
    if not password:
        raise SecretError(config.issue(loc, "the command printed nothing"))
    return password


def _env_secret(config: AppConfig, remote: str, key: str, variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        state = "is not set" if value is None else "is empty"
        raise SecretError(
            config.issue(("remotes", remote, key), f"environment variable {variable} {state}")
        )
    return value


class _Connector:
    """Opens a signed-in :class:`transfer.Drive` for the remote side of a job."""

    def __init__(self, config: AppConfig, remotes: dict[str, RemoteConfig]) -> None:
        self._config = config
        self._remotes = remotes

    @asynccontextmanager
    async def __call__(self, job: JobSpec, limits: DriveOptions) -> AsyncIterator[DriveLike]:
        name = job.target.remote or job.source.remote
        assert name is not None
        tokens = self._config.state_dir / "tokens"
        await anyio.Path(tokens).mkdir(parents=True, exist_ok=True, mode=0o700)
        async with Drive.connect(
            self._remotes[name],
            token_cache=tokens / f"{name}.json",
            pacer=_PACER,
            transfer=TransferConfig(
                chunk_concurrency=job.chunk_concurrency,
                file_retries=job.retries,
                save_thumbnails=job.thumbnails is not False,
            ),
            up_limit=limits.up,
            down_limit=limits.down,
            on_retry=limits.on_retry,
        ) as drive:
            yield drive


def _state_path(config: AppConfig) -> Path:
    return config.state_dir / "state.db"


async def _plan(
    config: AppConfig, remotes: dict[str, RemoteConfig], job: JobSpec, limit: int
) -> int:
    """Plan ``job`` against the live listings and print the decisions; transfers nothing."""
    connect = _Connector(config, remotes)
    try:
        with job_lock(config.state_dir, job.name):
            return await _plan_locked(config, connect, job, limit)
    except JobLocked as exc:
        print(f"ferry: {exc}", file=sys.stderr)
        return EXIT_LOCKED


async def _plan_locked(config: AppConfig, connect: _Connector, job: JobSpec, limit: int) -> int:
    async with StateDB.open(_state_path(config)) as db:
        run_id = await db.start_run(await db.job_id(job.name))
        # A dry run logs like a run: every line names its job and run.
        structlog.contextvars.bind_contextvars(job_id=job.name, run_id=run_id)
        # The dry run is stored with the exit code `ferry plan` returns, whatever ends it.
        code = 1
        try:
            code = await _plan_run(db, run_id, connect, job, limit)
        except BaseException as exc:
            code = _exit_code_of(exc)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await db.finish_run(run_id, status="dry_run", exit_code=code, counts={})
            structlog.contextvars.unbind_contextvars("job_id", "run_id")
    return code


async def _plan_run(db: StateDB, run_id: int, connect: _Connector, job: JobSpec, limit: int) -> int:
    """Plan and print ``job`` as the dry run ``run_id``; return the exit code of the plan."""
    try:
        async with connect(job, DriveOptions(None, None)) as drive:
            summary = await plan_job(db, run_id, job, drive, now=time.time)
    except AuthError as exc:
        print(f"ferry: authentication failed: {exc}", file=sys.stderr)
        return EXIT_AUTH
    except FerryError as exc:
        print(f"ferry: remote error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    await _print_plan(db, run_id, job, summary.actions, limit)
    for issue in summary.issues:
        print(f"  ! {issue.kind}: {_shown(issue.path)} {issue.detail}")

    return EXIT_DONE if summary.errors == 0 and summary.listing_complete else 1


def _exit_code_of(exc: BaseException) -> int:
    """Return the exit code :func:`main` gives a command that ``exc`` ends."""
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    if isinstance(exc, BrokenPipeError):
        return _EXIT_PIPE
    if isinstance(exc, OSError | sqlite3.Error):
        return EXIT_USAGE
    return 1


async def _print_plan(
    db: StateDB, run_id: int, job: JobSpec, actions: dict[str, tuple[int, int]], limit: int
) -> None:
    print(f"plan for job {job.name}: {_shown(job.source)} -> {_shown(job.target)}")
    for action in ("copy", "mkdir", "delete", "skip", "fail"):
        count, size = actions.get(action, (0, 0))
        print(f"  {action:7s} {count:8d} item(s) {_human(size):>12s}")
        if action != "skip":
            await _print_plan_rows(db, run_id, action, limit)


async def _print_plan_rows(db: StateDB, run_id: int, action: str, limit: int) -> None:
    """Print the first ``limit`` plan lines of ``action``, then how many lines were left out.

    A folder deleted whole is one line however many files it counts as, so the lines left out
    are counted from the plan rows, not from the item count.
    """
    shown = 0
    async with aclosing(db.plan_pages(run_id, action)) as pages:
        async for page in pages:
            for row in page[: limit - shown]:
                extra = " (new version)" if row.overwrite else ""
                reason = "" if row.reason == "new" else f" [{row.reason}]"
                print(f"    {_shown(row.key)} -> {_shown(row.dst)}{extra}{reason}")
                shown += 1
            if shown >= limit:
                break
    hidden = await db.plan_row_count(run_id, action) - shown
    if hidden > 0:
        print(f"    ... and {hidden} more")


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


async def _run(
    config: AppConfig,
    remotes: dict[str, RemoteConfig],
    jobs: list[JobSpec],
    args: argparse.Namespace,
) -> int:
    """Run the jobs one after another; SIGINT/SIGTERM stop them with state saved."""
    interrupt = Interrupt()
    current = _Current()
    codes: list[int] = []
    connect = _Connector(config, remotes)
    use_bars = sys.stderr.isatty() and not args.no_progress
    failure: OSError | sqlite3.Error | None = None
    not_due: list[str] = []
    async with StateDB.open(_state_path(config)) as db, anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, tg.cancel_scope, interrupt, db, current)
        try:
            for job in jobs:
                if args.due and not await _is_due(db, job, datetime.now(), not_due):
                    continue
                current.job = job.name
                codes.append(await _run_locked(config, db, job, connect, use_bars, interrupt, args))
                current.job = None
            if args.due and not codes:
                print(f"no job is due: {'; '.join(not_due)}")
        except BrokenPipeError:
            raise
        except (OSError, sqlite3.Error) as exc:
            # Raised outside the task group, so _command reports it as a state error rather
            # than the group's traceback.
            failure = exc
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if interrupt.signum is not None:
        return 128 + interrupt.signum
    return worst_exit(codes)


async def _is_due(
    db: StateDB, job: JobSpec, now: datetime, not_due: list[str] | None = None
) -> bool:
    """True when ``job`` has a schedule and never ran, or its next slot after the last run passed.

    A job without a schedule is never due. For a job that is not due, a phrase saying when it is
    next due is appended to ``not_due``.
    """
    log = structlog.get_logger()
    if job.schedule is None:
        log.info("job_not_due", job_id=job.name, next_due=None)
        if not_due is not None:
            not_due.append(f"{job.name} has no schedule")
        return False
    due = _next_due(await db.last_run(job.name), job.schedule)
    if due is not None and due > now:
        log.info("job_not_due", job_id=job.name, next_due=due.isoformat())
        if not_due is not None:
            not_due.append(f"{job.name} next at {due:%Y-%m-%d %H:%M} ({job.schedule})")
        return False

    return True


def _next_due(last: RunRecord | None, schedule: str) -> datetime | None:
    """The first slot of ``schedule`` after the ``last`` run; None when it never ran (due now)."""
    if last is None:
        return None
    return croniter(schedule, datetime.fromtimestamp(last.started_at)).get_next(datetime)


async def _run_locked(
    config: AppConfig,
    db: StateDB,
    job: JobSpec,
    connect: _Connector,
    bars: bool,
    interrupt: Interrupt,
    args: argparse.Namespace,
) -> int:
    reporter: Reporter = RichReporter(sys.stderr) if bars else LogReporter()
    started = time.time()
    try:
        with job_lock(config.state_dir, job.name):
            outcome = await run_job(
                db,
                job,
                connect,
                reporter=reporter,
                interrupt=interrupt,
                stats_interval_s=min(args.stats_interval, 0.5) if bars else args.stats_interval,
            )
    except JobLocked as exc:
        print(f"ferry: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except BaseException:
        if interrupt.signum is not None:
            with anyio.CancelScope(shield=True):
                await _print_interrupted(db, job, started)
        raise
    record = await db.run(outcome.run_id)
    assert record is not None
    _print_run(record)
    return outcome.exit_code


async def _print_interrupted(db: StateDB, job: JobSpec, started: float) -> None:
    """Print the summary of the run of ``job`` a signal stopped, if it had begun."""
    runs = await db.runs(job.name, limit=1)
    # A signal that came before the run was recorded leaves an older run the newest.
    if runs and runs[0].started_at >= started and runs[0].status == "interrupted":
        _print_run(runs[0])


def _print_run(record: RunRecord) -> None:
    """Print one line on what a finished or interrupted run did."""
    elapsed = (record.finished_at or time.time()) - record.started_at
    print(
        f"job {record.job}: {record.status} (exit {record.exit_code}),"
        f" {record.transfers} file(s) / {_human(record.bytes)} transferred,"
        f" {record.checks} unchanged, {record.deletes} deleted, {record.errors} failed,"
        f" {elapsed:.1f} s" + (f" - {record.message}" if record.message else ""),
        flush=True,
    )


@dataclass(slots=True)
class _Current:
    """The job ``ferry run`` is running now (None between jobs), for the signal watcher."""

    job: str | None = None


async def _watch_signals(
    scope: anyio.CancelScope, interrupt: Interrupt, db: StateDB, current: _Current
) -> None:
    """Stop the run at SIGINT or SIGTERM, logging which job and run it stops."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            names: dict[str, object] = {}
            if current.job is not None:
                # The run's own task binds these; this task reads them from the state instead.
                runs = await db.runs(current.job, limit=1)
                running = runs[0] if runs and runs[0].status == "running" else None
                names = {"job_id": current.job, "run_id": running.id if running else None}
            structlog.get_logger().warning(
                "run_interrupted", signal=signal.Signals(signum).name, **names
            )
            interrupt.signum = signum
            scope.cancel()
            return


async def _status(config: AppConfig) -> int:
    """Print each job's last run (not a dry run): its outcome, issues and failed items."""
    async with StateDB.open(_state_path(config)) as db:
        for job in config.jobs:
            last = await db.last_run(job.name)
            line = f"{job.name}: "
            if last is None:
                line += "never run"
            else:
                when = datetime.fromtimestamp(last.started_at).strftime("%Y-%m-%d %H:%M:%S")
                line += (
                    f"last run #{last.id} {when} {last.status} (exit {last.exit_code}),"
                    f" {last.transfers} transferred, {last.errors} error(s)"
                    + (f" - {last.message}" if last.message else "")
                )
            if job.schedule:
                due = _next_due(last, job.schedule)
                if due is None or due <= datetime.now():
                    line += f"; due now ({job.schedule})"
                else:
                    line += f"; next due {due:%Y-%m-%d %H:%M} ({job.schedule})"
            print(line)
            if last is not None:
                await _print_run_items(db, job.name, last.id)
    return EXIT_DONE


async def _print_run_items(db: StateDB, job: str, run_id: int) -> None:
    """Print what one run did to items and what failed in it, at most 10 lines of each."""
    counts = await db.item_counts(job, run_id)
    if counts:
        print("    items: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    for issue in await db.run_issues(run_id, limit=10):
        detail = f" ({issue.detail})" if issue.detail else ""
        print(f"    ! {issue.kind}: {_shown(issue.path)}{detail}")
    for key, attempts, error in await db.failed_items(job, limit=10, run_id=run_id):
        print(f"    failed x{attempts}: {_shown(key)}: {error}")


async def _history(config: AppConfig, job: str | None, limit: int) -> int:
    if job is not None and config.job(job) is None:
        raise ConfigError([config.issue(("jobs",), f"no job named {job!r}")])
    async with StateDB.open(_state_path(config)) as db:
        print(
            f"{'run':>5} {'job':20s} {'started':19s} {'status':13s} {'exit':>4} "
            f"{'files':>7} {'bytes':>11} {'errors':>6} {'deleted':>7} {'secs':>7}"
        )
        for r in await db.runs(job, limit=limit):
            started = datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M:%S")
            secs = "" if r.finished_at is None else f"{r.finished_at - r.started_at:.1f}"
            code = "" if r.exit_code is None else str(r.exit_code)
            print(
                f"{r.id:>5} {r.job:20s} {started:19s} {r.status:13s} {code:>4} "
                f"{r.transfers:>7} {_human(r.bytes):>11} {r.errors:>6} {r.deletes:>7} {secs:>7}"
            )
    return EXIT_DONE
