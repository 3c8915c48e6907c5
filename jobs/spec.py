"""Validated shapes of the config file: remotes, state, defaults and job specs.

The models are strict (no silent coercion: ``transfers = "4"`` is an error) and forbid unknown
keys. Each value that has a human syntax (sizes, rates, durations, globs, cron) is parsed here,
so a job that validates can run without further checks. Cross-field rules (which side is
remote, which remote exists) live in :mod:`jobs.config`, which knows the whole file.
"""

from __future__ import annotations

import re
import shlex
import ssl
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from croniter import croniter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from jobs.filters import GlobError, compile_glob
from jobs.units import BandwidthSchedule, parse_duration, parse_size

__all__ = [
    "REMOTE_RE",
    "DefaultsSpec",
    "Endpoint",
    "JobSpec",
    "RemoteSpec",
    "StateSpec",
    "parse_endpoint",
]

REMOTE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):(.*)$")
_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of a job: a path on a named remote, or a local folder (``remote`` is None)."""

    remote: str | None
    path: str

    @property
    def is_remote(self) -> bool:
        """True when this side is a drive."""
        return self.remote is not None

    def __str__(self) -> str:
        return f"{self.remote}:{self.path}" if self.remote else self.path


def parse_endpoint(text: str, base: Path) -> Endpoint:
    """Parse ``REMOTE:/path`` or a local path (relative paths resolve against ``base``).

    Raises:
        ValueError: empty text, or a remote path that is not absolute or contains ``..``.
    """
    if not text.strip():
        raise ValueError("must not be empty")
    match = REMOTE_RE.match(text)
    if match is None:
        local = Path(text).expanduser()
        return Endpoint(None, str(local if local.is_absolute() else (base / local).resolve()))
    remote, path = match.groups()
    if not path.startswith("/"):
        raise ValueError(f"remote path {path!r} must start with '/' (write {remote}:/{path})")
    if ".." in PurePosixPath(path).parts:
        raise ValueError(f"remote path {path!r} must not contain '..'")
    normalized = "/" + "/".join(p for p in path.split("/") if p and p != ".")

    return Endpoint(remote, normalized)


def _size(value: object) -> int:
    if not isinstance(value, int | str):
        raise ValueError("expected a size such as 25MiB or an integer of bytes")
    return parse_size(value)


def _duration(value: object) -> float:
    if not isinstance(value, int | str):
        raise ValueError("expected a duration such as 90s, 6h or 1h30m")
    return parse_duration(value)


def _bwlimit(value: object) -> BandwidthSchedule:
    if isinstance(value, BandwidthSchedule):
        return value
    if not isinstance(value, int | str | dict):
        raise ValueError("expected a rate such as 2MiB, or a table of HH:MM = rate")
    return BandwidthSchedule.parse(value)


def _globs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of glob strings")
    for pattern in value:
        try:
            compile_glob(pattern)
        except GlobError as exc:
            raise ValueError(str(exc)) from exc
    return tuple(value)


def _command(value: object) -> tuple[str, ...]:
    """Return a command's argv from a list of strings, or from one string split with shell
    quoting rules (``shlex``); either way the command later runs without a shell."""
    if isinstance(value, str):
        _refuse_shell_operators(value)
        value = shlex.split(value)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a command as a list of strings or one string")
    if not value:
        raise ValueError("the command is empty")
    return tuple(value)


def _refuse_shell_operators(command: str) -> None:
    """Refuse a command string whose unquoted ``|``, ``;``, ``&&``, ``>`` ... would only work in
    a shell: without one they would reach the program as plain arguments."""
    lexer = shlex.shlex(command, posix=False, punctuation_chars=True)
    lexer.whitespace_split = True
    operators = [token for token in lexer if token and not token.strip("();<>|&")]
    if operators:
        raise ValueError(
            f"the command runs without a shell, so {operators[0]!r} would be passed as an"
            ' argument; use a list such as ["sh", "-c", "..."] if a shell is needed'
        )


Size = Annotated[int, BeforeValidator(_size)]
Duration = Annotated[float, BeforeValidator(_duration)]
BwLimit = Annotated[BandwidthSchedule, BeforeValidator(_bwlimit)]
Globs = Annotated[tuple[str, ...], BeforeValidator(_globs)]
Compare = Literal["size-mtime", "size", "checksum"]
OnConflict = Literal["skip", "overwrite", "rename", "fail"]
# What a limit of 0 would do: nothing useful, so it is refused.
_ZERO_LIMITS = {
    "max_transfer": "a max_transfer of 0 would stop every run before its first file",
    "max_duration": "a max_duration of 0 would stop every run as it starts",
    "max_age": "a max_age of 0 would leave out every file",
}
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True)


class RemoteSpec(BaseModel):
    """``[remotes.NAME]``: where a drive is and how to sign in; secrets stay outside the file."""

    model_config = _STRICT

    url: str
    email: str = Field(min_length=3)
    password_env: str | None = None
    password_command: Annotated[tuple[str, ...], BeforeValidator(_command)] | None = None
    totp_secret_env: str | None = None
    verify_tls: bool = True
    ca_bundle: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("ca_bundle", mode="before")
    @classmethod
    def _ca(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            raise ValueError("expected a path string")
        path = Path(value).expanduser()
        base = (info.context or {}).get("base", Path.cwd())
        path = path if path.is_absolute() else (base / path).resolve()
        # Loading it here (local, contacts nothing) turns a missing or malformed bundle into a
        # config error instead of a crash when the first connection is opened.
        try:
            ssl.create_default_context(cafile=str(path))
        except OSError as exc:  # ssl.SSLError included
            reason = exc.strerror or str(exc)
            raise ValueError(f"cannot load CA bundle {str(path)!r}: {reason}") from exc
        return path


class StateSpec(BaseModel):
    """``[state]``: where the state database, locks and token caches live."""

    model_config = _STRICT

    path: Path | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            raise ValueError("expected a path string")
        path = Path(value).expanduser()
        base = (info.context or {}).get("base", Path.cwd())
        return path if path.is_absolute() else (base / path).resolve()


class _Tunables(BaseModel):
    """Keys a job may set and ``[defaults]`` may preset for every job."""

    model_config = _STRICT

    include: Globs = ()
    exclude: Globs = ()
    min_size: Size | None = None
    max_size: Size | None = None
    max_age: Duration | None = None
    compare: Compare = "size-mtime"
    on_conflict: OnConflict = "overwrite"
    transfers: int = Field(default=4, ge=1, le=64)
    chunk_concurrency: int | None = Field(default=None, ge=1, le=64)
    bwlimit: BwLimit | None = None
    max_delete: int | None = Field(default=None, ge=0)
    max_transfer: Size | None = None
    max_duration: Duration | None = None
    retries: int = Field(default=3, ge=0, le=100)
    follow_symlinks: bool = False
    thumbnails: bool | Path = False
    """Downloads: also save each image's server thumbnail as ``<name>.thumb.jpg``; ``true``
    saves it beside the image, a path saves it into that folder (mirroring the tree)."""

    @field_validator("max_transfer", "max_duration", "max_age")
    @classmethod
    def _not_zero(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value == 0:
            raise ValueError(f"{_ZERO_LIMITS[str(info.field_name)]}; leave it unset for no limit")
        return value

    @field_validator("thumbnails", mode="before")
    @classmethod
    def _thumbnails(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, bool):
            return value
        if not isinstance(value, str) or not value:
            raise ValueError("expected true, false or a folder path")
        path = Path(value).expanduser()
        base = (info.context or {}).get("base", Path.cwd())
        return path if path.is_absolute() else (base / path).resolve()


class DefaultsSpec(_Tunables):
    """``[defaults]``: values every job starts from."""


class JobSpec(_Tunables):
    """One ``[[jobs]]`` entry, fully validated.

    ``kind`` fixes the direction: ``upload`` (local to remote), ``download`` (remote to local),
    or ``sync`` (either direction, chosen by which side is remote) with ``mode`` ``copy`` (never
    deletes) or ``mirror`` (deletes at the target what the source lacks, after an error-free
    run and at most ``max_delete`` items).
    """

    name: str = Field(pattern=_NAME_RE)
    kind: Literal["upload", "download", "sync"]
    mode: Literal["copy", "mirror"] = "copy"
    source: Endpoint
    target: Endpoint
    schedule: str | None = None

    @field_validator("source", "target", mode="before")
    @classmethod
    def _endpoint(cls, value: object, info: ValidationInfo) -> Endpoint:
        if not isinstance(value, str):
            raise ValueError("expected a string: REMOTE:/path or a local path")
        base = (info.context or {}).get("base", Path.cwd())
        return parse_endpoint(value, base)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r} (expected e.g. '0 3 * * *')")
        return value

    @property
    def upload(self) -> bool:
        """True when the job copies local files to a drive."""
        return self.target.is_remote
