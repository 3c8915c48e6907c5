"""File routes (contract 5.1-5.7, 5.9, 5.10, 5.12, 5.13) and the shared FileResponse builders."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import structlog
from aiohttp import web

from emulator import errors, hashids
from emulator.core import (
    State,
    field_bool,
    field_str,
    field_str_list,
    ok,
    query_bool,
    query_int,
    read_json,
    state,
    timestamp,
)
from emulator.errors import ApiError
from emulator.policy import PolicyInfo
from emulator.session import current_user, require_user, user_json
from emulator.store import (
    ENTITY_VERSION,
    FILE,
    FOLDER,
    LOCAL_STORAGE_TYPES,
    Entity,
    FileRow,
    Store,
    Uri,
    User,
    commit_version,
    encode_segment,
    format_uri,
    my_uri,
    parent_of,
    parse_uri,
    preallocate,
)

log = structlog.get_logger("emulator.files")
routes = web.RouteTableDef()

CAP_MY = "w8edAQ=="
CAP_TRASH = "AMIK"
CAP_SHARE = "gIaYAQ=="
CAP_SHARED_WITH_ME = "gAKA"
MAX_PAGE_SIZE = 2000
DEFAULT_PAGE_SIZE = 100
MAX_BATCH = 3000
ORDER_BY = ("name", "size", "updated_at", "created_at")
_META_NAMESPACES = ("sys", "dav", "thumb", "customize", "tag", "props")
_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_WRITE_PIECE = 256 * 1024


# ---- resolving URIs ----


def resolve(request: web.Request, raw: str) -> tuple[Uri, User | None, FileRow | None]:
    """Resolve a URI for the caller: ``(uri, user, item)``.

    ``item`` is None only for the virtual roots of ``trash`` and ``shared_with_me``.

    Raises:
        ApiError: 40001 bad URI, 401 anonymous on ``my``/``trash``, 403 someone else's drive,
            40016 a missing path.
    """
    st = state(request)
    uri = parse_uri(raw)
    if uri.fs == "my":
        user = require_user(request)
        if uri.fs_id and uri.fs_id != user.hash_id:
            raise ApiError(errors.NO_PERMISSION, "Not supported action")
        return uri, user, st.store.resolve(user.id, uri.path)
    if uri.fs == "trash":
        user = require_user(request)
        if uri.path == "/":
            return uri, user, None
        return uri, user, st.store.trash_item(user.id, uri.path)
    if uri.fs == "share":
        return uri, current_user(request), _resolve_share(st, uri)
    # shared_with_me: the emulator has no shares between users, so its root is empty.
    user = require_user(request)
    if uri.path != "/":
        raise errors.not_found_path()
    return uri, user, None


def _resolve_share(st: State, uri: Uri) -> FileRow:
    try:
        share_id = hashids.decode(uri.fs_id, hashids.SHARE)
    except hashids.HashIdError as exc:
        raise ApiError(errors.NOT_FOUND, "Share not found") from exc
    share = st.store.share(share_id)
    if share["is_private"] and uri.password != share["password"]:
        raise ApiError(errors.NO_PERMISSION, "Incorrect share password")
    if share["expires"] is not None and share["expires"] <= st.clock.now():
        raise ApiError(errors.NOT_FOUND, "Share expired")
    current = st.store.file(share["file_id"])
    for name in [p for p in uri.path.split("/") if p]:
        found = st.store.child(current.id, name) if current.is_folder else None
        if found is None:
            raise errors.not_found_path()
        current = found
    return current


def resolve_mine(request: web.Request, raw: str) -> tuple[User, FileRow]:
    """Resolve a ``cloudreve://my`` URI of the caller (403 for other file systems)."""
    uri, user, item = resolve(request, raw)
    if uri.fs != "my" or user is None or item is None:
        raise ApiError(errors.NO_PERMISSION, "Not supported action")
    return user, item


# ---- serialisation ----


