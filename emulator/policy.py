"""The seam between the emulator core and its storage-policy drivers.

The core (``upload.py``, ``store.py``, ``files.py``) owns upload sessions, placeholders, locks,
quota and completion. A policy driver owns only what the storage behind a policy does: the
credentials handed out by ``PUT /file/upload``, the storage-side endpoints chunks are sent to, the
check a completion callback makes on the stored object, and download URLs for its blobs.

Drivers for ``local`` and relay policies live in the core; ``remote`` uses the core's slave
route. Every other type (``s3``, ``ks3``, ``cos``, ``oss``, ``obs``, ``onedrive``, ``qiniu``,
``upyun``) is a :class:`PolicyDriver` under ``emulator/policies/``.

Flow for a client-callback policy (s3, ks3, cos, onedrive):

1. ``PUT /file/upload``: the core validates, reserves quota, creates the placeholder and the
   session, then calls ``driver.open_session(session)`` and merges the returned
   :class:`SessionCredentials` into the ``UploadSessionResponse``.
2. The client sends parts to the storage endpoints served by the driver's ``routes()``.
3. ``GET|POST /api/v4/callback/{type}/{session_id}/{secret}``: the core's generic handler checks
   the session (HTTP 401 + 40011), the secret (HTTP 401 + 40020) and the policy type (HTTP 401 +
   40006), then awaits ``driver.verify_callback(session, request)`` for the stored object's size
   and completes the upload (40055 on a size mismatch).

Storage-side callbacks (oss, obs, qiniu, upyun): the driver's storage endpoint, once the object is
whole, calls ``host.complete_upload(session_id, stored_size)`` itself, as the real storage would
call the server back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from aiohttp import web


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """A storage policy as the emulator's store knows it."""

    id: int
    hash_id: str
    name: str
    type: str
    chunk_size: int
    chunk_concurrency: int
    relay: bool = False
    max_size: int = 0


@dataclass(frozen=True, slots=True)
class UploadSessionInfo:
    """An upload session as the core keeps it in its KV store (``callback_<session_id>``)."""

    session_id: str
    uri: str
    owner_id: int
    file_id: int
    entity_id: int
    size: int
    chunk_size: int
    expires: int
    callback_secret: str
    policy: PolicyInfo
    mime_type: str
    storage_key: str
    """Where the blob lands in the policy's storage (object key or relative blob path)."""


@dataclass(frozen=True, slots=True)
class SessionCredentials:
    """The policy-specific fields of ``UploadSessionResponse`` (contract 6.2)."""

    upload_id: str = ""
    upload_urls: tuple[str, ...] = ()
    credential: str = ""
    complete_url: str = ""
    mime_type: str = ""
    upload_policy: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class CallbackFailed(Exception):
    """Raised by a driver when the stored object does not satisfy the callback.

    The core answers HTTP 400 (or 200 for onedrive) with the given API code.
    """

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class UploadHost(Protocol):
    """What the core offers a driver."""

    @property
    def site_url(self) -> str:
        """Base URL of the running emulator, e.g. ``http://127.0.0.1:5212``."""
        ...

    def get_session(self, session_id: str) -> UploadSessionInfo | None:
        """Return the live session, or None when it is unknown, completed or expired."""
        ...

    async def complete_upload(self, session_id: str, stored_size: int) -> None:
        """Finish the upload as the server does on a successful callback.

        Raises:
            CallbackFailed: the session is gone (40011) or the size mismatches (40055).
        """
        ...


class PolicyDriver(Protocol):
    """The storage behind one policy type."""

    type: str

    def default_chunk_size(self) -> int:
        """Chunk size used when the policy's own setting is 0 (contract 6.3)."""
        ...

    async def open_session(self, session: UploadSessionInfo) -> SessionCredentials:
        """Start the storage-side upload (e.g. a multipart upload) and hand out credentials."""
        ...

    async def abort_session(self, session: UploadSessionInfo) -> None:
        """Abort the storage-side upload on ``DELETE /file/upload`` while the session lives."""
        ...

    async def verify_callback(self, session: UploadSessionInfo, request: web.Request) -> int:
        """Check the stored object for a client callback and return its size in bytes.

        Raises:
            CallbackFailed: the object is missing or incomplete.
        """
        ...

    async def download_url(self, storage_key: str, name: str, ttl_s: int, download: bool) -> str:
        """Return a URL that serves the blob's bytes (presigned storage URL or emulator route)."""
        ...

    async def put_blob(self, storage_key: str, src: Path) -> None:
        """Store a local file as the blob ``storage_key`` (server-side writes: relocate, import)."""
        ...

    async def fetch_blob(self, storage_key: str, dst: Path) -> None:
        """Copy the blob ``storage_key`` into the local file ``dst`` (archive, relocate)."""
        ...

    async def delete_blob(self, storage_key: str) -> None:
        """Remove a blob from the storage; a missing blob is not an error."""
        ...

    def routes(self) -> Iterable[web.AbstractRouteDef]:
        """The storage endpoints this driver serves on the emulator's own app."""
        ...
