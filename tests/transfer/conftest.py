"""Fixtures for transfer tests: an in-process emulator with small chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from emulator.testing import EmulatorHandle, running_emulator

CHUNK = 64 * 1024


@pytest.fixture
async def emu(tmp_path: Path) -> AsyncIterator[EmulatorHandle]:
    """A local-policy emulator with 64 KiB chunks."""
    async with running_emulator(tmp_path, chunk_size=CHUNK) as handle:
        yield handle
