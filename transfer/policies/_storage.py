"""Requests to storage hosts and the mapping of their answers onto ``transfer.errors``.

Storage hosts (S3-like buckets, Microsoft Graph upload sessions, Qiniu, Upyun) answer in their
own formats, never in the Cloudreve envelope: S3 error XML, Graph error JSON, Qiniu
``{"error": ...}``, Upyun ``{"code", "message"}``, or an HTML page from a proxy. This module sends
one request through the writer's token-free session and turns every failure into a typed error:

* 429 becomes :class:`~transfer.errors.RateLimited` (with ``Retry-After``);
* 5xx (but Qiniu's 579 and 6xx), 408 and S3 ``RequestTimeout``/``SlowDown`` become
  :class:`~transfer.errors.ServerError` (retryable);
* an expired presigned URL, or a storage-side upload that no longer exists, becomes
  :class:`PartUrlExpired`: sending the same URL again cannot work, the upload driver must delete
  the Cloudreve session and open a new one;
* any other answer becomes :class:`StorageError`, not retryable;
* connection failures become :class:`~transfer.errors.NetworkError` (retryable).

URLs in errors and logs lose their query string: it holds the presigned signature.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit
from xml.etree import ElementTree

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from transfer.api import parse_retry_after
from transfer.backend import WriterContext
from transfer.errors import (
    ApiError,
    FerryError,
    NetworkError,
    RateLimited,
    ServerError,
    SessionExpired,
)

__all__ = [
    "BadUploadSession",
    "PartUrlExpired",
    "StorageError",
    "StorageResponse",
    "http_of",
    "presigned_expiry",
    "redact",
    "send",
    "storage_error",
]

_EXPIRED_TEXT = re.compile(r"expired", re.IGNORECASE)
# Storage error codes meaning "this multipart upload / upload session does not exist any more".
_GONE_CODES = frozenset({"NoSuchUpload", "itemNotFound", "NoSuchUploadId"})
_RETRYABLE_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "serviceNotAvailable"}
)
# Qiniu: 612 = no such upload (expired or completed); 579 = callback to Cloudreve failed.
_QINIU_GONE = 612
_QINIU_CALLBACK_FAILED = 579


class StorageError(ApiError):
    """A storage host refused a request.

    ``code`` and ``status`` hold the HTTP status; ``storage_code`` is the host's own error code
    (``AccessDenied``, ``InvalidPart``, ``nameAlreadyExists``...), ``""`` when it gave none.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        storage_code: str = "",
        request_id: str = "",
        method: str = "",
        url: str = "",
        retryable: bool = False,
    ) -> None:
        super().__init__(status, status, message, request_id, method, url)
        self.storage_code = storage_code
        self.retryable = retryable


class PartUrlExpired(SessionExpired):
    """The storage side of the upload cannot take more data with these credentials.

    Raised when a presigned URL's expiry has passed (checked before sending and on a 403
    "Request has expired"), or when the storage no longer knows the multipart upload or upload
    session. Not retryable with the same session: the upload driver deletes the Cloudreve
    session (``DELETE /file/upload``), opens a new one and sends from chunk 0.
    """


class BadUploadSession(FerryError):
    """The upload session lacks what this policy's flow needs (a URL, a credential, parts)."""


@dataclass(frozen=True, slots=True)
class StorageResponse:
    """A storage host's complete answer."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def http_of(ctx: WriterContext) -> aiohttp.ClientSession:
    """Return the context's token-free storage session, checking its type."""
    if not isinstance(ctx.storage_http, aiohttp.ClientSession):
        raise TypeError("WriterContext.storage_http must be an aiohttp.ClientSession")

    return ctx.storage_http


def redact(url: str) -> str:
    """Return ``url`` without its query string and fragment (they carry signatures)."""
    parts = urlsplit(url)

    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


async def send(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    data: bytes | aiohttp.FormData | None = None,
    headers: Mapping[str, str] | None = None,
) -> StorageResponse:
    """Send one request to a storage host and read the whole answer.

    The URL is sent verbatim (presigned signatures break if it is re-encoded). No redirect is
    followed: a storage host that redirects is answered as an error by the caller.

    Raises:
        NetworkError: the connection failed or the answer was cut.
    """
    # A BytesIO shares the chunk's buffer and keeps aiohttp from warning about large bodies.
    payload = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        async with http.request(
            method,
            URL(url, encoded=True),
            data=payload,
            headers=dict(headers or {}),
            allow_redirects=False,
        ) as resp:
            body = await resp.read()
            return StorageResponse(resp.status, resp.headers, body)
    except aiohttp.ClientError as exc:
        raise NetworkError(type(exc).__name__, method, redact(url)) from exc
    except TimeoutError as exc:
        raise NetworkError("timed out", method, redact(url)) from exc


