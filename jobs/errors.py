"""Errors raised by the jobs layer; each maps to one ``ferry`` exit code.

::

    JobsError
    ├── ConfigError(issues)     exit 2: the config file or a job spec is invalid
    ├── SecretError(issue)      exit 2: a password_env / password_command gave no secret
    └── JobLocked(job, lock)    exit 4: another run of the same job holds its lock

Errors from ``transfer`` (authentication, unreachable server, quota) keep their own types; the
CLI maps them to exit codes 3 and 6.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ConfigError", "ConfigIssue", "JobLocked", "JobsError", "SecretError"]


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file, located by file, line and dotted key."""

    file: Path
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


class JobsError(Exception):
    """Base of the errors raised by ``jobs``."""


class ConfigError(JobsError):
    """The config file cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


class SecretError(JobsError):
    """A remote's secret could not be obtained from its environment variable or command."""

    def __init__(self, issue: ConfigIssue) -> None:
        self.issue = issue
        super().__init__(str(issue))


class JobLocked(JobsError):
    """Another process holds the lock of this job."""

    def __init__(self, job: str, lock: Path) -> None:
        self.job = job
        self.lock = lock
        super().__init__(f"job {job!r} is already running (lock {lock} is held)")