def policy_json(policy: PolicyInfo, store: Store | None = None) -> dict[str, Any]:
    """Return the ``StoragePolicy`` object of a policy (contract 5.1)."""
    body: dict[str, Any] = {
        "id": policy.hash_id,
        "name": policy.name,
        "type": policy.type,
        "max_size": policy.max_size,
    }
    if store is not None:
        rules = store.policy_rules(policy.id)
        if rules["allowed_suffix"]:
            body["allowed_suffix"] = rules["allowed_suffix"]
        if rules["denied_suffix"]:
            body["denied_suffix"] = rules["denied_suffix"]
        if rules["allowed_regexp"]:
            body["allowed_name_regexp"] = rules["allowed_regexp"]
        if rules["denied_regexp"]:
            body["denied_name_regexp"] = rules["denied_regexp"]
    if policy.relay:
        body["relay"] = True
    if policy.chunk_concurrency > 1:
        body["chunk_concurrency"] = policy.chunk_concurrency
    return body


def entity_json(st: State, ent: Entity) -> dict[str, Any]:
    """Return the ``Entity`` object of a blob (contract 5.1)."""
    owner = st.store.user(ent.owner_id)
    return {
        "id": ent.hash_id,
        "size": ent.size,
        "type": ent.type,
        "created_at": timestamp(ent.created_at),
        "storage_policy": policy_json(st.store.policy(ent.policy_id)),
        "created_by": user_json(st, owner, full=False),
    }


def file_uri(st: State, item: FileRow, view: Uri | None = None) -> str:
    """Return an item's URI from the requester's view (share views keep the share prefix)."""
    if view is not None and view.fs == "share":
        base = st.store.share(hashids.decode(view.fs_id, hashids.SHARE))
        root = st.store.file(base["file_id"])
        rel = st.store.path_of(item)[len(st.store.path_of(root)) :]
        prefix = f"{view.fs_id}:{view.password}@" if view.password else f"{view.fs_id}@"
        return format_uri("share", rel).replace("cloudreve://", f"cloudreve://{prefix}", 1)
    if st.store.in_trash(item):
        return format_uri("trash", st.store.path_of(item))
    return my_uri(st.store.path_of(item))


def file_json(
    st: State,
    item: FileRow,
    viewer: User | None,
    view: Uri | None = None,
    *,
    extended: bool = False,
    summary: bool = False,
    parent: tuple[str, bool] | None = None,
) -> dict[str, Any]:
    """Return the ``FileResponse`` of an item (contract 5.1).

    ``parent`` is ``(parent URI, parent in trash)`` when the caller knows it (listings), which
    spares walking up the tree for every item.
    """
    meta = st.store.metadata(item.id)
    name = item.name
    if item.trashed and "sys:restore_uri" in meta:
        name = parent_of(parse_uri(meta["sys:restore_uri"]).path)[1]
    if parent is not None:
        path, in_trash = f"{parent[0]}/{encode_segment(item.name)}", parent[1]
    else:
        path, in_trash = file_uri(st, item, view), st.store.in_trash(item)
    body: dict[str, Any] = {
        "type": item.type,
        "id": item.hash_id,
        "name": name,
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
        "size": 0 if item.is_folder else item.size,
        "metadata": meta or None,
        "path": path,
        "capability": CAP_TRASH
        if in_trash
        else CAP_SHARE
        if view and view.fs == "share"
        else CAP_MY,
        "owned": viewer is not None and viewer.id == item.owner_id,
        "primary_entity": hashids.encode(item.primary_entity or 0, hashids.ENTITY),
    }
    if st.store.is_shared(item.id):
        body["shared"] = True
    if summary and item.is_folder:
        body["folder_summary"] = folder_summary(st, item)
    if extended:
        body["extended_info"] = _extended(st, item, viewer)

    return body


def folder_summary(st: State, folder: FileRow) -> dict[str, Any]:
    """Return the recursive counts of a folder (contract 5.3)."""
    size = files = folders = 0
    for _, item in st.store.walk(folder, "/"):
        if item.is_folder:
            folders += 1
        else:
            files += 1
            size += item.size
    return {
        "size": size,
        "files": files,
        "folders": folders,
        "completed": True,
        "calculated_at": timestamp(st.clock.now()),
    }


