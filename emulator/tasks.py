"""Workflow tasks: the state machine, the in-memory registry and the background runner.

A task is driven the way Cloudreve's queue drives it (``pkg/queue``): the runner calls the
task's :meth:`TaskJob.step` once per iteration. A step returns the next status:

- ``suspending``: the step set ``resume_time`` (unix seconds); the runner sleeps until then on the
  emulator clock and calls the step again
  (``queued -> processing -> (suspending <-> processing)*``);
- ``completed``, ``error`` or ``canceled``: the task is finished.

A step that raises :class:`TaskFailed` is retried like a queue retry (``retry_count`` grows, the
message goes to ``error_history``, the task suspends for a backoff) until the retry budget is
spent; ``critical=True`` (Cloudreve's ``CriticalErr``) ends the task at once with ``error``.

Progress (``GET /workflow/progress/{id}``) is only answered while a task is alive in the registry,
as the real server's in-memory task registry does; a finished task answers ``{}``.
"""

from __future__ import annotations

import enum
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskGroup

__all__ = [
    "Clock",
    "Progress",
    "RetryPolicy",
    "SystemClock",
    "Task",
    "TaskFailed",
    "TaskJob",
    "TaskRunner",
    "TaskStatus",
    "format_time",
]

log = structlog.get_logger("emulator.tasks")


class TaskStatus(enum.StrEnum):
    """Task status values of ``ent/task`` (contract 8.1)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUSPENDING = "suspending"
    ERROR = "error"
    CANCELED = "canceled"
    COMPLETED = "completed"

    @property
    def finished(self) -> bool:
        """Whether the status is final."""
        return self in (TaskStatus.ERROR, TaskStatus.CANCELED, TaskStatus.COMPLETED)


class Clock(Protocol):
    """The emulator's notion of now (``emulator.config.Clock``); tests move it forward."""

    def now(self) -> float:
        """Return unix seconds."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        """Return unix seconds."""
        return time.time()


def format_time(unix_s: float) -> str:
    """Format a timestamp as Go's ``time.Time`` JSON (RFC 3339 with offset)."""
    return datetime.fromtimestamp(unix_s, tz=UTC).isoformat()


class TaskFailed(Exception):
    """Raised by a step when an iteration fails.

    ``critical`` errors end the task at once; others are retried while the budget lasts.
    """

    def __init__(self, message: str, *, critical: bool = False) -> None:
        super().__init__(message)
        self.critical = critical


@dataclass(slots=True)
class Progress:
    """One entry of the progress map (``queue.Progress``)."""

    total: int = 0
    current: int = 0
    identifier: str = ""

    def to_json(self) -> dict[str, object]:
        """Return the wire form; ``identifier`` is always present, as in CE."""
        return {"total": self.total, "current": self.current, "identifier": self.identifier}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Queue retry settings (``queue_*_max_retry``, backoff factor and cap)."""

    max_retry: int = 5
    backoff_min_s: float = 0.1
    backoff_factor: float = 2.0
    backoff_max_s: float = 600.0

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (0-based), as jpillora/backoff computes it."""
        return min(self.backoff_min_s * math.pow(self.backoff_factor, attempt), self.backoff_max_s)


class TaskJob(Protocol):
    """The type-specific part of a task."""

    type: str

    async def step(self, task: Task) -> TaskStatus:
        """Run one iteration and return the next status.

        Returning ``SUSPENDING`` requires ``task.resume_time`` to be set.

        Raises:
            TaskFailed: the iteration failed.
        """
        ...

    def summary_props(self, task: Task) -> dict[str, object]:
        """The ``summary.props`` of the task for its type."""
        ...

    async def cancel(self, task: Task) -> None:
        """Ask the task to stop; it moves to ``canceled`` on its next check."""
        ...

    async def cleanup(self, task: Task) -> None:
        """Release what the task holds (temporary files) once it is finished."""
        ...


@dataclass(slots=True, eq=False)
class Task:
    """A workflow task and its public state."""

    id: int
    owner_id: int
    job: TaskJob
    created_at: float
    updated_at: float
    status: TaskStatus = TaskStatus.QUEUED
    phase: str = ""
    error: str = ""
    error_history: list[str] = field(default_factory=list)
    retry_count: int = 0
    duration_ms: int = 0
    resume_time: int = 0
    resume_at: float = 0.0
    progress: dict[str, Progress] = field(default_factory=dict)

    @property
    def type(self) -> str:
        """The task type (``remote_download``, ``create_archive``, ...)."""
        return self.job.type

    def resume_after(self, now: float, seconds: float) -> None:
        """Suspend the task until ``seconds`` after ``now``.

        ``resume_time`` (public, whole unix seconds) is rounded down as Go's ``Unix()`` does; the
        runner waits for the exact moment.
        """
        self.resume_at = now + seconds
        self.resume_time = int(self.resume_at)

    def to_json(self, encode_id: Callable[[int], str]) -> dict[str, object]:
        """Return the TaskResponse (contract 8.1); empty optional fields are omitted."""
        out: dict[str, object] = {
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
            "id": encode_id(self.id),
            "status": str(self.status),
            "type": self.type,
        }
        summary: dict[str, object] = {}
        if self.phase:
            summary["phase"] = self.phase
        props = self.job.summary_props(self)
        if props:
            summary["props"] = props
        out["summary"] = summary
        optional: dict[str, object] = {
            "error": _redact(self.error),
            "error_history": [_redact(e) for e in self.error_history],
            "duration": self.duration_ms,
            "resume_time": self.resume_time,
            "retry_count": self.retry_count,
        }
        out.update({k: v for k, v in optional.items() if v})
        return out


