"""Live progress of a run: rich bars on a terminal, a periodic ``stats_reported`` line otherwise.

A reporter is fed :class:`transfer.StatsSnapshot` values by the scheduler's stats timer; it never
reads the stats itself.
"""

from __future__ import annotations

from typing import Protocol, TextIO

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from transfer import StatsSnapshot

__all__ = ["LogReporter", "Reporter", "RichReporter", "snapshot_fields"]

log = structlog.get_logger()


def snapshot_fields(snap: StatsSnapshot) -> dict[str, object]:
    """Return the log keys of a snapshot (units in the key names, floats rounded)."""
    return {
        "bytes": snap.bytes,
        "resumed_bytes": snap.resumed_bytes,
        "total_bytes": snap.total_bytes,
        "transfers": snap.transfers,
        "checks": snap.checks,
        "errors": snap.errors,
        "retries": snap.retries,
        "in_flight": snap.in_flight,
        "speed_bps": round(snap.speed_bps, 1),
        "eta_s": None if snap.eta_s is None else round(snap.eta_s, 1),
        "elapsed_s": round(snap.elapsed_s, 2),
    }


class Reporter(Protocol):
    """Receives the run's planned totals once, then snapshots while it runs."""

    def start(self, job: str, files: int, total_bytes: int) -> None:
        """The transfer phase begins with ``files`` files and ``total_bytes`` to move."""
        ...

    def update(self, snap: StatsSnapshot) -> None:
        """Show the counters now."""
        ...

    def stop(self, snap: StatsSnapshot) -> None:
        """The transfer phase ended; show the final counters."""
        ...


class LogReporter:
    """Logs ``stats_reported`` at info level for every update (the timer sets the pace)."""

    def __init__(self) -> None:
        self._files = 0
        self._planned_bytes = 0

    def start(self, job: str, files: int, total_bytes: int) -> None:
        """Log the planned totals."""
        self._files, self._planned_bytes = files, total_bytes
        log.info("transfers_started", files=files, planned_bytes=total_bytes)

    def update(self, snap: StatsSnapshot) -> None:
        """Log the counters now, with the run's planned files and bytes."""
        log.info(
            "stats_reported",
            files=self._files,
            planned_bytes=self._planned_bytes,
            **snapshot_fields(snap),
        )

    def stop(self, snap: StatsSnapshot) -> None:
        """Log the final counters."""
        self.update(snap)


class RichReporter:
    """Draws one bar of bytes, labelled with files done, on a terminal (stderr)."""

    def __init__(self, stream: TextIO) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
        )
        self._task: TaskID | None = None
        self._job = ""
        self._files = 0

    def start(self, job: str, files: int, total_bytes: int) -> None:
        """Create the bar and start drawing."""
        self._job, self._files = job, files
        self._progress.start()
        self._task = self._progress.add_task(self._label(0), total=max(total_bytes, 1))

    def _label(self, done: int) -> str:
        return f"{self._job} {done}/{self._files} files"

    def update(self, snap: StatsSnapshot) -> None:
        """Move the bar to the counters now."""
        if self._task is None:
            return
        done = snap.transfers + snap.errors
        completed = snap.bytes + snap.resumed_bytes
        self._progress.update(self._task, completed=completed, description=self._label(done))

    def stop(self, snap: StatsSnapshot) -> None:
        """Draw the last state and stop."""
        self.update(snap)
        self._progress.stop()
