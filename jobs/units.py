"""Human-readable sizes, rates, durations and the time-of-day bandwidth table.

Sizes read like ``25MiB``, ``1.5GB`` or a plain integer of bytes. Decimal suffixes (``KB``,
``MB``, ``GB``, ``TB``) count powers of 1000; binary ones (``KiB`` … ``TiB``) and the short
rclone-style ``K``/``M``/``G``/``T`` count powers of 1024. Rates are sizes per second, with an
optional ``/s``; ``off`` means unlimited. Durations read like ``90s``, ``6h``, ``1h30m``, ``7d``
or a plain integer of seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time

__all__ = ["BandwidthSchedule", "parse_duration", "parse_rate", "parse_size"]

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "K": 1024,
    "M": 1024**2,
    "G": 1024**3,
    "T": 1024**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_CLOCK_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_size(value: int | str) -> int:
    """Return a byte count from an integer or a string such as ``25MiB`` or ``1.5GB``.

    Raises:
        ValueError: the value is negative, empty or has an unknown unit.
    """
    if isinstance(value, bool):
        raise ValueError("expected a size such as 25MiB, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value
    match = _SIZE_RE.match(value)
    if match is None:
        raise ValueError(f"invalid size {value!r}: expected a number and a unit such as 25MiB")
    number, unit = match.groups()
    factor = _SIZE_UNITS.get(unit.upper())
    if factor is None:
        raise ValueError(f"invalid size {value!r}: unknown unit {unit!r} (use B, KiB, MB, GiB …)")

    return int(float(number) * factor)


def parse_rate(value: int | str) -> int | None:
    """Return bytes per second from ``2MiB``, ``2MiB/s`` or an integer; None for ``off``.

    Raises:
        ValueError: the rate is not a valid size, or is zero.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "off":
            return None
        if text.lower().endswith("/s"):
            text = text[:-2]
        value = text
    rate = parse_size(value)
    if rate == 0:
        raise ValueError('a rate of 0 would stall every transfer; use "off" for no limit')

    return rate


def parse_duration(value: int | str) -> float:
    """Return seconds from ``90s``, ``6h``, ``1h30m``, ``500ms`` or an integer of seconds.

    Raises:
        ValueError: the text is not a sequence of number+unit parts, or is negative.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s or 6h, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return float(value)
    text = value.strip().lower()
    parts = _DURATION_PART_RE.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(
            f"invalid duration {value!r}: expected e.g. 90s, 6h, 1h30m (units ms s m h d w)"
        )

    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


@dataclass(frozen=True, slots=True)
class BandwidthSchedule:
    """A bandwidth limit that may change with the time of day.

    ``slots`` holds ``(start, rate)`` pairs sorted by start; a rate of None means unlimited. The
    rate in force at a time is that of the latest slot starting at or before it, wrapping around
    to the last slot of the previous day.
    """

    slots: tuple[tuple[time, int | None], ...]

    @classmethod
    def parse(cls, value: int | str | dict[str, object]) -> BandwidthSchedule:
        """Build a schedule from one rate or a table ``{"08:00" = "512KiB", "19:00" = "off"}``.

        Raises:
            ValueError: a clock time or a rate is invalid, or the table is empty.
        """
        if not isinstance(value, dict):
            return cls(((time(0, 0), parse_rate(value)),))
        if not value:
            raise ValueError("the bandwidth table is empty")
        slots: list[tuple[time, int | None]] = []
        for clock, rate in value.items():
            match = _CLOCK_RE.match(clock)
            if match is None:
                raise ValueError(f"invalid time of day {clock!r}: expected HH:MM")
            if not isinstance(rate, int | str) or isinstance(rate, bool):
                raise ValueError(f'rate for {clock} must be a string such as 2MiB or "off"')
            slots.append((time(int(match[1]), int(match[2])), parse_rate(rate)))

        return cls(tuple(sorted(slots)))

    def rate_at(self, moment: time) -> int | None:
        """Return the rate in bytes per second in force at ``moment`` (None = unlimited)."""
        current = self.slots[-1][1]
        for start, rate in self.slots:
            if start <= moment:
                current = rate

        return current
