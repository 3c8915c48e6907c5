"""Typed wire models of the Cloudreve v4 API and the decoding of its answers.

Everything here is pure: bytes and headers in, typed values or typed errors out. No network, no
retries. :func:`decode_response` is the one place where an HTTP answer becomes either the
envelope's ``data`` or an error of :mod:`transfer.errors`, whatever the body looks like (JSON
envelope, HTML from a proxy, empty, truncated).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from transfer.backend import RemoteEntry, SavedUpload
from transfer.errors import (
    ApiError,
    AuthError,
    LockConflict,
    NotFound,
    ObjectExists,
    QuotaExceeded,
    RateLimited,
    ServerError,
    SessionExpired,
)
from transfer.uris import parse_uri

__all__ = [
    "CODE_2FA_REQUIRED",
    "CODE_LOGIN_REQUIRED",
    "CODE_SIGN_EXPIRED",
    "Capacity",
    "EntityInfo",
    "ListPage",
    "Token",
    "UploadSession",
    "UrlBatch",
    "decode_response",
    "error_for_code",
    "parse_capacity",
    "parse_entities",
    "parse_entry",
    "parse_list_page",
    "parse_retry_after",
    "parse_time",
    "parse_token",
    "parse_upload_session",
    "parse_url_batch",
]

CODE_2FA_REQUIRED = 203
CODE_LOGIN_REQUIRED = 401
CODE_SIGN_EXPIRED = 40005
CODE_AGGREGATED = 40081

_AUTH_CODES = frozenset({40017, 40018, 40020, 40022, 40026, 40080})
_RETRY_CODES = frozenset({-1, 409, 50001, 50004, 50006, 50007, 50010})
_CODE_CLASSES: Mapping[int, type[ApiError]] = {
    404: NotFound,
    40004: ObjectExists,
    40011: SessionExpired,
    40016: NotFound,
    40051: QuotaExceeded,
}


@dataclass(frozen=True, slots=True)
class Token:
    """An access/refresh token pair with their expiry times (contract 2.2)."""

    access_token: str
    refresh_token: str
    access_expires: datetime
    refresh_expires: datetime

    def __repr__(self) -> str:
        return (
            f"Token(access_expires={self.access_expires}, refresh_expires={self.refresh_expires})"
        )


@dataclass(frozen=True, slots=True)
class Capacity:
    """The account's storage: ``total`` and ``used`` bytes."""

    total: int
    used: int

    @property
    def free(self) -> int:
        """Bytes still available (never negative)."""
        return max(0, self.total - self.used)


@dataclass(frozen=True, slots=True)
class EntityInfo:
    """One blob of a file (``extended_info.entities``): type 0 version, 1 thumbnail, 2 live."""

    id: str
    size: int
    type: int


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a folder listing."""

    entries: list[RemoteEntry]
    next_token: str
    max_page_size: int
    policy: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UploadSession:
    """A fresh upload session (``UploadSessionResponse``, contract 6.2)."""

    saved: SavedUpload
    chunk_concurrency: int
    relay: bool


@dataclass(frozen=True, slots=True)
class UrlBatch:
    """Download URLs in request order and their earliest expiry (None = never)."""

    urls: list[str]
    expires: datetime | None


def _malformed(what: str) -> ApiError:
    return ApiError(200, 0, f"malformed response: {what}")


def _obj(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _malformed(f"{what} is not an object")
    return value


def _str(data: Mapping[str, object], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise _malformed(f"{key!r} is not a string")
    return value


def _int(data: Mapping[str, object], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _malformed(f"{key!r} is not an integer")
    return value


def parse_time(text: str) -> datetime:
    """Parse a Go ``time.Time`` JSON value (RFC 3339, up to 9 fractional digits) as aware UTC."""
    raw = text.strip()
    if raw.endswith("Z"):
        raw = raw[:-1] + "+00:00"
    # Go emits up to nanoseconds; Python keeps microseconds.
    head, dot, tail = raw.partition(".")
    if dot:
        digits = len(tail) - len(tail.lstrip("0123456789"))
        frac, zone = tail[:digits], tail[digits:]
        raw = f"{head}.{(frac + '000000')[:6]}{zone}"
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise _malformed(f"bad timestamp {text!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)

    return parsed.astimezone(UTC)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Return the wait of a ``Retry-After`` header in seconds (delta or HTTP-date), or None.

    ``now`` is the time the date form is measured from: the response's own ``Date`` header when
    it has one, as both have one-second resolution.
    """
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)

    return max(0.0, math.ceil((when - now).total_seconds()))


