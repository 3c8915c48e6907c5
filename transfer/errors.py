"""The exception tree of the transfer engine.

Every error carries two flags that callers test instead of matching messages:

* ``retryable``: the same request may succeed if sent again (after a backoff);
* ``fatal``: the whole run (or account) cannot go on; the scheduler stops.

::

    FerryError
    ├── ApiError(status, code, message, request_id, method, url)
    │   ├── AuthError            fatal: sign-in, 2FA or refresh failed (40020, 40080, 40022, ...)
    │   ├── NotFound             40016 (the file system's "not found"), 404
    │   ├── ObjectExists         40004
    │   ├── LockConflict         40073, with the conflict list in ``conflicts``
    │   ├── QuotaExceeded        40051, fatal for the account
    │   ├── RateLimited          HTTP 429, ``retry_after`` seconds (retryable)
    │   ├── ServerError          -1, 409, 5xx, 50001/50004/50006/50007/50010 (retryable)
    │   ├── SessionExpired       40011: upload session unknown, expired or not ours
    │   └── (other codes: ApiError with retryable=False)
    ├── NetworkError             connection refused/reset, timeout, cut body (retryable)
    ├── ListingInconsistent      a listing repeated a page token (fatal for that listing)
    ├── UploadFailed(path, chunk, offset)
    ├── SourceChanged(path, expected, actual)  the local file changed during its upload
    ├── DownloadFailed(path, offset)
    ├── UnsafeName(name)         a remote name that cannot be written locally
    ├── IntegrityError(path, expected, actual)
    └── UnsupportedFeature       a known case this engine does not handle

This module does no HTTP and no logging.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "AuthError",
    "DownloadFailed",
    "FerryError",
    "IntegrityError",
    "ListingInconsistent",
    "LockConflict",
    "NetworkError",
    "NotFound",
    "ObjectExists",
    "QuotaExceeded",
    "RateLimited",
    "ServerError",
    "SessionExpired",
    "SourceChanged",
    "UnsafeName",
    "UnsupportedFeature",
    "UploadFailed",
]


class FerryError(Exception):
    """Base of every error the transfer engine raises."""

    retryable: bool = False
    fatal: bool = False


class ApiError(FerryError):
    """The drive answered with a non-zero code or an unexpected HTTP status.

    Args:
        status: HTTP status of the response (200 for most API errors).
        code: the envelope's ``code`` (or the HTTP status when the body was not an envelope).
        message: the envelope's ``msg`` or a short description of the body.
        request_id: the envelope's ``correlation_id`` (``""`` when absent).
        method: HTTP method of the request.
        url: the URL requested, with any query string removed (it may hold a signature).

    ``data`` keeps the envelope's ``data`` of the error answer (a 2FA session id, a lock
    conflict list), ``None`` when there was none.
    """

    data: object = None

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        request_id: str = "",
        method: str = "",
        url: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.method = method
        self.url = url
        super().__init__(message)

    def __str__(self) -> str:
        text = f"{self.method} {self.url}: code {self.code}"
        if self.status != 200:
            text += f" (HTTP {self.status})"
        if self.message:
            text += f": {self.message}"
        if self.request_id:
            text += f" [request_id={self.request_id}]"
        return text


class AuthError(ApiError):
    """Sign-in, 2FA or token refresh failed; nothing more can be done with this account."""

    fatal = True


class NotFound(ApiError):
    """The path or object does not exist (40016, or 404)."""


class ObjectExists(ApiError):
    """The name is already taken (40004)."""


class LockConflict(ApiError):
    """The path is locked (40073); ``conflicts`` holds the server's conflict list."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        request_id: str = "",
        method: str = "",
        url: str = "",
        conflicts: tuple[dict[str, object], ...] = (),
    ) -> None:
        super().__init__(status, code, message, request_id, method, url)
        self.conflicts = conflicts


class QuotaExceeded(ApiError):
    """The account's capacity would be exceeded (40051); fatal for the account."""

    fatal = True


class RateLimited(ApiError):
    """The server asked us to slow down (HTTP 429); ``retry_after`` is in seconds, if given."""

    retryable = True

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        request_id: str = "",
        method: str = "",
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message, request_id, method, url)
        self.retry_after = retry_after


class ServerError(ApiError):
    """A transient server-side failure (-1, 409, 5xx, 5000x); worth retrying."""

    retryable = True


class SessionExpired(ApiError):
    """The upload session is unknown to the server (40011): expired, completed or not ours."""


class NetworkError(FerryError):
    """The request did not get a complete answer (connection, timeout, cut body)."""

    retryable = True

    def __init__(self, message: str, method: str = "", url: str = "") -> None:
        self.method = method
        self.url = url
        super().__init__(f"{method} {url}: {message}" if method else message)


class ListingInconsistent(FerryError):
    """A listing cannot be trusted (repeated or bogus page token); fatal for that listing."""

    fatal = True


class UploadFailed(FerryError):
    """Uploading ``path`` failed at chunk ``chunk`` (byte ``offset``); the cause is chained.

    ``retryable`` and ``fatal`` copy the cause's flags: a retryable cause means running the file
    again (resuming from the journal) may succeed.
    """

    def __init__(
        self,
        path: str,
        chunk: int,
        offset: int,
        reason: str = "",
        *,
        retryable: bool = False,
        fatal: bool = False,
    ) -> None:
        self.path = path
        self.retryable = retryable
        self.fatal = fatal
        self.chunk = chunk
        self.offset = offset
        text = f"upload of {path} failed at chunk {chunk} (offset {offset})"
        super().__init__(f"{text}: {reason}" if reason else text)


class SourceChanged(FerryError):
    """The local file ``path`` changed while it was being uploaded.

    ``expected`` is the file's fingerprint when the upload started and ``actual`` the one seen
    afterwards (``size:mtime_ns``, or ``missing`` for a file that is gone). The drive would get
    bytes from two versions of the file, so the upload is not reported done. Not retryable
    within the run: the next run sees the new fingerprint and uploads the file as it is then.
    """

    def __init__(self, path: str, expected: str, actual: str) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{path}: source file changed during the upload "
            f"(size:mtime_ns {expected}, now {actual})"
        )


class DownloadFailed(FerryError):
    """Downloading ``path`` failed at byte ``offset``; the cause is chained.

    ``retryable`` and ``fatal`` copy the cause's flags, as for :class:`UploadFailed`.
    """

    def __init__(
        self,
        path: str,
        offset: int,
        reason: str = "",
        *,
        retryable: bool = False,
        fatal: bool = False,
    ) -> None:
        self.path = path
        self.retryable = retryable
        self.fatal = fatal
        self.offset = offset
        text = f"download of {path} failed at offset {offset}"
        super().__init__(f"{text}: {reason}" if reason else text)


class UnsafeName(FerryError):
    """A name cannot be used as a local file name without escaping its folder."""

    def __init__(self, name: str, reason: str = "") -> None:
        self.name = name
        text = f"unsafe name {name!r}"
        super().__init__(f"{text}: {reason}" if reason else text)


class IntegrityError(FerryError):
    """The transferred object differs from what was expected (size or hash)."""

    def __init__(self, path: str, expected: object, actual: object) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(f"{path}: expected {expected}, got {actual}")


class UnsupportedFeature(FerryError):
    """A known case that this engine deliberately does not handle."""