def _redact(text: str) -> str:
    """Hide ``sign=`` values in error text, as ``auth.RedactSensitiveValues`` does."""
    out: list[str] = []
    for part in text.split("sign="):
        if out:
            end = next((i for i, c in enumerate(part) if c in "& \"'\n"), len(part))
            part = "[REDACTED]" + part[end:]
        out.append(part)
    return "sign=".join(out)


class TaskRunner:
    """Owns every task: ids, the registry of live tasks, and the background iterations.

    Use :meth:`open` to get a runner bound to a task group; leaving it cancels every running
    task cleanly.
    """

    def __init__(
        self, tg: TaskGroup, clock: Clock, retry: RetryPolicy, *, idle_poll_s: float = 0.05
    ) -> None:
        self._tg = tg
        self.clock = clock
        self.retry = retry
        self._idle_poll_s = idle_poll_s
        self._ids = itertools.count(1)
        self._tasks: dict[int, Task] = {}
        self._live: set[int] = set()

    @classmethod
    @asynccontextmanager
    async def open(
        cls, clock: Clock | None = None, retry: RetryPolicy | None = None
    ) -> AsyncIterator[TaskRunner]:
        """Run a runner for the lifetime of the context."""
        async with anyio.create_task_group() as tg:
            runner = cls(tg, clock or SystemClock(), retry or RetryPolicy())
            try:
                yield runner
            finally:
                tg.cancel_scope.cancel()

    def submit(self, owner_id: int, job: TaskJob) -> Task:
        """Queue a new task and start running it in the background."""
        now = self.clock.now()
        task = Task(id=next(self._ids), owner_id=owner_id, job=job, created_at=now, updated_at=now)
        self._tasks[task.id] = task
        self._live.add(task.id)
        self._tg.start_soon(self._drive, task)
        return task

    def start_soon(self, func: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a helper coroutine (e.g. a download) in the runner's task group.

        A helper that crashes is logged; it does not take the runner (and the app) down.
        """
        self._tg.start_soon(self._guard, func)

    async def _guard(self, func: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await func()
        except Exception:
            log.exception("task_helper_crashed", helper=getattr(func, "__qualname__", repr(func)))

    def get(self, task_id: int) -> Task | None:
        """Return a task, finished or not, or None if the id is unknown."""
        return self._tasks.get(task_id)

    def live(self, task_id: int) -> Task | None:
        """Return a task that is still in the in-memory registry (not finished)."""
        return self._tasks.get(task_id) if task_id in self._live else None

    def list_for(self, owner_id: int) -> list[Task]:
        """Return the owner's tasks, newest first (by id, descending)."""
        return sorted(
            (t for t in self._tasks.values() if t.owner_id == owner_id),
            key=lambda t: t.id,
            reverse=True,
        )

    def _set_status(self, task: Task, status: TaskStatus) -> None:
        task.status = status
        task.updated_at = self.clock.now()

    async def _drive(self, task: Task) -> None:
        """Run iterations until the task is finished, then drop it from the live registry."""
        try:
            while not task.status.finished:
                self._set_status(task, TaskStatus.PROCESSING)
                nxt = await self._iterate(task)
                if nxt is TaskStatus.SUSPENDING:
                    self._set_status(task, nxt)
                    await self._wait_resume(task)
                    continue
                self._set_status(task, nxt)
            log.info("task_finished", task_id=task.id, type=task.type, status=str(task.status))
        finally:
            self._live.discard(task.id)
            task.progress = {}
            with anyio.CancelScope(shield=True):
                await task.job.cleanup(task)

    async def _iterate(self, task: Task) -> TaskStatus:
        """Run one step, converting a failure into a retry or a final ``error``."""
        started = self.clock.now()
        try:
            nxt = await task.job.step(task)
        except TaskFailed as exc:
            nxt = self._on_failure(task, exc)
        except Exception as exc:
            # The real queue recovers a panicking task as an error; the runner must not die.
            log.exception("task_crashed", task_id=task.id, type=task.type)
            nxt = self._on_failure(task, TaskFailed(f"internal error: {exc!r}", critical=True))
        task.duration_ms += int((self.clock.now() - started) * 1000)
        return nxt

    def _on_failure(self, task: Task, exc: TaskFailed) -> TaskStatus:
        message = str(exc)
        if not exc.critical and task.retry_count < self.retry.max_retry:
            delay = self.retry.delay(task.retry_count)
            task.error_history.append(message)
            task.retry_count += 1
            task.resume_after(self.clock.now(), delay)
            log.warning("task_retry_scheduled", task_id=task.id, error=message, wait_s=delay)
            return TaskStatus.SUSPENDING
        task.error = message
        log.error("task_failed", task_id=task.id, type=task.type, error=message)
        return TaskStatus.ERROR

    async def _wait_resume(self, task: Task) -> None:
        """Sleep on the clock until the task's resume moment has passed."""
        await anyio.lowlevel.checkpoint()
        while True:
            left = task.resume_at - self.clock.now()
            if left <= 0:
                return
            # Poll rather than sleep the whole gap: tests move the emulator clock forward.
            await anyio.sleep(min(self._idle_poll_s, left))