def _extended(st: State, item: FileRow, viewer: User | None) -> dict[str, Any]:
    ents = st.store.entities(item.id)
    policy = (
        st.store.policy(st.store.entity(item.primary_entity).policy_id)
        if item.primary_entity
        else st.store.policy_for(
            item if item.is_folder else st.store.file(item.parent_id or item.id)
        )
    )
    info: dict[str, Any] = {
        "storage_policy": policy_json(policy),
        "storage_used": sum(e.size for e in ents),
        "entities": [entity_json(st, e) for e in ents],
    }
    if viewer is not None and viewer.id == item.owner_id:
        info["shares"] = []
    return info


# ---- batch helper ----


async def run_batch(
    request: web.Request, uris: list[str], op: Callable[[str], Awaitable[None]]
) -> None:
    """Run ``op`` per URI; any per-item ApiError makes the call fail with 40081 (contract 1.4).

    ``op`` raises :class:`BatchAbort` to stop the whole batch with a direct error.
    """
    if len(uris) > MAX_BATCH:
        raise ApiError(errors.TOO_MANY_URIS, "Too many URIs")
    failed: dict[str, dict[str, Any]] = {}
    for raw in uris:
        try:
            await op(raw)
        except BatchAbort as stop:
            raise stop.error from None
        except ApiError as exc:
            failed[raw] = {"code": exc.code, "msg": exc.msg, "correlation_id": str(uuid.uuid4())}
    if failed:
        msg = (
            next(iter(failed.values()))["msg"]
            if len(failed) == 1
            else "Failed to complete some operations"
        )
        raise ApiError(errors.BATCH_NOT_FULLY_COMPLETED, msg, aggregated=failed)


