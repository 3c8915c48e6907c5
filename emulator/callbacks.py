"""Upload completion callbacks: ``/api/v4/callback/{type}/{session_id}/{key}`` (contract 6.9).

The HTTP method follows the real router: GET for cos, s3 and ks3, POST for the others. Checks, in
order: the session exists (HTTP 401 + 40011), the secret in the path matches (HTTP 401 + 40020,
from 4.18.0 only), the session's policy type is the route's (HTTP 401 + 40006); then the driver
checks the stored object and the upload completes. A processing failure answers HTTP 400 for
storage types and HTTP 200 for remote and onedrive. ``remote`` callbacks are HMAC-signed
(``Authorization: Bearer Cr ...``) instead of checked by a driver.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from emulator import errors
from emulator.core import State, ok, state
from emulator.errors import ApiError
from emulator.policy import CallbackFailed
from emulator.upload import check_signature, uploads

GET_TYPES = ("cos", "s3", "ks3")
POST_TYPES = ("remote", "oss", "upyun", "onedrive", "obs", "qiniu")


async def callback(request: web.Request, kind: str) -> web.Response:
    """Complete an upload on a client or storage callback of policy type ``kind``."""
    st = state(request)
    core = uploads(request)
    sess = core.live(request.match_info["session_id"])
    if sess is None:
        raise ApiError(errors.UPLOAD_SESSION_EXPIRED, "Upload session expired", status=401)
    info = sess.info
    if not st.config.legacy_upload and request.match_info["key"] != info.callback_secret:
        raise ApiError(errors.CREDENTIAL_INVALID, "Invalid callback secret", status=401)
    if info.policy.type != kind:
        raise ApiError(errors.POLICY_NOT_ALLOWED, "Policy type mismatch", status=401)
    if kind == "remote":
        _check_remote_signature(st, request)
    fail_status = 200 if kind in ("remote", "onedrive") else 400
    try:
        if kind == "remote":
            stored = info.size
        else:
            driver = st.drivers.get(kind)
            if driver is None:
                raise CallbackFailed(errors.POLICY_NOT_ALLOWED, f"No driver for {kind}")
            stored = await driver.verify_callback(info, request)
        await core.complete_upload(info.session_id, stored)
    except CallbackFailed as exc:
        raise ApiError(exc.code, exc.msg, status=fail_status) from exc
    except ApiError as exc:
        raise ApiError(exc.code, exc.msg, status=fail_status) from exc
    return ok()


def _check_remote_signature(st: State, request: web.Request) -> None:
    """Check the slave's HMAC header; failures are HTTP 401 + 40020 like the session checks."""
    header = request.headers.get("Authorization", "")
    try:
        if not header.startswith("Bearer Cr "):
            raise ApiError(errors.CREDENTIAL_INVALID, "Missing signature")
        check_signature(st, request, header[len("Bearer Cr ") :])
    except ApiError as exc:
        raise ApiError(errors.CREDENTIAL_INVALID, exc.msg, status=401) from exc


def _handler(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        return await callback(request, kind)

    return handle


def routes() -> list[web.RouteDef]:
    """Return the callback routes with each type's method."""
    path = "/api/v4/callback/{kind}/{{session_id}}/{{key}}"
    defs = [web.get(path.format(kind=t), _handler(t), allow_head=False) for t in GET_TYPES]
    defs += [web.post(path.format(kind=t), _handler(t)) for t in POST_TYPES]
    return defs
