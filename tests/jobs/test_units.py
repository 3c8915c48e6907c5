"""Sizes, rates, durations and the time-of-day bandwidth table."""

from __future__ import annotations

from datetime import time

import pytest

from jobs.units import BandwidthSchedule, parse_duration, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("25MiB", 25 * 1024**2),
        ("1.5GB", 1_500_000_000),
        ("10k", 10 * 1024),
        ("512", 512),
        (4096, 4096),
        ("2 KiB", 2048),
        ("0", 0),
    ],
)
def test_parse_size_reads_binary_and_decimal_units(text: str | int, expected: int) -> None:
    """Binary suffixes count powers of 1024, decimal ones powers of 1000."""
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "12 parsecs", "-3", "1.2.3MB", -1])
def test_parse_size_rejects_garbage(text: str | int) -> None:
    """Unknown units, empty text and negatives raise ValueError."""
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_parse_rate_accepts_per_second_suffix_and_off() -> None:
    """A rate may end in /s; "off" means unlimited; 0 is refused."""
    assert parse_rate("2MiB/s") == 2 * 1024**2
    assert parse_rate("off") is None
    with pytest.raises(ValueError, match="off"):
        parse_rate("0")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("6h", 21600), ("1h30m", 5400), ("500ms", 0.5), (7, 7)]
)
def test_parse_duration_sums_parts(text: str | int, seconds: float) -> None:
    """Durations are sums of number+unit parts, or integer seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "6 hours", "h", "1x", "10s5"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    """Text that is not entirely number+unit parts is refused."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_bandwidth_table_picks_the_latest_slot_and_wraps() -> None:
    """The rate at a time is that of the latest slot before it, wrapping past midnight."""
    table = BandwidthSchedule.parse({"08:00": "512KiB", "19:00": "off"})
    assert table.rate_at(time(9, 0)) == 512 * 1024
    assert table.rate_at(time(20, 0)) is None
    assert table.rate_at(time(3, 0)) is None
    with pytest.raises(ValueError, match="HH:MM"):
        BandwidthSchedule.parse({"8am": "1MiB"})