class BatchAbort(Exception):
    """Stops a batch operation with a direct (not aggregated) error."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.msg)
        self.error = error


# ---- list and info ----


@routes.get("/api/v4/file")
async def list_files(request: web.Request) -> web.Response:
    """List a folder with cursor pagination, folders first (contract 5.2)."""
    st = state(request)
    raw = request.query.get("uri", "")
    if not raw:
        raise errors.param_error()
    page_size = query_int(request, "page_size", 0)
    if page_size < 0:
        raise errors.param_error()
    page_size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    order_by = request.query.get("order_by", "")
    direction = request.query.get("order_direction", "") or "asc"
    if (order_by and order_by not in ORDER_BY) or direction not in ("asc", "desc"):
        raise errors.param_error()
    uri, user, folder = resolve(request, raw)
    search = _search_filter(uri.query)
    if folder is None:
        trash = uri.fs == "trash" and user is not None
        items = st.store.trash_items(user.id) if trash and user is not None else []
        parent_json = None
        capability = CAP_TRASH if trash else CAP_SHARED_WITH_ME
    else:
        if not folder.is_folder:
            raise errors.not_found_path()
        items = _search(st, folder, search) if search else st.store.children(folder.id)
        parent_json = file_json(st, folder, user, uri)
        capability = CAP_TRASH if uri.fs == "trash" else CAP_SHARE if uri.fs == "share" else CAP_MY
    token = _parse_cursor(request.query.get("next_page_token", ""))
    page, next_token = _cursor_page(items, order_by, direction, bool(search), token, page_size)
    known = None
    if folder is not None and not search:
        known = (file_uri(st, folder, uri), st.store.in_trash(folder))
    pagination: dict[str, Any] = {"page": 0, "page_size": page_size, "is_cursor": True}
    if next_token:
        pagination["next_token"] = next_token
    body: dict[str, Any] = {
        "files": [file_json(st, f, user, uri, parent=known) for f in page],
        "pagination": pagination,
        "props": {
            "capability": capability,
            "max_page_size": MAX_PAGE_SIZE,
            "order_by_options": None if search else list(ORDER_BY),
            "order_direction_options": ["asc", "desc"],
        },
        "context_hint": str(uuid.uuid4()),
        "mixed_type": bool(search),
    }
    if parent_json is not None:
        body["parent"] = parent_json
    if folder is not None and uri.fs == "my":
        body["storage_policy"] = policy_json(st.store.policy_for(folder), st.store)

    return ok(body)


def _search_filter(query: str) -> dict[str, list[str]]:
    parsed = parse_qs(query, keep_blank_values=True)
    return {k: v for k, v in parsed.items() if k in ("name", "type", "case_folding", "use_or")}


def _search(st: State, folder: FileRow, search: dict[str, list[str]]) -> list[FileRow]:
    names = search.get("name", [])
    fold = "case_folding" in search
    any_of = "use_or" in search
    kind = (search.get("type") or [""])[0]
    found = []
    for _, item in st.store.walk(folder, "/"):
        if (kind == "file" and item.is_folder) or (kind == "folder" and not item.is_folder):
            continue
        hay = item.name.lower() if fold else item.name
        hits = [(n.lower() if fold else n) in hay for n in names]
        if names and not (any(hits) if any_of else all(hits)):
            continue
        found.append(item)
    return found


def _order_value(item: FileRow, order_by: str) -> Any:
    """Return the value the real server orders by (the id when ``order_by`` is empty)."""
    return {
        "name": item.name,
        "size": item.size,
        "updated_at": item.updated_at,
        "created_at": item.created_at,
    }.get(order_by, item.id)


def _cursor_page(
    items: list[FileRow],
    order_by: str,
    direction: str,
    mixed: bool,
    token: dict[str, Any] | None,
    page_size: int,
) -> tuple[list[FileRow], str]:
    """Return one page and its next token, as the real server's keyset cursor pagination.

    Folders are listed before files (unless ``mixed``), each ordered by ``(value, id)``. The token
    holds the last item's value and id, so items deleted or added between pages shift nothing.
    A quirk of the real server is kept: when the folders still to list exactly fill a page, the
    token names the last folder but says "continue with files", so the next page starts with the
    files ordered after that folder and the files ordered before it are never listed.
    """
    desc = direction == "desc"
    ordered = sorted(items, key=lambda f: (_order_value(f, order_by), f.id), reverse=desc)
    if mixed:
        queries = [ordered]
    else:
        queries = [[f for f in ordered if f.is_folder], [f for f in ordered if not f.is_folder]]
        if token is not None and token["start_with_file"]:
            queries = queries[1:]
    if token is not None:
        # Only the first query is filtered by the token, exactly as the real server does.
        after = (_token_value(token, order_by), token["id"])
        queries[0] = [
            f
            for f in queries[0]
            if (
                (_order_value(f, order_by), f.id) < after
                if desc
                else (_order_value(f, order_by), f.id) > after
            )
        ]
    got = queries[0][: page_size + 1]
    start_with_file = token is not None and bool(token["start_with_file"])
    if len(got) < page_size + 1 and len(queries) > 1:
        got += queries[1][: page_size + 1 - len(got)]
        start_with_file = True
    if len(got) <= page_size:
        return got, ""
    last = got[page_size - 1]
    return got[:page_size], _cursor_token(last, order_by, start_with_file)


def _token_value(token: dict[str, Any], order_by: str) -> Any:
    """Return the token's value for this order; a value of another kind counts as zero, like
    the real token's unset fields (a token reused with a different ``order_by``)."""
    if order_by not in ORDER_BY:
        return token["id"]
    zero: Any = "" if order_by == "name" else 0
    value = token["value"]
    return value if isinstance(value, str) == isinstance(zero, str) else zero


def _cursor_token(last: FileRow, order_by: str, start_with_file: bool) -> str:
    raw: dict[str, Any] = {"id": hashids.encode(last.id, hashids.FILE)}
    if order_by in ORDER_BY:
        raw["value"] = _order_value(last, order_by)
    if start_with_file:
        raw["start_with_file"] = True
    return base64.b64encode(json.dumps(raw).encode()).decode()


def _parse_cursor(token: str) -> dict[str, Any] | None:
    """Decode a next_page_token; a bad one is code -1, as the real server's untyped error."""
    if not token:
        return None
    try:
        parsed = json.loads(base64.b64decode(token, validate=True))
        last = hashids.decode(str(parsed["id"]), hashids.FILE)
        value = parsed.get("value", last)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise TypeError("bad value")
    except (ValueError, KeyError, TypeError, AttributeError, hashids.HashIdError) as exc:
        raise ApiError(errors.NOT_SET, "") from exc
    return {"id": last, "value": value, "start_with_file": bool(parsed.get("start_with_file"))}


