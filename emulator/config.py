"""Emulator settings and its clock.

``EmulatorConfig`` holds every knob of ``python -m emulator serve`` and of
``emulator.testing.running_emulator``. ``Clock`` is the emulator's notion of now: token expiry,
upload-session expiry, lock expiry and URL-signature expiry all read it, so tests move time with
``Clock.advance`` instead of sleeping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

POLICY_TYPES = (
    "local",
    "relay",
    "remote",
    "s3",
    "onedrive",
    "cos",
    "obs",
    "oss",
    "qiniu",
    "upyun",
    "ks3",
)
DEFAULT_VERSION = "4.18.0"
MIB = 1 << 20


class ConfigError(ValueError):
    """A setting of the emulator is invalid; the message names the setting."""


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Settings of one emulator instance; defaults follow a fresh Cloudreve install.

    ``chunk_size`` 0 means the policy's default (25 MiB for local/remote, the driver's default for
    the others). ``quota`` is each user's ``max_storage`` in bytes (admins get 1 TB unless set).
    ``extra`` holds free-form settings read by add-on modules (e.g. the workflow routes).
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 5212
    users: tuple[tuple[str, str], ...] = ()
    admins: tuple[str, ...] = ()
    totp_secrets: tuple[tuple[str, str], ...] = ()
    policy: str = "local"
    chunk_size: int = 0
    chunk_concurrency: int = 1
    quota: int | None = None
    token_ttl: int = 3600
    refresh_ttl: int = 1209600
    session_ttl: int = 86400
    url_ttl: int = 3600
    server_version: str = DEFAULT_VERSION
    obfuscate_thumbs: bool = False
    pre_allocate: bool = True
    max_edit_size: int = 50 * MIB
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.policy not in POLICY_TYPES:
            raise ConfigError(
                f"policy: unknown type {self.policy!r}, expected one of {POLICY_TYPES}"
            )
        for name in ("chunk_size", "token_ttl", "refresh_ttl", "session_ttl", "url_ttl"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must not be negative")
        if self.chunk_concurrency < 1:
            raise ConfigError("chunk_concurrency: must be at least 1")
        if self.quota is not None and self.quota < 0:
            raise ConfigError("quota: must not be negative")
        for email, password in self.users:
            if "@" not in email:
                raise ConfigError(f"user: {email!r} is not an email address")
            if not 4 <= len(password) <= 128:
                raise ConfigError(f"user: password of {email!r} must be 4-128 characters")
        self.version_tuple()

    def version_tuple(self) -> tuple[int, ...]:
        """Return ``server_version`` as integers, e.g. ``(4, 18, 0)``."""
        core = self.server_version.split("-", 1)[0]
        try:
            return tuple(int(part) for part in core.split("."))
        except ValueError as exc:
            raise ConfigError(f"server_version: {self.server_version!r} is not x.y.z") from exc

    @property
    def legacy_upload(self) -> bool:
        """True before 4.18.0: completion on the last index, no callback-secret check."""
        return self.version_tuple() < (4, 18, 0)


class Clock:
    """Wall clock plus an offset that tests move forward."""

    def __init__(self) -> None:
        self._offset = 0.0

    def now(self) -> float:
        """Return the emulator's current time in unix seconds."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the emulator's time forward (or back, for a negative value)."""
        self._offset += seconds
