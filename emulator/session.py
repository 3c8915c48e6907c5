"""Sign-in, 2FA, token refresh and sign-out (contract 2), and the Authorization rules of 2.3.

Tokens are HS256 JWTs signed with the instance secret. Access tokens carry
``{token_type: "access", sub, nbf, exp, iat}``; refresh tokens add ``state_hash`` (sha256 of
email/password-hash/site-id, so a password change invalidates them) and ``root_token_id`` (the
sign-in family that sign-out revokes). Expiry is judged by the emulator clock. An unparsable or
expired access token makes the request anonymous.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

import pyotp
import structlog
from aiohttp import web

from emulator import errors, hashids
from emulator.core import State, field_str, ok, read_json, state, timestamp
from emulator.errors import ApiError
from emulator.store import User

log = structlog.get_logger("emulator.session")
routes = web.RouteTableDef()
_TWO_FA_TTL = 600
_USER_KEY = web.RequestKey("emulator_user", tuple)


class _Totp(pyotp.TOTP):
    """TOTP that accepts any secret length, as the real server's OTP library does."""

    min_secret_length_bits = 0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(secret: str, claims: dict[str, Any]) -> str:
    """Return an HS256 JWT of ``claims``."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(sig)}"


def parse_jwt(secret: str, token: str, now: float) -> dict[str, Any] | None:
    """Return the claims of a valid, unexpired token signed with ``secret``, else None."""
    try:
        header, payload, sig = token.split(".")
        expected = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
        if not hmac.compare_digest(_unb64(sig), expected.digest()):
            return None
        claims = json.loads(_unb64(payload))
    except (ValueError, TypeError):
        return None
    if not isinstance(claims, dict):
        return None
    if float(claims.get("exp", 0)) <= now or float(claims.get("nbf", 0)) > now + 1:
        return None
    return claims


def _state_hash(st: State, user: User) -> str:
    raw = f"{user.email}/{user.password_hash}/{st.store.instance_id}".encode()
    return base64.b64encode(hashlib.sha256(raw).digest()).decode()


def issue_tokens(st: State, user: User, root_id: str | None = None) -> dict[str, Any]:
    """Return a new ``Token`` pair (contract 2.2) for a sign-in family."""
    now = st.clock.now()
    access_exp = now + st.config.token_ttl
    refresh_exp = now + st.config.refresh_ttl
    sub = user.hash_id
    access = sign_jwt(
        st.store.secret,
        {"token_type": "access", "sub": sub, "nbf": int(now), "iat": now, "exp": int(access_exp)},
    )
    refresh = sign_jwt(
        st.store.secret,
        {
            "token_type": "refresh",
            "sub": sub,
            "nbf": int(now),
            "iat": now,
            "exp": int(refresh_exp),
            "state_hash": _state_hash(st, user),
            "root_token_id": root_id or str(uuid.uuid4()),
        },
    )
    return {
        "access_token": access,
        "refresh_token": refresh,
        "access_expires": timestamp(int(access_exp)),
        "refresh_expires": timestamp(int(refresh_exp)),
    }


def user_json(st: State, user: User | None, *, full: bool = True) -> dict[str, Any]:
    """Return the ``User`` object of the contract (2.2); None gives the anonymous user."""
    if user is None:
        return {
            "id": "",
            "nickname": "",
            "created_at": timestamp(0),
            "anonymous": True,
            "group": {"id": hashids.encode(3, hashids.GROUP), "name": "Anonymous"},
        }
    body: dict[str, Any] = {
        "id": user.hash_id,
        "email": user.email,
        "nickname": user.nickname,
        "status": user.status,
        "created_at": timestamp(user.created_at),
    }
    if full:
        perms = (0, 2, 3, 4, 5, 6, 7, 9, 11, 12, 16) if user.is_admin else (2, 7, 11)
        body["group"] = {
            "id": hashids.encode(1 if user.is_admin else 2, hashids.GROUP),
            "name": "Admin" if user.is_admin else "User",
            "permission": boolset(perms),
            "trash_retention": 604800,
        }
        body["language"] = "en-US"
    return body


def boolset(flags: tuple[int, ...]) -> str:
    """Return the base64 boolset with the given flags set (contract 3)."""
    if not flags:
        return ""
    raw = bytearray(max(flags) // 8 + 1)
    for flag in flags:
        raw[flag // 8] |= 1 << (flag % 8)
    return base64.b64encode(bytes(raw)).decode()


def current_user(request: web.Request) -> User | None:
    """Return the signed-in user of a request, or None for an anonymous one (contract 2.3).

    Raises:
        ApiError: 40020 for a refresh token used as access, 404 for an unknown subject, 50001
            for an inactive user.
    """
    cached = request.get(_USER_KEY)
    if cached is not None:
        return cached[0]  # type: ignore[no-any-return]  # a 1-tuple holding User | None
    user = _authenticate(request)
    request[_USER_KEY] = (user,)
    return user


def _authenticate(request: web.Request) -> User | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or header.startswith("Bearer Cr "):
        return None
    st = state(request)
    claims = parse_jwt(st.store.secret, header[7:].strip(), st.clock.now())
    if claims is None:
        log.warning("auth_token_ignored", reason="invalid or expired")
        return None
    if claims.get("token_type") != "access":
        raise ApiError(errors.CREDENTIAL_INVALID, "Invalid token type")
    if float(claims.get("iat", 0)) < st.store.tokens_not_before:
        log.warning("auth_token_ignored", reason="expired by fault")
        return None
    try:
        user_id = hashids.decode(str(claims.get("sub", "")), hashids.USER)
    except hashids.HashIdError as exc:
        raise ApiError(errors.NOT_FOUND, "User not found") from exc
    try:
        user = st.store.user(user_id)
    except ApiError as exc:
        raise ApiError(errors.DB_ERROR, "failed to get login user") from exc
    if user.status != "active":
        raise ApiError(errors.DB_ERROR, "failed to get login user")
    return user


def require_user(request: web.Request) -> User:
    """Return the signed-in user, or raise 401 ``Login required``."""
    user = current_user(request)
    if user is None:
        raise ApiError(errors.CHECK_LOGIN, "Login required")
    return user


def require_admin(request: web.Request) -> User:
    """Return the signed-in admin, or raise 401/403."""
    user = require_user(request)
    if not user.is_admin:
        raise ApiError(errors.NO_PERMISSION, "Admin only")
    return user


@routes.get("/api/v4/session/prepare")
async def prepare(request: web.Request) -> web.Response:
    """Report the sign-in methods of an email (404 when unknown)."""
    email = request.query.get("email", "")
    if "@" not in email:
        raise errors.param_error("Email format error")
    if state(request).store.user_by_email(email) is None:
        raise ApiError(errors.NOT_FOUND, "User not found")
    return ok({"webauthn_enabled": False, "password_enabled": True})


@routes.post("/api/v4/session/token")
async def sign_in(request: web.Request) -> web.Response:
    """Password sign-in: a LoginResponse, or 203 with a 2FA session id."""
    st = state(request)
    body = await read_json(request)
    email = field_str(body, "email", required=True)
    password = field_str(body, "password", required=True)
    if "@" not in email:
        raise errors.param_error("Email format error")
    if not 4 <= len(password) <= 128:
        raise errors.param_error("Password too short")
    user = st.store.user_by_email(email)
    if user is None or not st.store.check_password(user, password):
        raise ApiError(errors.INVALID_PASSWORD, "Incorrect password or email address")
    _check_active(user)
    if user.totp_secret:
        session_id = str(uuid.uuid4())
        st.store.kv_set(f"user_2fa_{session_id}", user.id, _TWO_FA_TTL)
        raise ApiError(errors.NOT_FULLY_SUCCESS, "", data=session_id, correlation=False)
    log.info("session_signed_in", user_id=user.hash_id)
    return ok({"user": user_json(st, user), "token": issue_tokens(st, user)})


def _check_active(user: User) -> None:
    if user.status in ("manual_banned", "sys_banned"):
        raise ApiError(errors.USER_BANED, "This account has been blocked")
    if user.status == "inactive":
        raise ApiError(errors.USER_NOT_ACTIVATED, "This account is not activated")


@routes.post("/api/v4/session/token/2fa")
async def sign_in_2fa(request: web.Request) -> web.Response:
    """Finish a 2FA sign-in with a TOTP code (404 unknown session, 40022 wrong code)."""
    st = state(request)
    body = await read_json(request)
    otp = field_str(body, "otp", required=True)
    session_id = field_str(body, "session_id", required=True)
    user_id = st.store.kv_get(f"user_2fa_{session_id}")
    if user_id is None:
        raise ApiError(errors.NOT_FOUND, "Session not found")
    user = st.store.user(int(user_id))
    if not _Totp(user.totp_secret).verify(otp, for_time=int(st.clock.now()), valid_window=1):
        raise ApiError(errors.TWO_FA_CODE_ERR, "Incorrect 2FA code")
    st.store.kv_delete(f"user_2fa_{session_id}")
    return ok({"user": user_json(st, user), "token": issue_tokens(st, user)})


def _parse_refresh(st: State, token: str) -> tuple[User, dict[str, Any]]:
    claims = parse_jwt(st.store.secret, token, st.clock.now())
    if claims is None or claims.get("token_type") != "refresh":
        raise ApiError(errors.CREDENTIAL_INVALID, "Invalid refresh token")
    root = str(claims.get("root_token_id", ""))
    revoked_until = st.store.revoked_roots.get(root)
    if revoked_until is not None and revoked_until > st.clock.now():
        raise ApiError(errors.CREDENTIAL_INVALID, "Refresh token revoked")
    try:
        user = st.store.user(hashids.decode(str(claims.get("sub", "")), hashids.USER))
    except (hashids.HashIdError, ApiError) as exc:
        raise ApiError(errors.CREDENTIAL_INVALID, "Invalid refresh token") from exc
    if user.status != "active" or claims.get("state_hash") != _state_hash(st, user):
        raise ApiError(errors.CREDENTIAL_INVALID, "Invalid refresh token")
    return user, claims


@routes.post("/api/v4/session/token/refresh")
async def refresh(request: web.Request) -> web.Response:
    """Issue a new token pair of the same family; the old refresh token stays valid."""
    st = state(request)
    body = await read_json(request)
    user, claims = _parse_refresh(st, field_str(body, "refresh_token", required=True))
    return ok(issue_tokens(st, user, str(claims["root_token_id"])))


@routes.delete("/api/v4/session/token")
async def sign_out(request: web.Request) -> web.Response:
    """Revoke the whole refresh-token family for ``refresh_ttl + 10`` seconds."""
    st = state(request)
    body = await read_json(request)
    token = field_str(body, "refresh_token", required=True)
    claims = parse_jwt(st.store.secret, token, st.clock.now())
    if claims is None or claims.get("token_type") != "refresh":
        raise ApiError(errors.CREDENTIAL_INVALID, "Invalid refresh token")
    until = st.clock.now() + st.config.refresh_ttl + 10
    st.store.revoked_roots[str(claims.get("root_token_id", ""))] = until
    return ok("")
