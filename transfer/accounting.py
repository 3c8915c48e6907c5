"""Transfer accounting: one :class:`Stats` per run, a handle per transfer, and bandwidth limits.

Workers get a byte-count callback (``handle.add_bytes``); only the scheduler and operations hold
the :class:`Stats`. Nothing here does I/O.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from transfer.errors import FerryError

__all__ = ["BandwidthLimiter", "Stats", "StatsSnapshot", "TransferHandle"]


class BandwidthLimiter:
    """A token bucket shared by every worker of one direction (one for upload, one for download).

    The bucket starts empty and holds at most one second of tokens, so the average over any run
    stays at the rate (a full bucket at the start would add a free second of data). A request
    for more bytes than the bucket holds is granted by going into debt, so large chunks never
    stall forever.
    """

    def __init__(
        self,
        rate_bytes_per_s: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if rate_bytes_per_s <= 0:
            raise ValueError("rate_bytes_per_s must be positive")
        self.rate_bytes_per_s = rate_bytes_per_s
        self._clock = clock
        self._sleep = sleep
        self._tokens = 0.0
        self._updated = clock()
        self._lock = anyio.Lock()

    async def acquire(self, nbytes: int) -> None:
        """Wait until ``nbytes`` may be sent or received under the rate."""
        if nbytes <= 0:
            return
        async with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._updated)
            self._updated = now
            cap = float(self.rate_bytes_per_s)
            self._tokens = min(cap, self._tokens + elapsed * self.rate_bytes_per_s)
            self._tokens -= nbytes
            if self._tokens < 0:
                await self._sleep(-self._tokens / self.rate_bytes_per_s)


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """A frozen view of a run's counters, for the periodic log line and the state database."""

    bytes: int
    """Bytes moved by this run."""
    resumed_bytes: int
    """Bytes that earlier runs (or earlier attempts) left at the destination and this run kept."""
    total_bytes: int
    transfers: int
    checks: int
    errors: int
    fatal_errors: int
    retries: int
    in_flight: int
    speed_bps: float
    eta_s: float | None
    elapsed_s: float


class TransferHandle:
    """One transfer in progress; finish it with :meth:`done` in a ``finally`` block."""

    def __init__(self, stats: Stats, path: str, size: int) -> None:
        self.path = path
        self.size = size
        self.bytes = 0
        self.resumed = 0
        self._stats = stats
        self._finished = False

    def add_bytes(self, n: int) -> None:
        """Count ``n`` more bytes moved (negative when a retry re-reads bytes already counted)."""
        self.bytes += n
        self._stats._add_bytes(n)

    def add_resumed(self, n: int) -> None:
        """Note that ``n`` bytes of this file are already at the destination when it resumes.

        Bytes this handle counted itself (an earlier attempt of the same run) are not counted
        twice, so the call may be repeated at each resume.
        """
        more = max(0, n - self.bytes) - self.resumed
        if more > 0:
            self.resumed += more
            self._stats._resumed += more

    def done(self, error: BaseException | None = None) -> None:
        """Mark the transfer finished; a second call is ignored."""
        if self._finished:
            return
        self._finished = True
        self._stats._finish(self, error)


class Stats:
    """Counters of one job run: bytes, transfers, checks, errors, retries, speed and ETA."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._bytes = 0
        self._resumed = 0
        self._total_bytes = 0
        self._transfers = 0
        self._checks = 0
        self._errors = 0
        self._fatal_errors = 0
        self._retries = 0
        self._in_flight: set[TransferHandle] = set()

    def start_transfer(self, path: str, size: int) -> TransferHandle:
        """Begin counting one transfer of ``size`` bytes."""
        handle = TransferHandle(self, path, size)
        self._in_flight.add(handle)
        self._total_bytes += max(0, size)
        return handle

    def record_error(self, exc: BaseException) -> None:
        """Count an error; ``fatal`` errors are counted apart so the scheduler can stop."""
        self._errors += 1
        if isinstance(exc, FerryError) and exc.fatal:
            self._fatal_errors += 1

    def record_retry(self) -> None:
        """Count one retried request."""
        self._retries += 1

    def add_check(self) -> None:
        """Count one object compared without a transfer."""
        self._checks += 1

    @property
    def fatal(self) -> bool:
        """True once a fatal error was recorded."""
        return self._fatal_errors > 0

    def snapshot(self) -> StatsSnapshot:
        """Return the counters now; speed is the average since the run started."""
        elapsed = max(0.0, self._clock() - self._started)
        speed = self._bytes / elapsed if elapsed > 0 else 0.0
        remaining = max(0, self._total_bytes - self._bytes - self._resumed)
        eta = remaining / speed if speed > 0 else (0.0 if remaining == 0 else None)
        return StatsSnapshot(
            bytes=self._bytes,
            resumed_bytes=self._resumed,
            total_bytes=self._total_bytes,
            transfers=self._transfers,
            checks=self._checks,
            errors=self._errors,
            fatal_errors=self._fatal_errors,
            retries=self._retries,
            in_flight=len(self._in_flight),
            speed_bps=speed,
            eta_s=eta,
            elapsed_s=elapsed,
        )

    def _add_bytes(self, n: int) -> None:
        self._bytes += n

    def _finish(self, handle: TransferHandle, error: BaseException | None) -> None:
        self._in_flight.discard(handle)
        if error is None:
            self._transfers += 1
        else:
            self.record_error(error)
