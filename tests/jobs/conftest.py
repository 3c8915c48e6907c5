"""Fixtures for the jobs tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Undo the logging setup of in-process `ferry` calls (it binds the captured stderr)."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
