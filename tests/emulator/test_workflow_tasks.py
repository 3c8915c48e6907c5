"""The task runner's state machine (contract 8.1), independent of any task type."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import pytest

from emulator.tasks import Progress, RetryPolicy, Task, TaskFailed, TaskRunner, TaskStatus

FAST = RetryPolicy(max_retry=2, backoff_min_s=0.01, backoff_factor=2, backoff_max_s=0.05)


@dataclass
class ScriptedJob:
    """A job whose steps follow a script of statuses or failures."""

    script: list[TaskStatus | TaskFailed]
    type: str = "create_archive"
    seen: list[TaskStatus] = field(default_factory=list)
    cleaned: bool = False
    gate: anyio.Event = field(default_factory=anyio.Event)

    async def step(self, task: Task) -> TaskStatus:
        self.seen.append(task.status)
        task.progress["archive_count"] = Progress(total=3, current=len(self.seen))
        await self.gate.wait()
        item = self.script.pop(0)
        if isinstance(item, TaskFailed):
            raise item
        if item is TaskStatus.SUSPENDING:
            task.resume_after(0, 0)
        return item

    def summary_props(self, task: Task) -> dict[str, object]:
        return {"failed": 0}

    async def cancel(self, task: Task) -> None:
        return None

    async def cleanup(self, task: Task) -> None:
        self.cleaned = True


def _status(task: Task) -> TaskStatus:
    """Read the status through a call so the type checker does not pin it."""
    return task.status


async def _wait_finished(task: Task) -> None:
    with anyio.fail_after(5):
        while True:
            if task.status.finished:
                return
            await anyio.sleep(0.005)


@pytest.mark.anyio
async def test_s8_1_life_cycle_queued_processing_suspending_completed() -> None:
    """A task starts queued, runs processing, suspends between steps and ends completed."""
    job = ScriptedJob([TaskStatus.SUSPENDING, TaskStatus.SUSPENDING, TaskStatus.COMPLETED])
    async with TaskRunner.open(retry=FAST) as runner:
        task = runner.submit(7, job)
        assert task.status is TaskStatus.QUEUED
        await anyio.sleep(0.01)
        assert _status(task) is TaskStatus.PROCESSING
        assert runner.live(task.id) is task
        job.gate.set()
        await _wait_finished(task)

    assert _status(task) is TaskStatus.COMPLETED
    assert job.seen == [TaskStatus.PROCESSING] * 3
    assert runner.live(task.id) is None
    assert task.progress == {}
    assert job.cleaned
    wire = task.to_json(str)
    assert wire["status"] == "completed"
    assert wire["summary"] == {"props": {"failed": 0}}
    assert "error" not in wire
    assert "retry_count" not in wire


@pytest.mark.anyio
async def test_s8_1_retryable_failure_is_retried_then_errors() -> None:
    """A non-critical failure is retried (retry_count, error_history) until the budget is spent."""
    job = ScriptedJob([TaskFailed("boom 1"), TaskFailed("boom 2"), TaskFailed("boom 3")])
    job.gate.set()
    async with TaskRunner.open(retry=FAST) as runner:
        task = runner.submit(7, job)
        await _wait_finished(task)

    assert _status(task) is TaskStatus.ERROR
    assert task.retry_count == 2
    assert task.error_history == ["boom 1", "boom 2"]
    assert task.error == "boom 3"
    assert task.to_json(str)["error_history"] == ["boom 1", "boom 2"]


@pytest.mark.anyio
async def test_s8_1_critical_failure_ends_at_once() -> None:
    """A critical failure is not retried."""
    job = ScriptedJob([TaskFailed("bad url", critical=True), TaskStatus.COMPLETED])
    job.gate.set()
    async with TaskRunner.open(retry=FAST) as runner:
        task = runner.submit(7, job)
        await _wait_finished(task)

    assert _status(task) is TaskStatus.ERROR
    assert task.retry_count == 0
    assert task.error == "bad url"


@pytest.mark.anyio
async def test_s8_1_error_text_redacts_signatures() -> None:
    """The error text of a TaskResponse hides sign= values."""
    job = ScriptedJob([TaskFailed("GET http://h/x?sign=abc%3D%3A12&y=1 failed", critical=True)])
    job.gate.set()
    async with TaskRunner.open(retry=FAST) as runner:
        task = runner.submit(7, job)
        await _wait_finished(task)

    assert "abc" not in str(task.to_json(str)["error"])
    assert "&y=1 failed" in str(task.to_json(str)["error"])


@pytest.mark.anyio
async def test_s8_1_shutdown_cancels_running_tasks_and_cleans_up() -> None:
    """Leaving the runner cancels a task blocked in a step and still runs its cleanup."""
    job = ScriptedJob([TaskStatus.COMPLETED])
    with anyio.fail_after(5):
        async with TaskRunner.open(retry=FAST) as runner:
            task = runner.submit(7, job)
            await anyio.sleep(0.01)

    assert job.cleaned
    assert runner.live(task.id) is None


class ManualClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.value = 1_000_000.0

    def now(self) -> float:
        return self.value


@dataclass
class LongSuspendJob:
    """Suspends for an hour once, then completes."""

    type: str = "remote_download"
    steps: int = 0

    async def step(self, task: Task) -> TaskStatus:
        self.steps += 1
        if self.steps == 1:
            task.resume_after(1_000_000.0, 3600)
            return TaskStatus.SUSPENDING
        return TaskStatus.COMPLETED

    def summary_props(self, task: Task) -> dict[str, object]:
        return {}

    async def cancel(self, task: Task) -> None:
        return None

    async def cleanup(self, task: Task) -> None:
        return None


@pytest.mark.anyio
async def test_s8_1_suspension_waits_on_the_emulator_clock() -> None:
    """A task suspended for an hour resumes as soon as the emulator clock passes resume_time."""
    clock = ManualClock()
    job = LongSuspendJob()
    async with TaskRunner.open(clock=clock, retry=FAST) as runner:
        task = runner.submit(7, job)
        await anyio.sleep(0.2)
        assert _status(task) is TaskStatus.SUSPENDING
        assert task.resume_time == 1_003_600
        clock.value += 3600
        await _wait_finished(task)

    assert _status(task) is TaskStatus.COMPLETED
    assert job.steps == 2