@routes.get("/api/v4/file/info")
async def file_info(request: web.Request) -> web.Response:
    """Return one item; ``extended`` adds versions and policy, ``folder_summary`` counts."""
    st = state(request)
    raw = request.query.get("uri", "")
    if raw:
        uri, user, item = resolve(request, raw)
        if item is None:
            raise ApiError(errors.NO_PERMISSION, "Not supported action")
    elif request.query.get("id"):
        user = require_user(request)
        try:
            item = st.store.file(hashids.decode(request.query["id"], hashids.FILE))
        except hashids.HashIdError as exc:
            raise ApiError(errors.PARAM_ERR, "Failed to parse object ID") from exc
        if item.owner_id != user.id:
            raise ApiError(errors.OWNER_ONLY, "Only the owner can do this")
        uri = parse_uri(file_uri(st, item))
    else:
        raise errors.param_error()
    if item.parent_id is None and not item.trashed and uri.fs == "my":
        raise ApiError(errors.NO_PERMISSION, "Not supported action")
    body = file_json(
        st,
        item,
        user,
        uri,
        extended=query_bool(request, "extended"),
        summary=query_bool(request, "folder_summary"),
    )
    return ok(body)


# ---- create, rename, move, delete, restore ----


def validate_metadata(patch: dict[str, Any], *, allow_sys_shared: bool = True) -> dict[str, str]:
    """Check metadata keys and values (contract 5.12); 40001 on a bad key or value."""
    out: dict[str, str] = {}
    for key, value in patch.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise errors.param_error("Invalid metadata")
        check_meta_key(key, value)
        out[key] = value
    return out


def check_meta_key(key: str, value: str | None, *, remove: bool = False) -> None:
    """Validate one metadata patch (40001 when the namespace or value is not allowed)."""
    namespace, sep, name = key.partition(":")
    if not sep or not name or namespace not in _META_NAMESPACES:
        raise ApiError(errors.PARAM_ERR, f"Unknown metadata key: {key}")
    if namespace == "sys":
        if key not in ("sys:shared_owner", "sys:shared_redirect") or remove:
            raise ApiError(errors.PARAM_ERR, f"Metadata key not allowed: {key}")
    elif namespace == "tag" and value and not remove and not _COLOR.match(value):
        raise ApiError(errors.PARAM_ERR, "Invalid tag color")
    elif key == "customize:icon_color" and value and not remove and not _COLOR.match(value):
        raise ApiError(errors.PARAM_ERR, "Invalid icon color")
    elif namespace == "customize" and key not in ("customize:icon_color", "customize:emoji"):
        raise ApiError(errors.PARAM_ERR, f"Unknown metadata key: {key}")
    elif namespace == "props":
        raise ApiError(errors.PARAM_ERR, f"Unknown custom property: {key}")


@routes.post("/api/v4/file/create")
async def create(request: web.Request) -> web.Response:
    """Create a file or folder; ancestors are auto-created (contract 5.4)."""
    st = state(request)
    body = await read_json(request)
    raw = field_str(body, "uri", required=True)
    kind = field_str(body, "type", required=True)
    if kind not in ("file", "folder"):
        raise errors.param_error()
    meta_in = body.get("metadata") or {}
    if not isinstance(meta_in, dict):
        raise errors.param_error()
    meta = validate_metadata(meta_in)
    uri = parse_uri(raw)
    if uri.fs != "my":
        require_user(request)
        raise ApiError(errors.NO_PERMISSION, "Not supported action")
    user = require_user(request)
    type_ = FOLDER if kind == "folder" else FILE
    existing = st.store.lookup(user.id, uri.path)
    if existing is not None:
        if existing.type != type_ or field_bool(body, "err_on_conflict"):
            raise ApiError(errors.OBJECT_EXIST, "Object existed")
        return ok(file_json(st, existing, user, uri))
    if uri.path == "/":
        raise ApiError(errors.NO_PERMISSION, "Not supported action")
    st.store.check_unlocked(user.id, uri.path, subtree=False)
    with st.store.tx():
        item = st.store.create(user.id, uri.path, type_)
        for key, value in meta.items():
            st.store.set_metadata(item.id, key, value)

    return ok(file_json(st, item, user, uri))


