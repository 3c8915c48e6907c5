"""End-to-end round trips through local, relay and remote policies (contract 6, 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.testing import running_emulator
from tests.transfer.conftest import CHUNK
from tests.transfer.roundtrip import connected, roundtrip


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["local", "relay", "remote"])
async def test_s6_roundtrip_case_names_is_byte_identical(tmp_path: Path, policy: str) -> None:
    """A tree of case names and edge sizes comes back byte-identical through each policy."""
    async with (
        running_emulator(tmp_path, policy=policy, chunk_size=CHUNK) as emu,
        connected(emu, tmp_path) as drive,
    ):
        await roundtrip(drive, tmp_path, chunk_size=CHUNK)