def storage_error(resp: StorageResponse, method: str, url: str) -> ApiError:
    """Turn a failed storage answer into the fitting typed error (see the module docstring)."""
    code, message, request_id, qiniu_code = _describe(resp)
    where = redact(url)
    status = resp.status
    text = f"{code}: {message}" if code else message
    if status == 429:
        return RateLimited(
            status,
            status,
            text,
            request_id,
            method,
            where,
            retry_after=parse_retry_after(resp.headers.get("Retry-After"), _date_of(resp)),
        )
    if _is_expired(status, code, message) or code in _GONE_CODES or qiniu_code == _QINIU_GONE:
        return PartUrlExpired(status, status, text, request_id, method, where)
    if qiniu_code is not None and (status == _QINIU_CALLBACK_FAILED or status >= 600):
        # Qiniu's own statuses: 579 = stored but its callback to Cloudreve failed, 6xx = refused.
        return StorageError(status, text, request_id=request_id, method=method, url=where)
    if status >= 500 or status == 408 or code in _RETRYABLE_CODES:
        return ServerError(status, status, text, request_id, method, where)

    return StorageError(
        status, text, storage_code=code, request_id=request_id, method=method, url=where
    )


def presigned_expiry(url: str) -> float | None:
    """Return the unix time after which a presigned URL is refused, or None if it has none.

    Understands AWS SigV4 (``X-Amz-Date`` + ``X-Amz-Expires``), SigV2-style ``Expires`` (S3 v2,
    KS3, OSS v1, OBS), OSS v4 (``x-oss-date`` + ``x-oss-expires``) and COS ``q-sign-time``.
    """
    query = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    for date_key, ttl_key in (("x-amz-date", "x-amz-expires"), ("x-oss-date", "x-oss-expires")):
        if date_key in query and ttl_key in query:
            try:
                start = datetime.strptime(query[date_key], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                return start.timestamp() + int(query[ttl_key])
            except ValueError:
                return None
    if "expires" in query:
        return _as_float(query["expires"])
    if "q-sign-time" in query:
        _, _, end = query["q-sign-time"].partition(";")
        return _as_float(end)

    return None


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _is_expired(status: int, code: str, message: str) -> bool:
    # S3, OSS, OBS and COS all answer an expired presigned URL with 403 AccessDenied and a
    # message "Request has expired"; Qiniu says "expired token" with 401.
    if status in (401, 403) and _EXPIRED_TEXT.search(message):
        return True

    return code in ("ExpiredToken", "RequestExpired")


def _date_of(resp: StorageResponse) -> datetime:
    value = resp.headers.get("Date")
    if value:
        try:
            parsed = parsedate_to_datetime(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except (TypeError, ValueError):
            pass

    return datetime.now(UTC)


def _describe(resp: StorageResponse) -> tuple[str, str, str, int | None]:
    """Return (storage code, message, request id, Qiniu numeric status) from an error body."""
    text = resp.body.decode("utf-8", errors="replace").strip()
    request_id = resp.headers.get("x-amz-request-id") or resp.headers.get("request-id") or ""
    if text.startswith("<") and "<Error" in text[:200]:
        return (*_describe_xml(text, request_id), None)
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            return _describe_json(cast(dict[str, object], doc), resp.status, request_id)
    kind = resp.headers.get("Content-Type", "no content type")
    if kind.startswith("text/plain") and text:
        # A short plain-text reason (a proxy's "Request Entity Too Large") says what went wrong.
        return "", f"HTTP {resp.status}: {text[:200]}", request_id, None
    return "", f"HTTP {resp.status} ({kind}, {len(resp.body)} bytes)", request_id, None


def _describe_xml(text: str, request_id: str) -> tuple[str, str, str]:
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return "", "unparsable XML error body", request_id

    def field(name: str) -> str:
        found = root.find(name)
        return (found.text or "").strip() if found is not None else ""

    return field("Code"), field("Message"), field("RequestId") or request_id


def _describe_json(
    doc: dict[str, object], status: int, request_id: str
) -> tuple[str, str, str, int | None]:
    error = doc.get("error")
    if isinstance(error, dict):
        # Microsoft Graph: {"error": {"code", "message", "innererror": {"code", "request-id"}}}
        graph = cast(dict[str, object], error)
        inner = graph.get("innererror") or graph.get("innerError")
        code = str(graph.get("code", ""))
        if isinstance(inner, dict) and inner.get("code"):
            code = str(inner["code"])
            request_id = str(inner.get("request-id", request_id))
        return code, str(graph.get("message", "")), request_id, None
    if isinstance(error, str):
        # Qiniu: {"error": "..."} with its meaning in the HTTP status (612, 614, 579, 599...).
        return "", error, request_id, status
    # Upyun: {"code": 40100012, "msg"|"message": "..."}
    message = doc.get("message", doc.get("msg", ""))
    return str(doc.get("code", "")), str(message), request_id, None