@routes.post("/api/v4/file/rename")
async def rename(request: web.Request) -> web.Response:
    """Rename an item (contract 5.5)."""
    st = state(request)
    body = await read_json(request)
    raw = field_str(body, "uri", required=True)
    new_name = field_str(body, "new_name", required=True)
    if len(new_name) > 255:
        raise errors.param_error()
    user, item = resolve_mine(request, raw)
    path = st.store.path_of(item)
    st.store.check_unlocked(user.id, path)
    renamed = st.store.rename(item, new_name)
    return ok(file_json(st, renamed, user))


@routes.post("/api/v4/file/move")
async def move(request: web.Request) -> web.Response:
    """Move or copy items into a destination folder (contract 5.6)."""
    st = state(request)
    body = await read_json(request)
    uris = field_str_list(body, "uris")
    copy = field_bool(body, "copy")
    dst_raw = field_str(body, "dst", required=True)
    try:
        user, dst = resolve_mine(request, dst_raw)
    except ApiError as exc:
        # Nested errors surface the inner code with the outer message (contract 1.4).
        raise ApiError(exc.code, "Invalid destination") from exc
    if not dst.is_folder:
        raise ApiError(errors.PARENT_NOT_EXIST, "Invalid destination")
    dst_path = st.store.path_of(dst)

    async def one(raw: str) -> None:
        uri, _, item = resolve(request, raw)
        if item is None or uri.fs not in ("my", "trash") or (copy and uri.fs != "my"):
            raise ApiError(errors.NO_PERMISSION, "Not supported action")
        if item.parent_id is None and not item.trashed:
            raise ApiError(errors.NO_PERMISSION, "Not supported action")
        src_path = st.store.path_of(item)
        if (
            item.is_folder
            and uri.fs == "my"
            and (dst_path == src_path or dst_path.startswith(src_path.rstrip("/") + "/"))
        ):
            raise ApiError(errors.NO_PERMISSION, "Cannot move a folder into itself")
        name = file_json(st, item, None)["name"] if item.trashed else item.name
        if st.store.child(dst.id, name) is not None:
            raise BatchAbort(ApiError(errors.OBJECT_EXIST, "Object existed"))
        if uri.fs == "my" and not copy:
            held = st.store.locked(user.id, src_path, subtree=True)
            if held is not None:
                raise BatchAbort(st.store.lock_conflict([held]))
        if copy:
            st.store.copy(item, dst)
        elif item.trashed:
            st.store.untrash_into(item, dst)
        else:
            st.store.move(item, dst)

    await run_batch(request, uris, one)
    return ok()


@routes.delete("/api/v4/file")
async def delete(request: web.Request) -> web.Response:
    """Soft-delete into the trash, or hard-delete with ``skip_soft_delete`` (contract 5.7)."""
    st = state(request)
    body = await read_json(request)
    uris = field_str_list(body, "uris")
    unlink = field_bool(body, "unlink")
    hard = field_bool(body, "skip_soft_delete")

    async def one(raw: str) -> None:
        uri, user, item = resolve(request, raw)
        if item is None or user is None or uri.fs not in ("my", "trash"):
            raise ApiError(errors.NO_PERMISSION, "Not supported action")
        if unlink and not user.is_admin:
            raise ApiError(errors.NO_PERMISSION, "Advanced delete not allowed")
        if uri.fs == "trash" and not hard:
            raise ApiError(errors.NO_PERMISSION, "Not supported action")
        if uri.fs == "my":
            held = st.store.locked(user.id, st.store.path_of(item), subtree=True)
            if held is not None:
                raise BatchAbort(st.store.lock_conflict([held]))
        if hard:
            orphans = st.store.hard_delete(item)
            if not unlink:
                await st.store.delete_blobs(orphans)
        else:
            st.store.soft_delete(item)

    await run_batch(request, uris, one)
    return ok()


