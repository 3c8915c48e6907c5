"""Declarative jobs, state, planner, scheduler and the ferry CLI.

The command line (:func:`main`, the ``ferry`` console script and ``python -m jobs``) is the
main surface; :func:`load_config`, :class:`AppConfig`, :class:`JobSpec` and :class:`StateDB`
are exported for tools that read a ferry config or its state database.
"""

from __future__ import annotations

from jobs.cli import main
from jobs.config import AppConfig, load_config
from jobs.spec import JobSpec
from jobs.state import StateDB

__all__ = ["AppConfig", "JobSpec", "StateDB", "load_config", "main"]