def error_for_code(
    status: int,
    code: int,
    message: str,
    request_id: str = "",
    method: str = "",
    url: str = "",
    *,
    data: object = None,
    retry_after: float | None = None,
) -> ApiError:
    """Build the typed error for an API ``code`` (or an HTTP status when there was no envelope)."""
    error = _build_error(status, code, message, request_id, method, url, data, retry_after)
    error.data = data
    return error


def _build_error(
    status: int,
    code: int,
    message: str,
    request_id: str,
    method: str,
    url: str,
    data: object,
    retry_after: float | None,
) -> ApiError:
    args = (status, code, message, request_id, method, url)
    if status == 429 or code == 429:
        return RateLimited(*args, retry_after=retry_after)
    if status >= 500 or code in _RETRY_CODES:
        return ServerError(*args)
    if code in _AUTH_CODES:
        return AuthError(*args)
    if code == 40073:
        conflicts = (
            tuple(item for item in data if isinstance(item, dict)) if isinstance(data, list) else ()
        )
        return LockConflict(*args, conflicts=conflicts)
    cls = _CODE_CLASSES.get(code, ApiError)

    return cls(*args)


def decode_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    method: str,
    url: str,
) -> object:
    """Return the envelope's ``data`` of a successful answer, or raise its typed error.

    Args:
        status: HTTP status.
        headers: response headers (case-insensitive mapping preferred).
        body: the raw body.
        method: request method, for the error.
        url: request URL without its query string, for the error.

    Raises:
        ApiError: a non-zero code, a non-2xx status, or a body that is not an envelope.
    """
    envelope = _parse_envelope(body)
    retry_after = None
    if status == 429:
        base = _response_date(headers) or datetime.now(UTC)
        retry_after = parse_retry_after(headers.get("Retry-After"), base)
    if envelope is None:
        snippet = body[:120].decode("utf-8", "replace").strip().replace("\n", " ")
        message = (
            f"non-JSON body (HTTP {status}): {snippet}" if body else f"empty body (HTTP {status})"
        )
        raise error_for_code(status, status, message, "", method, url, retry_after=retry_after)
    code = envelope.get("code")
    msg = envelope.get("msg")
    request_id = envelope.get("correlation_id")
    message = msg if isinstance(msg, str) else ""
    rid = request_id if isinstance(request_id, str) else ""
    if not isinstance(code, int) or isinstance(code, bool):
        raise error_for_code(status, status, "envelope without an integer code", rid, method, url)
    if code == 0 and 200 <= status < 300:
        return envelope.get("data")
    if code == 0:
        raise error_for_code(status, status, message, rid, method, url, retry_after=retry_after)
    if code == CODE_AGGREGATED:
        code, message = _innermost(envelope, message)

    raise error_for_code(
        status, code, message, rid, method, url, data=envelope.get("data"), retry_after=retry_after
    )


def _parse_envelope(body: bytes) -> dict[str, object] | None:
    if not body:
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(parsed, dict) or "code" not in parsed:
        return None
    return parsed


def _innermost(envelope: Mapping[str, object], message: str) -> tuple[int, str]:
    """Surface the per-item code of a batch error when every failed item agrees on it."""
    aggregated = envelope.get("aggregated_error")
    if not isinstance(aggregated, dict) or not aggregated:
        return CODE_AGGREGATED, message
    codes = {item.get("code") for item in aggregated.values() if isinstance(item, dict)}
    if len(codes) == 1:
        (only,) = codes
        if isinstance(only, int) and not isinstance(only, bool):
            return only, message or f"batch item failed with code {only}"
    return CODE_AGGREGATED, message


def _response_date(headers: Mapping[str, str]) -> datetime | None:
    value = headers.get("Date")
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_token(data: object) -> Token:
    """Decode a ``Token`` object (refresh answer, or the ``token`` of a ``LoginResponse``)."""
    obj = _obj(data, "token")
    if "token" in obj:
        obj = _obj(obj["token"], "token")
    return Token(
        access_token=_str(obj, "access_token"),
        refresh_token=_str(obj, "refresh_token"),
        access_expires=parse_time(_str(obj, "access_expires")),
        refresh_expires=parse_time(_str(obj, "refresh_expires")),
    )