@routes.post("/api/v4/file/restore")
async def restore(request: web.Request) -> web.Response:
    """Move trash items back to their ``sys:restore_uri`` (contract 5.7)."""
    st = state(request)
    body = await read_json(request)

    async def one(raw: str) -> None:
        uri, _, item = resolve(request, raw)
        if uri.fs != "trash" or item is None:
            raise ApiError(errors.NO_PERMISSION, "Not supported action")
        st.store.restore(item)

    await run_batch(request, field_str_list(body, "uris"), one)
    return ok()


@routes.delete("/api/v4/file/trash")
async def empty_trash(request: web.Request) -> web.Response:
    """Hard-delete everything in the caller's trash."""
    st = state(request)
    user = require_user(request)
    for item in st.store.trash_items(user.id):
        await st.store.delete_blobs(st.store.hard_delete(item))
    return ok()


# ---- content, metadata, versions, locks ----


def declared_length(request: web.Request) -> int | None:
    """Return ``Content-Length`` or ``X-Expected-Entity-Length`` (None when neither is sent)."""
    for header in ("Content-Length", "X-Expected-Entity-Length"):
        raw = request.headers.get(header)
        if raw is not None:
            try:
                value = int(raw)
            except ValueError as exc:
                raise errors.param_error("Invalid Content-Length") from exc
            if value < 0:
                raise errors.param_error("Invalid Content-Length")
            return value
    return None


async def write_body(request: web.Request, dst: Path, offset: int, length: int) -> int:
    """Stream ``length`` body bytes to ``dst`` at ``offset`` in small pieces; return bytes read."""
    st = state(request)
    written = 0
    async with await anyio.open_file(dst, "r+b") as out:
        await out.seek(offset)
        while written < length:
            piece = await request.content.read(min(_WRITE_PIECE, length - written))
            if not piece:
                break
            await out.write(piece)
            written += len(piece)
            await st.faults.throttle(len(piece))
    return written


@routes.put("/api/v4/file/content")
async def put_content(request: web.Request) -> web.Response:
    """Replace a small file's content (new version) or create it (contract 5.9)."""
    st = state(request)
    raw = request.query.get("uri", "")
    if not raw:
        raise errors.param_error()
    uri = parse_uri(raw)
    user = require_user(request)
    if uri.fs != "my":
        raise ApiError(errors.NO_PERMISSION, "Not supported action")
    length = declared_length(request) or 0
    if length > st.config.max_edit_size:
        raise ApiError(errors.FILE_TOO_LARGE, "File too large")
    item = st.store.lookup(user.id, uri.path)
    if item is not None and item.is_folder:
        raise ApiError(errors.OBJECT_EXIST, "Object existed")
    st.store.check_unlocked(user.id, uri.path, subtree=False)
    previous = request.query.get("previous", "")
    if previous and item is not None:
        try:
            prev_id = hashids.decode(previous, hashids.ENTITY)
        except hashids.HashIdError as exc:
            raise ApiError(errors.PARAM_ERR, "Failed to parse object ID") from exc
        if prev_id != item.primary_entity:
            raise ApiError(errors.STALE_VERSION, "File version changed")
    created = item is None
    if item is None:
        item = st.store.create(user.id, uri.path, FILE)
    parent = st.store.file(item.parent_id) if item.parent_id is not None else item
    policy = st.store.policy_for(parent)
    try:
        st.store.check_quota(user.id, length)
        entity = await store_upload_body(request, item, policy, length)
    except ApiError:
        if created:
            st.store.hard_delete(item)
        raise
    await st.store.delete_blobs(commit_version(st.store, item, entity, st.clock.now()))
    return ok(file_json(st, st.store.file(item.id), user))


