"""Fixtures for emulator tests: a running in-process emulator and a signed-in raw client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from emulator.policy import PolicyDriver, UploadHost
from emulator.testing import EmulatorHandle, running_emulator
from tests.emulator.apiclient import Api

USER = "user@example.com"
ADMIN = "admin@example.com"


@asynccontextmanager
async def no_drivers(host: UploadHost, data_dir: Path) -> AsyncIterator[dict[str, PolicyDriver]]:
    """Open no storage drivers: core tests need no object-store servers."""
    yield {}


@pytest.fixture
async def emu(tmp_path: Path) -> AsyncIterator[EmulatorHandle]:
    """A local-policy emulator with 4-byte chunks (admin + one user), without storage drivers."""
    async with running_emulator(tmp_path, chunk_size=4, drivers=no_drivers) as handle:
        yield handle


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def api(emu: EmulatorHandle, http: aiohttp.ClientSession) -> Api:
    """A raw client signed in as the normal user."""
    client = Api(http, emu.url)
    await client.sign_in(USER, emu.users[USER])
    return client