def parse_capacity(data: object) -> Capacity:
    """Decode ``GET /user/capacity``."""
    obj = _obj(data, "capacity")
    return Capacity(total=_int(obj, "total"), used=_int(obj, "used"))


def parse_entry(data: object) -> RemoteEntry:
    """Decode a ``FileResponse`` into a :class:`RemoteEntry`."""
    obj = _obj(data, "file")
    uri = _str(obj, "path")
    try:
        path = parse_uri(uri)
    except ValueError as exc:
        raise _malformed(f"bad path {uri!r}") from exc
    raw_meta = obj.get("metadata") or {}
    metadata = {str(k): str(v) for k, v in _obj(raw_meta, "metadata").items() if isinstance(v, str)}
    primary = obj.get("primary_entity")
    return RemoteEntry(
        path=path,
        name=_str(obj, "name"),
        is_dir=_int(obj, "type") == 1,
        size=_int(obj, "size", 0),
        updated_at=parse_time(_str(obj, "updated_at")),
        id=_str(obj, "id"),
        uri=uri,
        primary_entity=primary if isinstance(primary, str) and primary else None,
        metadata=metadata,
    )


def parse_entities(data: object) -> list[EntityInfo]:
    """Decode the ``extended_info.entities`` of an extended ``FileResponse``."""
    obj = _obj(data, "file")
    extended = _obj(obj.get("extended_info") or {}, "extended_info")
    items = extended.get("entities") or []
    if not isinstance(items, list):
        raise _malformed("'entities' is not a list")
    entities = []
    for item in items:
        entity = _obj(item, "entity")
        entities.append(
            EntityInfo(
                id=_str(entity, "id"), size=_int(entity, "size", 0), type=_int(entity, "type", 0)
            )
        )
    return entities


def parse_list_page(data: object) -> ListPage:
    """Decode a ``ListResponse``."""
    obj = _obj(data, "list")
    files = obj.get("files") or []
    if not isinstance(files, list):
        raise _malformed("'files' is not a list")
    pagination = _obj(obj.get("pagination") or {}, "pagination")
    props = _obj(obj.get("props") or {}, "props")
    policy = obj.get("storage_policy")
    return ListPage(
        entries=[parse_entry(item) for item in files],
        next_token=_str(pagination, "next_token", ""),
        max_page_size=_int(props, "max_page_size", 0),
        policy=policy if isinstance(policy, dict) else {},
    )


def parse_upload_session(data: object, size: int) -> UploadSession:
    """Decode an ``UploadSessionResponse`` into what the journal keeps, plus policy hints."""
    obj = _obj(data, "upload session")
    policy = _obj(obj.get("storage_policy") or {}, "storage_policy")
    urls = obj.get("upload_urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise _malformed("'upload_urls' is not a list of strings")
    chunk_size = _int(obj, "chunk_size", 0)
    if chunk_size < 0:
        raise _malformed("negative chunk_size")
    relay = policy.get("relay") is True
    saved = SavedUpload(
        session_id=_str(obj, "session_id"),
        uri=_str(obj, "uri", ""),
        size=size,
        chunk_size=chunk_size,
        expires=_int(obj, "expires"),
        policy_type="local" if relay else _str(policy, "type", "local"),
        callback_secret=_str(obj, "callback_secret", ""),
        upload_id=_str(obj, "upload_id", ""),
        upload_urls=tuple(str(u) for u in urls),
        credential=_str(obj, "credential", ""),
        complete_url=_str(obj, "completeURL", ""),
        mime_type=_str(obj, "mime_type", ""),
        upload_policy=_str(obj, "upload_policy", ""),
    )
    concurrency = policy.get("chunk_concurrency")
    return UploadSession(
        saved=saved,
        chunk_concurrency=concurrency if isinstance(concurrency, int) and concurrency > 0 else 1,
        relay=relay,
    )


def parse_url_batch(data: object) -> UrlBatch:
    """Decode ``POST /file/url``."""
    obj = _obj(data, "urls")
    items = obj.get("urls") or []
    if not isinstance(items, list):
        raise _malformed("'urls' is not a list")
    urls = [_str(_obj(item, "url"), "url") for item in items]
    expires = obj.get("expires")
    return UrlBatch(urls=urls, expires=parse_time(expires) if isinstance(expires, str) else None)
