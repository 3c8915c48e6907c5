"""Pacing, an open-call limit, backoff and ``Retry-After`` for every API call.

The pacer owns three things, as rclone's ``lib/pacer`` does:

* a gap between call starts that grows on a throttle (attack) and shrinks on success (decay),
  bounded by ``min_sleep_s`` and ``max_sleep_s``;
* an :class:`anyio.CapacityLimiter` on calls in flight;
* retries of errors marked ``retryable``, with capped exponential backoff and jitter, stopping at
  ``max_attempts`` or ``deadline_s``. A :class:`~transfer.errors.RateLimited` error with
  ``retry_after`` pauses *every* caller of the pacer until the time has passed.

The clock, the sleep function and the random source are constructor arguments, so tests run the
pacer with no real waiting. The pacer never parses responses and never imports accounting; it
reports each retry through ``on_retry``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from transfer.config import PacerConfig
from transfer.errors import FerryError, RateLimited

__all__ = ["Pacer", "RetryEvent"]

T = TypeVar("T")

_BACKOFF_BASE_S = 0.5


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """One scheduled retry: what failed, which attempt comes next, and the wait before it."""

    what: str
    attempt: int
    wait_s: float
    error: FerryError


class Pacer:
    """Runs calls under pacing, a concurrency limit and the retry policy of a :class:`PacerConfig`.

    One pacer is shared by all workers of one remote so that a throttle slows all of them.
    """

    def __init__(
        self,
        config: PacerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rand: Callable[[], float] = random.random,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._on_retry = on_retry
        self._limiter = anyio.CapacityLimiter(config.max_open)
        self._slot_lock = anyio.Lock()
        self._gap_s = config.min_sleep_s
        self._next_start = 0.0
        self._paused_until = 0.0

    def sibling(self) -> Pacer:
        """A pacer with the same settings, clock and hooks but its own open-call limit.

        Token refreshes use one so that workers holding every slot of this pacer while they wait
        for a refresh cannot starve it.
        """
        return Pacer(
            self.config,
            clock=self._clock,
            sleep=self._sleep,
            rand=self._rand,
            on_retry=self._on_retry,
        )

    @property
    def gap_s(self) -> float:
        """The current gap between call starts."""
        return self._gap_s

    @property
    def paused_until(self) -> float:
        """Clock time before which no call starts (a shared ``Retry-After`` pause)."""
        return self._paused_until

    async def call(self, op: Callable[[], Awaitable[T]], *, what: str = "") -> T:
        """Run ``op`` until it succeeds, fails for good, or runs out of attempts or time.

        Args:
            op: makes one attempt; raises a :class:`~transfer.errors.FerryError` on failure.
            what: names the call in retry events (no secrets: it is logged).

        Returns:
            what ``op`` returned.

        Raises:
            FerryError: the last error, when it is not retryable, when ``max_attempts`` were
                made, or when the next wait would pass ``deadline_s``.
        """
        started = self._clock()
        attempt = 1
        while True:
            async with self._limiter:
                await self._wait_for_slot()
                try:
                    result = await op()
                except FerryError as exc:
                    error = exc
                else:
                    self._decay()
                    return result
            wait_s = self._plan_retry(error, attempt, started)
            attempt += 1
            if self._on_retry is not None:
                self._on_retry(RetryEvent(what=what, attempt=attempt, wait_s=wait_s, error=error))
            await self._sleep(wait_s)

    def _plan_retry(self, error: FerryError, attempt: int, started: float) -> float:
        """Return the wait before the next attempt, or re-raise ``error`` when we stop."""
        if not error.retryable or attempt >= self.config.max_attempts:
            raise error
        wait_s = self._backoff(attempt)
        if isinstance(error, RateLimited):
            self._attack()
            if error.retry_after is not None:
                wait_s = max(wait_s, error.retry_after)
                self._paused_until = max(self._paused_until, self._clock() + error.retry_after)
        if self._clock() + wait_s - started > self.config.deadline_s:
            raise error

        return wait_s

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter: a random point in the upper half of the step."""
        base = max(self.config.min_sleep_s, _BACKOFF_BASE_S) * 2.0 ** (attempt - 1)
        capped = min(self.config.max_sleep_s, base)
        return capped / 2 + capped / 2 * self._rand()

    async def _wait_for_slot(self) -> None:
        """Wait until the shared pause is over and the gap since the last start has passed."""
        async with self._slot_lock:
            while True:
                now = self._clock()
                start_at = max(self._next_start, self._paused_until)
                if start_at <= now:
                    break
                await self._sleep(start_at - now)
            self._next_start = self._clock() + self._gap_s

    def _attack(self) -> None:
        self._gap_s = min(self.config.max_sleep_s, max(self._gap_s * 2, self.config.min_sleep_s))

    def _decay(self) -> None:
        self._gap_s = max(self.config.min_sleep_s, self._gap_s * 3 / 4)
