"""Storage-policy drivers for every non-local policy type (see ``emulator.policy``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from emulator.policy import PolicyDriver, UploadHost


@asynccontextmanager
async def open_drivers(host: UploadHost, data_dir: Path) -> AsyncIterator[dict[str, PolicyDriver]]:
    """Start the drivers (and any storage servers behind them) for the app's lifetime.

    Yields a mapping from policy type to driver. Types missing from it are refused by the core.
    """
    yield {}
