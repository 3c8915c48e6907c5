"""User routes (contract 9.2), Pro policy/node listings and folder policy (9.5), WebDAV accounts
(9.4) and share links (9.3)."""

from __future__ import annotations

import secrets
import string
from typing import Any

from aiohttp import web

from emulator import errors, hashids
from emulator.core import (
    State,
    field_bool,
    field_int,
    field_str,
    ok,
    query_int,
    read_json,
    state,
    timestamp,
)
from emulator.errors import ApiError
from emulator.files import policy_json, resolve_mine
from emulator.session import boolset, current_user, require_user, user_json
from emulator.store import User, format_uri

routes = web.RouteTableDef()


@routes.get("/api/v4/user/me")
async def me(request: web.Request) -> web.Response:
    """Return the signed-in user."""
    return ok(user_json(state(request), require_user(request)))


@routes.get("/api/v4/user/capacity")
async def capacity(request: web.Request) -> web.Response:
    """Return ``{total, used}``; used counts trash, versions and upload reservations."""
    st = state(request)
    user = require_user(request)
    return ok({"total": user.quota, "used": st.store.used(user.id)})


def _settings(user: User) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version_retention_enabled": user.version_retention,
        "passwordless": False,
        "two_fa_enabled": bool(user.totp_secret),
        "disable_view_sync": False,
        "share_links_in_profile": "",
    }
    if user.retention_ext:
        body["version_retention_ext"] = list(user.retention_ext)
    if user.retention_max:
        body["version_retention_max"] = user.retention_max
    return body


@routes.get("/api/v4/user/setting")
async def get_setting(request: web.Request) -> web.Response:
    """Return the user's settings."""
    return ok(_settings(require_user(request)))


@routes.patch("/api/v4/user/setting")
async def patch_setting(request: web.Request) -> web.Response:
    """Change settings: version retention, nickname, password (invalidates refresh tokens)."""
    st = state(request)
    user = require_user(request)
    body = await read_json(request)
    changes: dict[str, Any] = {}
    if "version_retention_enabled" in body:
        changes["version_retention"] = int(field_bool(body, "version_retention_enabled"))
    if "version_retention_ext" in body:
        ext = body["version_retention_ext"] or []
        if not isinstance(ext, list) or not all(isinstance(e, str) for e in ext):
            raise errors.param_error()
        changes["retention_ext"] = tuple(ext)
    if "version_retention_max" in body:
        changes["retention_max"] = field_int(body, "version_retention_max", 0, minimum=0)
    if "nick" in body:
        changes["nickname"] = field_str(body, "nick", required=True)
    if "new_password" in body:
        new = field_str(body, "new_password", required=True)
        if not st.store.check_password(user, field_str(body, "current_password")):
            raise ApiError(errors.INVALID_PASSWORD, "Incorrect password")
        if not 6 <= len(new) <= 128:
            raise errors.param_error("Password too short")
        changes["password"] = new
    st.store.update_user(user.id, **changes)
    return ok()


@routes.get("/api/v4/user/setting/policies")
async def list_policies(request: web.Request) -> web.Response:
    """Return the storage policies available to the user (Pro shape)."""
    st = state(request)
    require_user(request)
    return ok([policy_json(p) for p in st.store.policies()])