async def store_upload_body(
    request: web.Request, item: FileRow, policy: PolicyInfo, length: int
) -> Entity:
    """Write a whole request body as a new (uncommitted) entity of ``item``."""
    st = state(request)
    if policy.type not in LOCAL_STORAGE_TYPES and policy.type not in st.drivers:
        raise ApiError(errors.POLICY_NOT_ALLOWED, f"No driver for policy type {policy.type}")
    key = st.store.new_storage_key(item.owner_id, item.name)
    local = st.store.blob_path(key)
    if policy.type not in LOCAL_STORAGE_TYPES:
        local = st.store.data_dir / "tmp" / uuid.uuid4().hex
    preallocate(local, length)
    got = await write_body(request, local, 0, length)
    if got != length:
        local.unlink(missing_ok=True)
        raise ApiError(errors.IO_FAILED, "Failed to write file: unexpected end of body")
    if policy.type not in LOCAL_STORAGE_TYPES:
        await st.store.store_blob(policy, key, local)
        local.unlink(missing_ok=True)
    return st.store.add_entity(item.id, length, key, policy.id, ENTITY_VERSION)


@routes.patch("/api/v4/file/metadata")
async def patch_metadata(request: web.Request) -> web.Response:
    """Apply metadata patches to files (contract 5.12)."""
    st = state(request)
    body = await read_json(request)
    uris = field_str_list(body, "uris")
    patches = body.get("patches")
    if not isinstance(patches, list) or not patches:
        raise errors.param_error()
    checked: list[tuple[str, str, bool]] = []
    for patch in patches:
        if not isinstance(patch, dict) or not isinstance(patch.get("key"), str):
            raise errors.param_error()
        if patch.get("private"):
            raise errors.param_error()
        value = patch.get("value", "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise errors.param_error()
        remove = bool(patch.get("remove", False))
        check_meta_key(patch["key"], value, remove=remove)
        checked.append((patch["key"], value, remove))

    async def one(raw: str) -> None:
        user, item = resolve_mine(request, raw)
        st.store.check_unlocked(user.id, st.store.path_of(item), subtree=False)
        touch = False
        for key, value, remove in checked:
            if remove:
                st.store.delete_metadata(item.id, key)
            else:
                st.store.set_metadata(item.id, key, value)
            touch = touch or not key.startswith(("dav:", "thumb:", "sys:"))
        if touch:
            st.store.update_file(item.id, updated_at=st.clock.now())

    await run_batch(request, uris, one)
    return ok()


def _version_of(st: State, item: FileRow, raw: str) -> Entity:
    try:
        eid = hashids.decode(raw, hashids.ENTITY)
    except hashids.HashIdError as exc:
        raise ApiError(errors.PARAM_ERR, "Failed to parse object ID") from exc
    ent = next((e for e in st.store.entities(item.id) if e.id == eid), None)
    if ent is None or ent.type != ENTITY_VERSION or ent.upload_session_id:
        raise ApiError(errors.ENTITY_NOT_EXIST, "Entity not exist")
    return ent


@routes.post("/api/v4/file/version/current")
async def set_current_version(request: web.Request) -> web.Response:
    """Make a stored version the current one (contract 5.10)."""
    st = state(request)
    body = await read_json(request)
    user, item = resolve_mine(request, field_str(body, "uri", required=True))
    ent = _version_of(st, item, field_str(body, "version", required=True))
    st.store.check_unlocked(user.id, st.store.path_of(item), subtree=False)
    st.store.update_file(item.id, primary_entity=ent.id, size=ent.size)
    return ok()


@routes.delete("/api/v4/file/version")
async def delete_version(request: web.Request) -> web.Response:
    """Delete a non-current version (403 for the current one)."""
    st = state(request)
    body = await read_json(request)
    user, item = resolve_mine(request, field_str(body, "uri", required=True))
    ent = _version_of(st, item, field_str(body, "version", required=True))
    if ent.id == item.primary_entity:
        raise ApiError(errors.NO_PERMISSION, "Cannot delete the current version")
    st.store.check_unlocked(user.id, st.store.path_of(item), subtree=False)
    await st.store.delete_blobs(st.store.delete_entity(ent))
    return ok()


@routes.delete("/api/v4/file/lock")
async def force_unlock(request: web.Request) -> web.Response:
    """Release locks by token (contract 5.13)."""
    st = state(request)
    user = require_user(request)
    body = await read_json(request)
    for token in field_str_list(body, "tokens"):
        lock = st.store.locks.get(token)
        if lock is not None and lock.owner_id == user.id:
            st.store.unlock(token)
    return ok()
