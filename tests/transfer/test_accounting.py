"""Accounting: Stats, transfer handles, snapshots and the bandwidth limiter."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from transfer.accounting import BandwidthLimiter, Stats
from transfer.errors import NetworkError, QuotaExceeded


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.lowlevel.checkpoint()


def test_stats_count_bytes_transfers_errors_and_speed() -> None:
    """Snapshots reflect bytes, finished transfers, errors (fatal apart), retries and ETA."""
    clock = Clock()
    stats = Stats(clock=clock)
    a = stats.start_transfer("/a", 100)
    b = stats.start_transfer("/b", 100)
    a.add_bytes(100)
    b.add_bytes(50)
    stats.record_retry()
    stats.add_check()
    clock.now = 10.0
    a.done(None)
    b.done(QuotaExceeded(200, 40051, "full"))
    b.done(None)
    stats.record_error(NetworkError("x"))
    snap = stats.snapshot()
    assert (snap.bytes, snap.total_bytes, snap.transfers) == (150, 200, 1)
    assert (snap.errors, snap.fatal_errors, snap.retries, snap.checks) == (2, 1, 1, 1)
    assert snap.in_flight == 0
    assert snap.speed_bps == 15.0
    assert snap.eta_s == pytest.approx(50 / 15)
    assert stats.fatal


def test_eta_is_none_before_any_byte() -> None:
    """With no bytes moved yet and work left, the ETA is unknown."""
    stats = Stats(clock=Clock())
    stats.start_transfer("/a", 10)
    assert stats.snapshot().eta_s is None


@pytest.mark.anyio
async def test_bandwidth_limiter_holds_the_rate() -> None:
    """Sending 5 s worth of bytes through a 1000 B/s bucket takes 5 s of fake time, no burst."""
    clock = Clock()
    limiter = BandwidthLimiter(1000, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        await limiter.acquire(500)
    assert clock.now == pytest.approx(5.0)


def test_bandwidth_limiter_rejects_zero_rate() -> None:
    """A non-positive rate is a clear error."""
    with pytest.raises(ValueError, match="positive"):
        BandwidthLimiter(0)


def test_resumed_bytes_count_as_done_for_the_eta_but_not_for_the_speed() -> None:
    """Bytes an earlier run left are done for the ETA, not moved; a repeated resume adds none."""
    clock = Clock()
    stats = Stats(clock=clock)
    handle = stats.start_transfer("/big", 1000)
    handle.add_resumed(600)
    clock.now = 1.0
    handle.add_bytes(100)
    snap = stats.snapshot()
    assert (snap.bytes, snap.resumed_bytes) == (100, 600)
    assert snap.speed_bps == pytest.approx(100.0)
    assert snap.eta_s == pytest.approx(3.0)
    handle.add_resumed(700)  # a retry resumes the 600 plus the 100 this run sent
    assert stats.snapshot().resumed_bytes == 600
    handle.add_bytes(300)
    handle.done()
    assert stats.snapshot().eta_s == 0.0
