"""The pacer: backoff, attack/decay, Retry-After shared by all workers, deadlines (BR-17/18)."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from transfer.config import PacerConfig
from transfer.errors import ApiError, NetworkError, RateLimited, ServerError
from transfer.pacer import Pacer, RetryEvent


class FakeClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        # Let every other task run before time moves, as a real sleep would.
        target = self.now + seconds
        self.sleeps.append(seconds)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        self.now = max(self.now, target)


def _pacer(clock: FakeClock, events: list[RetryEvent] | None = None, **cfg: float) -> Pacer:
    config = PacerConfig(min_sleep_s=0.0, **cfg)  # type: ignore[arg-type]
    hook = events.append if events is not None else None
    return Pacer(config, clock=clock, sleep=clock.sleep, rand=lambda: 1.0, on_retry=hook)


@pytest.mark.anyio
async def test_retries_retryable_errors_then_succeeds() -> None:
    """A retryable error is retried with growing backoff and the hook sees each retry."""
    clock = FakeClock()
    events: list[RetryEvent] = []
    pacer = _pacer(clock, events)
    calls = 0

    async def op() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ServerError(502, 502, "bad gateway")
        return "ok"

    assert await pacer.call(op, what="x") == "ok"
    assert calls == 3
    assert [e.attempt for e in events] == [2, 3]
    assert events[1].wait_s > events[0].wait_s


@pytest.mark.anyio
async def test_non_retryable_error_is_raised_at_once() -> None:
    """A permanent error is not retried."""
    clock = FakeClock()
    pacer = _pacer(clock)
    calls = 0

    async def op() -> None:
        nonlocal calls
        calls += 1
        raise ApiError(200, 40052, "bad name")

    with pytest.raises(ApiError):
        await pacer.call(op)
    assert calls == 1
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_gives_up_after_max_attempts() -> None:
    """After max_attempts the last error is raised."""
    clock = FakeClock()
    pacer = _pacer(clock, max_attempts=4)
    calls = 0

    async def op() -> None:
        nonlocal calls
        calls += 1
        raise NetworkError("reset")

    with pytest.raises(NetworkError):
        await pacer.call(op)
    assert calls == 4


@pytest.mark.anyio
async def test_backoff_is_capped_and_deadline_stops_retries() -> None:
    """Waits never exceed max_sleep_s, and a retry past the deadline is not attempted."""
    clock = FakeClock()
    pacer = _pacer(clock, max_attempts=50, max_sleep_s=2.0, deadline_s=10.0)

    async def op() -> None:
        raise NetworkError("reset")

    with pytest.raises(NetworkError):
        await pacer.call(op)
    assert max(clock.sleeps) <= 2.0
    assert clock.now - 1000.0 <= 10.0


@pytest.mark.anyio
async def test_br18_retry_after_pauses_every_worker() -> None:
    """429 Retry-After: 7 makes all workers wait >= 7 s; nothing starts during the pause."""
    clock = FakeClock()
    pacer = _pacer(clock)
    starts: list[float] = []
    limited = {"left": 1}

    async def op() -> None:
        starts.append(clock.now)
        if limited["left"]:
            limited["left"] -= 1
            raise RateLimited(429, 429, "slow", retry_after=7.0)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(pacer.call, op)
    assert starts[0] == 1000.0
    assert all(t >= 1007.0 for t in starts[1:])
    assert len(starts) == 5


@pytest.mark.anyio
async def test_attack_on_throttle_and_decay_on_success() -> None:
    """The gap grows after a throttle and shrinks back after successes."""
    clock = FakeClock()
    pacer = Pacer(
        PacerConfig(min_sleep_s=0.01, max_sleep_s=1.0),
        clock=clock,
        sleep=clock.sleep,
        rand=lambda: 0.0,
    )
    first = {"hit": True}

    async def op() -> None:
        if first["hit"]:
            first["hit"] = False
            raise RateLimited(429, 429, "slow")

    await pacer.call(op)
    grown = pacer.gap_s
    assert grown > 0.01
    for _ in range(30):
        await pacer.call(op)
    assert pacer.gap_s < grown
    assert pacer.gap_s >= 0.01
