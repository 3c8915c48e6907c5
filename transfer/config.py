"""Frozen configuration values of the transfer engine, with their defaults in one place.

These objects are built by ``jobs.config`` (or by tests) and passed to constructors. This module
validates values but reads no files and no environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["PacerConfig", "RemoteConfig", "TransferConfig"]


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    """Where a Cloudreve drive lives and how to sign in to it.

    ``url`` is the site root (``https://drive.example.com``); the API lives under ``/api/v4``.
    ``password`` and ``totp_secret`` are secrets: they never appear in ``repr`` or logs.
    """

    url: str
    email: str
    password: str
    totp_secret: str | None = None
    verify_tls: bool = True
    ca_bundle: Path | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"remote url must be http(s)://host[:port], got {self.url!r}")
        if not self.email:
            raise ValueError("remote email must not be empty")

    def __repr__(self) -> str:
        return f"RemoteConfig(url={self.url!r}, email={self.email!r}, password=***)"

    @property
    def api_base(self) -> str:
        """The API root, ``<url>/api/v4`` without a trailing slash."""
        return self.url.rstrip("/") + "/api/v4"


@dataclass(frozen=True, slots=True)
class PacerConfig:
    """Per-request retry and pacing settings (see :class:`transfer.pacer.Pacer`).

    Attributes:
        max_attempts: tries per request, the first included.
        min_sleep_s: the smallest gap between calls, and the first backoff step.
        max_sleep_s: the largest gap and the cap of the backoff.
        max_open: requests in flight at once, across all workers of one drive.
        deadline_s: a request gives up when its retries would run past this many seconds.
    """

    max_attempts: int = 5
    min_sleep_s: float = 0.01
    max_sleep_s: float = 30.0
    max_open: int = 16
    deadline_s: float = 900.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.min_sleep_s < 0 or self.max_sleep_s < self.min_sleep_s:
            raise ValueError("need 0 <= min_sleep_s <= max_sleep_s")
        if self.max_open < 1:
            raise ValueError("max_open must be at least 1")
        if self.deadline_s <= 0:
            raise ValueError("deadline_s must be positive")


@dataclass(frozen=True, slots=True)
class TransferConfig:
    """How files are moved.

    Attributes:
        chunk_concurrency: chunks of one file in flight; None uses the policy's
            ``chunk_concurrency`` (1 when the policy gives none). A cap above the policy's value
            is lowered to it.
        upload_nfc: send new names in Unicode NFC (macOS gives NFD).
        file_retries: times one file is run again (resuming) after a retryable failure.
        save_thumbnails: after downloading an image, also save its server thumbnail as
            ``<name>.thumb.jpg``, beside it or in ``thumbnail_dir``; a missing thumbnail is
            not an error.
        thumbnail_dir: folder for the thumbnails instead of beside each image.
    """

    chunk_concurrency: int | None = None
    upload_nfc: bool = True
    file_retries: int = 3
    save_thumbnails: bool = False
    thumbnail_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.chunk_concurrency is not None and self.chunk_concurrency < 1:
            raise ValueError("chunk_concurrency must be at least 1 (or None)")
        if self.file_retries < 0:
            raise ValueError("file_retries must not be negative")
