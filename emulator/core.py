"""Shared plumbing of the emulator's HTTP layer: app state, envelopes, request parsing.

Handlers reach the running instance through ``request.app[STATE]``. Modules added on top of the
core (workflow tasks, thumbnails) use the same key, plus :func:`ok`, :func:`read_json` and
``emulator.session.current_user`` / ``require_user``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from emulator import errors
from emulator.config import Clock, EmulatorConfig
from emulator.errors import ApiError
from emulator.store import Store

if TYPE_CHECKING:
    from emulator.faults import Faults, RequestLog
    from emulator.policy import PolicyDriver

_MISSING: Any = object()


@dataclass(slots=True)
class State:
    """Everything one running emulator holds."""

    config: EmulatorConfig
    clock: Clock
    store: Store
    faults: Faults
    requests: RequestLog
    drivers: dict[str, PolicyDriver] = field(default_factory=dict)
    site_url: str = ""


STATE = web.AppKey("emulator_state", State)


def state(request: web.Request) -> State:
    """Return the emulator state of a request's app."""
    return request.app[STATE]


def envelope(code: int, msg: str = "", data: Any = _MISSING) -> dict[str, Any]:
    """Return a response envelope; ``data`` is omitted when not given or None (contract 1.1)."""
    body: dict[str, Any] = {"code": code}
    if data is not _MISSING and data is not None:
        body["data"] = data
    body["msg"] = msg
    return body


def ok(data: Any = _MISSING) -> web.Response:
    """Return a success envelope with HTTP 200."""
    return web.json_response(envelope(0, "", data), dumps=_dumps)


def error_response(request: web.Request, err: ApiError) -> web.Response:
    """Return the envelope of an API error, with a correlation id unless it is a validation one."""
    body = envelope(err.code, err.msg, err.data)
    if err.correlation:
        body["correlation_id"] = correlation_id(request)
    if err.aggregated is not None:
        body["aggregated_error"] = err.aggregated
    return web.json_response(body, status=err.status, dumps=_dumps)


def correlation_id(request: web.Request) -> str:
    """Return the request's correlation id: ``X-Cr-Correlation-Id`` if it is a UUID, else new."""
    given = request.headers.get("X-Cr-Correlation-Id", "")
    try:
        return str(uuid.UUID(given))
    except ValueError:
        return str(uuid.uuid4())


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def read_json(request: web.Request) -> dict[str, Any]:
    """Return the JSON object body (40001 ``JSON marshall error`` when malformed)."""
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.param_error("JSON marshall error") from exc
    if not isinstance(body, dict):
        raise errors.param_error("JSON marshall error")
    return body


def field_str(body: dict[str, Any], key: str, *, required: bool = False, default: str = "") -> str:
    """Return a string field of a JSON body (40001 on a wrong type or a missing required one)."""
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise errors.param_error()
        return default
    if not isinstance(value, str):
        raise errors.param_error()
    return value


def field_bool(body: dict[str, Any], key: str) -> bool:
    """Return a boolean field (absent = False; 40001 on a wrong type)."""
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise errors.param_error()
    return value


def field_int(
    body: dict[str, Any], key: str, default: int = 0, *, minimum: int | None = None
) -> int:
    """Return an integer field (40001 on a wrong type or below ``minimum``)."""
    value = body.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.param_error()
    if minimum is not None and value < minimum:
        raise errors.param_error()
    return value


def field_str_list(body: dict[str, Any], key: str, *, min_items: int = 1) -> list[str]:
    """Return a list-of-strings field (40001 when missing, too short or mistyped)."""
    value = body.get(key)
    if not isinstance(value, list) or len(value) < min_items:
        raise errors.param_error()
    if not all(isinstance(v, str) for v in value):
        raise errors.param_error()
    return list(value)


def query_bool(request: web.Request, key: str) -> bool:
    """Return a boolean query parameter (Go's strconv forms; 40001 otherwise)."""
    raw = request.query.get(key, "")
    if raw == "":
        return False
    if raw.lower() in ("1", "t", "true"):
        return True
    if raw.lower() in ("0", "f", "false"):
        return False
    raise errors.param_error()


def query_int(request: web.Request, key: str, default: int = 0) -> int:
    """Return an integer query parameter (40001 when not an integer)."""
    raw = request.query.get(key, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise errors.param_error() from exc


def hmac_sign(secret: str, body: str, expires: int) -> str:
    """Return ``base64url(HMAC-SHA256(secret, "<body>:<expires>")):<expires>`` (padding kept)."""
    mac = hmac.new(secret.encode(), f"{body}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode() + f":{expires}"


def hmac_check(secret: str, body: str, sign: str, now: float) -> None:
    """Check a :func:`hmac_sign` value the way the real server does: expiry before signature.

    Raises:
        ApiError: 403 without an expiry part, 40005 once expired (``0`` never expires), 40071
            for a malformed or wrong signature.
    """
    exp_raw = sign.split(":")[-1]
    if exp_raw == "":
        raise ApiError(errors.NO_PERMISSION, "expire timestamp is missing")
    try:
        expires = int(exp_raw)
    except ValueError as exc:
        raise ApiError(errors.INVALID_SIGN, "sign expired") from exc
    if expires and expires < now:
        raise ApiError(errors.SIGN_EXPIRED, "signature expired")
    if not hmac.compare_digest(hmac_sign(secret, body, expires), sign):
        raise ApiError(errors.INVALID_SIGN, "invalid sign")


def timestamp(ts: float) -> str:
    """Format unix seconds like Go's ``time.Time`` JSON (RFC 3339 with fraction and offset)."""
    return datetime.fromtimestamp(ts, tz=UTC).astimezone().isoformat()