@routes.get("/api/v4/user/setting/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    """Return the nodes (the built-in master, which is also the remote policy's slave)."""
    require_user(request)
    return ok(
        [
            {
                "id": hashids.encode(1, hashids.NODE),
                "name": "Master (Default)",
                "type": "master",
                "capabilities": boolset((1, 2, 3, 4)),
            }
        ]
    )


@routes.patch("/api/v4/file/policy")
async def set_folder_policy(request: web.Request) -> web.Response:
    """Set the policy new uploads under a folder use (inherited by subfolders)."""
    st = state(request)
    body = await read_json(request)
    _, folder = resolve_mine(request, field_str(body, "uri", required=True))
    if not folder.is_folder:
        raise ApiError(errors.NO_PERMISSION, "Not a folder")
    try:
        policy_id = hashids.decode(field_str(body, "policy_id", required=True), hashids.POLICY)
    except hashids.HashIdError as exc:
        raise ApiError(errors.PARAM_ERR, "Failed to parse object ID") from exc
    st.store.set_folder_policy(folder, policy_id)
    return ok()


# ---- WebDAV accounts ----


def _page_size(request: web.Request) -> int:
    size = query_int(request, "page_size", 0)
    if not 10 <= size <= 100:
        raise errors.param_error()
    return size


def _dav_json(row: Any) -> dict[str, Any]:
    return {
        "id": hashids.encode(row["id"], hashids.DAV_ACCOUNT),
        "created_at": timestamp(row["created_at"]),
        "name": row["name"],
        "uri": row["uri"],
        "password": row["password"],
        "options": boolset(tuple(i for i in range(3) if row["options"] >> i & 1)),
    }


def _dav_options(body: dict[str, Any]) -> int:
    return (
        int(field_bool(body, "readonly"))
        | int(field_bool(body, "proxy")) << 1
        | int(field_bool(body, "disable_sys_files")) << 2
    )


def _dav_body(request: web.Request, body: dict[str, Any]) -> tuple[str, str]:
    name = field_str(body, "name", required=True)
    if len(name) > 255:
        raise errors.param_error()
    raw = field_str(body, "uri", required=True)
    resolve_mine(request, raw)
    return name, raw


@routes.get("/api/v4/devices/dav")
async def list_dav(request: web.Request) -> web.Response:
    """List WebDAV accounts (page_size 10-100)."""
    st = state(request)
    user = require_user(request)
    size = _page_size(request)
    rows = st.store.dav_accounts(user.id)
    return ok(
        {
            "accounts": [_dav_json(r) for r in rows[:size]],
            "pagination": {"page": 0, "page_size": size, "is_cursor": True},
        }
    )


@routes.put("/api/v4/devices/dav")
async def create_dav(request: web.Request) -> web.Response:
    """Create a WebDAV account with a generated password."""
    st = state(request)
    user = require_user(request)
    body = await read_json(request)
    name, raw = _dav_body(request, body)
    new_id = st.store.create_dav_account(user.id, name, raw, _dav_options(body))
    return ok(_dav_json(st.store.dav_account(user.id, new_id)))


def _own_dav(st: State, user: User, raw_id: str) -> int:
    try:
        dav_id = hashids.decode(raw_id, hashids.DAV_ACCOUNT)
    except hashids.HashIdError as exc:
        raise ApiError(errors.PARAM_ERR, "Failed to parse object ID") from exc
    st.store.dav_account(user.id, dav_id)
    return dav_id


@routes.patch("/api/v4/devices/dav/{id}")
async def update_dav(request: web.Request) -> web.Response:
    """Change a WebDAV account."""
    st = state(request)
    user = require_user(request)
    dav_id = _own_dav(st, user, request.match_info["id"])
    body = await read_json(request)
    name, raw = _dav_body(request, body)
    st.store.update_dav_account(dav_id, name, raw, _dav_options(body))
    return ok(_dav_json(st.store.dav_account(user.id, dav_id)))


@routes.delete("/api/v4/devices/dav/{id}")
async def delete_dav(request: web.Request) -> web.Response:
    """Delete a WebDAV account."""
    st = state(request)
    user = require_user(request)
    dav_id = _own_dav(st, user, request.match_info["id"])
    st.store.delete_dav_account(dav_id)
    return ok()


# ---- shares ----


def _share_json(st: State, row: Any, viewer: User | None) -> dict[str, Any]:
    item = st.store.file(row["file_id"])
    owner = st.store.user(row["owner_id"])
    share_id = hashids.encode(row["id"], hashids.SHARE)
    expired = row["expires"] is not None and row["expires"] <= st.clock.now()
    body: dict[str, Any] = {
        "id": share_id,
        "name": item.name,
        "visited": row["visited"],
        "unlocked": True,
        "owner": user_json(st, owner, full=False),
        "created_at": timestamp(row["created_at"]),
        "expired": expired,
        "url": _share_url(st, share_id, row["password"]),
        "size": item.size,
        "source_type": item.type,
    }
    if row["downloads"]:
        body["remain_downloads"] = row["downloads"] - row["downloaded"]
    if row["expires"] is not None:
        body["expires"] = timestamp(row["expires"])
    if row["is_private"]:
        body["is_private"] = True
        body["password_protected"] = True
    if viewer is not None and viewer.id == row["owner_id"]:
        if row["password"]:
            body["password"] = row["password"]
        body["source_uri"] = format_uri("my", st.store.path_of(item))
    return body


def _share_url(st: State, share_id: str, password: str) -> str:
    return f"{st.site_url}/s/{share_id}" + (f"/{password}" if password else "")


def _share_args(body: dict[str, Any]) -> tuple[bool, str, int, float | None]:
    is_private = field_bool(body, "is_private")
    password = field_str(body, "password")
    if len(password) > 32 or (not password.isalnum() and password):
        raise errors.param_error()
    if is_private and not password:
        password = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    downloads = field_int(body, "downloads", 0, minimum=0)
    expire = field_int(body, "expire", 0, minimum=0)
    return is_private, password, downloads, float(expire) if expire else None


@routes.put("/api/v4/share")
async def create_share(request: web.Request) -> web.Response:
    """Create a share link; answers the link as a string."""
    st = state(request)
    body = await read_json(request)
    user, item = resolve_mine(request, field_str(body, "uri", required=True))
    is_private, password, downloads, expire = _share_args(body)
    expires = st.clock.now() + expire if expire else None
    share_id = st.store.create_share(user.id, item.id, password, is_private, downloads, expires)
    return ok(_share_url(st, hashids.encode(share_id, hashids.SHARE), password))


def _own_share(st: State, user: User, raw_id: str) -> int:
    try:
        share_id = hashids.decode(raw_id, hashids.SHARE)
    except hashids.HashIdError as exc:
        raise ApiError(errors.NOT_FOUND, "Share not found") from exc
    if st.store.share(share_id)["owner_id"] != user.id:
        raise ApiError(errors.NOT_FOUND, "Share not found")
    return share_id


@routes.post("/api/v4/share/{id}")
async def edit_share(request: web.Request) -> web.Response:
    """Edit a share link."""
    st = state(request)
    user = require_user(request)
    share_id = _own_share(st, user, request.match_info["id"])
    body = await read_json(request)
    is_private, password, downloads, expire = _share_args(body)
    expires = st.clock.now() + expire if expire else None
    st.store.update_share(share_id, password, is_private, downloads, expires)
    return ok(_share_url(st, request.match_info["id"], password))


@routes.delete("/api/v4/share/{id}")
async def delete_share(request: web.Request) -> web.Response:
    """Delete one share link."""
    st = state(request)
    user = require_user(request)
    st.store.delete_share(_own_share(st, user, request.match_info["id"]))
    return ok()


@routes.get("/api/v4/share")
async def list_shares(request: web.Request) -> web.Response:
    """List the caller's shares (page_size 10-100)."""
    st = state(request)
    user = require_user(request)
    size = _page_size(request)
    rows = st.store.shares(user.id)
    return ok(
        {
            "shares": [_share_json(st, r, user) for r in rows[:size]],
            "pagination": {"page": 0, "page_size": size, "is_cursor": True},
        }
    )


@routes.get("/api/v4/share/info/{id}")
async def share_info(request: web.Request) -> web.Response:
    """Return a share (password checked for private shares)."""
    st = state(request)
    try:
        share_id = hashids.decode(request.match_info["id"], hashids.SHARE)
    except hashids.HashIdError as exc:
        raise ApiError(errors.NOT_FOUND, "Share not found") from exc
    row = st.store.share(share_id)
    viewer = current_user(request)
    body = _share_json(st, row, viewer)
    hidden = row["is_private"] and request.query.get("password", "") != row["password"]
    if hidden and (viewer is None or viewer.id != row["owner_id"]):
        body["unlocked"] = False
    if request.query.get("count_views") in ("true", "1"):
        st.store.count_share_view(share_id)
    return ok(body)
