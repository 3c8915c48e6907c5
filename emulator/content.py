"""Download URLs (contract 5.8) and the signed content endpoint that serves local blobs.

URLs look like ``/api/v4/file/content/{entity}/{speed}/{name}?sign=<b64url hmac>:<exp>``. The
signature covers the decoded URL path only (``"<path>:<exp>"``); expiry is judged by the emulator
clock. Blobs of non-local policies get their driver's ``download_url``.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import structlog
from aiohttp import web

from emulator import errors, hashids
from emulator.core import (
    State,
    field_bool,
    field_str,
    field_str_list,
    hmac_check,
    hmac_sign,
    ok,
    read_json,
    state,
    timestamp,
)
from emulator.errors import ApiError
from emulator.faults import CUT_RESPONSE_AFTER
from emulator.files import MAX_BATCH, resolve
from emulator.session import require_user
from emulator.store import LOCAL_STORAGE_TYPES, Entity, FileRow

log = structlog.get_logger("emulator.content")
routes = web.RouteTableDef()
_PIECE = 256 * 1024
_PUBLIC_MAXAGE = 31536000
ARCHIVE_TTL = 600


def sign_url_path(secret: str, path: str, expires: int) -> str:
    """Return the ``sign`` value of a content URL: an HMAC over the URL path only."""
    return hmac_sign(secret, path, expires)


def content_url(st: State, entity: Entity, name: str, *, download: bool, ttl_s: int) -> str:
    """Return a signed content URL for a local blob."""
    expires = int(st.clock.now() + ttl_s) if ttl_s else 0
    path = f"/api/v4/file/content/{entity.hash_id}/0/{name}"
    sign = sign_url_path(st.store.secret, path, expires)
    escaped = f"/api/v4/file/content/{entity.hash_id}/0/{quote(name, safe='')}"
    query = ("download=true&" if download else "") + "sign=" + quote(sign, safe="")
    return f"{st.site_url}{escaped}?{query}"


async def _url_for(
    st: State, item: FileRow, entity_raw: str, *, download: bool
) -> tuple[str, float]:
    if item.is_folder:
        raise ApiError(errors.ENTITY_NOT_EXIST, "Entity not exist")
    if entity_raw:
        try:
            eid = hashids.decode(entity_raw, hashids.ENTITY)
        except hashids.HashIdError as exc:
            raise ApiError(errors.PARAM_ERR, "Failed to parse object ID") from exc
        if eid not in [e.id for e in st.store.entities(item.id)]:
            raise ApiError(errors.ENTITY_NOT_EXIST, "Entity not exist")
    elif item.primary_entity is None:
        raise ApiError(errors.ENTITY_NOT_EXIST, "Entity not exist")
    else:
        eid = item.primary_entity
    entity = st.store.entity(eid)
    policy = st.store.policy(entity.policy_id)
    ttl = st.config.url_ttl
    expires = st.clock.now() + ttl
    if policy.type in LOCAL_STORAGE_TYPES or policy.type not in st.drivers:
        return content_url(st, entity, item.name, download=download, ttl_s=ttl), expires
    url = await st.drivers[policy.type].download_url(entity.storage_key, item.name, ttl, download)
    return url, expires


@routes.post("/api/v4/file/url")
async def create_urls(request: web.Request) -> web.StreamResponse:
    """Return download URLs for files, in request order (contract 5.8)."""
    st = state(request)
    body = await read_json(request)
    uris = field_str_list(body, "uris")
    download = field_bool(body, "download")
    skip_error = field_bool(body, "skip_error")
    entity_raw = field_str(body, "entity")
    if entity_raw and len(uris) != 1:
        raise errors.param_error()
    if len(uris) > MAX_BATCH:
        raise ApiError(errors.TOO_MANY_URIS, "Too many URIs")
    if field_bool(body, "archive"):
        return _archive_url(request, st, uris)
    urls: list[dict[str, Any]] = []
    failed: dict[str, dict[str, Any]] = {}
    earliest: float | None = None
    for raw in uris:
        try:
            _, _, item = resolve(request, raw)
            if item is None:
                raise ApiError(errors.NO_PERMISSION, "Not supported action")
            url, exp = await _url_for(st, item, entity_raw, download=download)
        except ApiError as exc:
            failed[raw] = {"code": exc.code, "msg": exc.msg, "correlation_id": str(uuid.uuid4())}
            urls.append({"url": ""})
            continue
        urls.append({"url": url})
        earliest = exp if earliest is None else min(earliest, exp)
    if failed and not skip_error:
        msg = next(iter(failed.values()))["msg"] if len(failed) == 1 else "Failed to get URLs"
        raise ApiError(errors.BATCH_NOT_FULLY_COMPLETED, msg, aggregated=failed)
    if field_bool(body, "redirect") and len(uris) == 1 and urls[0]["url"]:
        raise web.HTTPFound(urls[0]["url"])
    return ok({"urls": urls, "expires": timestamp(earliest) if earliest is not None else None})


def _archive_url(request: web.Request, st: State, uris: list[str]) -> web.Response:
    """Return the one URL of a server-side zip of ``uris`` (needs group flag 4: admins)."""
    user = require_user(request)
    if not user.is_admin:
        raise ApiError(errors.GROUP_NOT_ALLOWED, "Group not allowed to download archives")
    ids = []
    for raw in uris:
        uri, _, item = resolve(request, raw)
        if item is None or uri.fs != "my":
            raise ApiError(errors.NO_PERMISSION, "Not supported action")
        ids.append(item.id)
    archive_id = str(uuid.uuid4())
    st.store.kv_set(f"archive_{archive_id}", (user.id, ids), ARCHIVE_TTL)
    expires = int(st.clock.now() + ARCHIVE_TTL)
    path = f"/api/v4/file/archive/{archive_id}/archive.zip"
    url = (
        f"{st.site_url}{path}?sign={quote(sign_url_path(st.store.secret, path, expires), safe='')}"
    )
    return ok({"urls": [{"url": url}], "expires": timestamp(expires)})


@routes.get("/api/v4/file/archive/{id}/archive.zip")
async def serve_archive(request: web.Request) -> web.StreamResponse:
    """Stream a zip of the files recorded for an archive URL (expires with the URL)."""
    st = state(request)
    _check_sign(st, request)
    entry = st.store.kv_get(f"archive_{request.match_info['id']}")
    if entry is None:
        raise ApiError(errors.NOT_FOUND, "Archive session expired")
    work = st.store.data_dir / "tmp" / f"archive_{uuid.uuid4().hex}"
    work.mkdir(parents=True)
    try:
        zip_path = await _build_zip(st, entry[1], work)
        size = (await anyio.Path(zip_path).stat()).st_size
        headers = {
            "Content-Type": "application/zip",
            "Content-Disposition": "attachment; filename=archive.zip",
        }
        return await _send(request, st, zip_path, size, None, headers)
    finally:
        await anyio.to_thread.run_sync(shutil.rmtree, work, True)


async def _build_zip(st: State, file_ids: list[int], work: Path) -> Path:
    """Write the files (folders recursively) into ``work/archive.zip``, uncompressed."""
    zip_path = work / "archive.zip"
    blob = work / "blob"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for file_id in file_ids:
            item = st.store.file(file_id)
            entries = [(item.name, item)]
            if item.is_folder:
                entries = [(item.name + p, f) for p, f in st.store.walk(item, "/")]
            for arcname, entry in entries:
                if entry.is_folder:
                    zf.writestr(arcname + "/", b"")
                    continue
                await st.store.export_blob(entry, blob)
                await anyio.to_thread.run_sync(zf.write, blob, arcname)
    return zip_path


def _check_sign(st: State, request: web.Request) -> None:
    hmac_check(st.store.secret, request.path, request.query.get("sign", ""), st.clock.now())


def _ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """Parse a Range header into inclusive ranges; None when unsatisfiable or malformed."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or not spec:
        return None
    out = []
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        if not dash:
            return None
        try:
            if first == "":
                n = int(last)
                if n <= 0:
                    return None
                start, end = max(0, size - n), size - 1
            else:
                start = int(first)
                end = int(last) if last else size - 1
        except ValueError:
            return None
        end = min(end, size - 1)
        if start > end or start >= size:
            continue
        out.append((start, end))
    return out or None


# The name may hold any character but "/", braces included (aiohttp's default excludes them).
@routes.get("/api/v4/file/content/{entity}/{speed}/{name:[^/]+}")
async def serve_content(request: web.Request) -> web.StreamResponse:
    """Stream a local blob with Range and conditional-request support (contract 5.8)."""
    st = state(request)
    _check_sign(st, request)
    try:
        entity = st.store.entity(hashids.decode(request.match_info["entity"], hashids.ENTITY))
    except (hashids.HashIdError, ApiError):
        return web.Response(status=404, text="Entity data does not exist.")
    policy = st.store.policy(entity.policy_id)
    path = st.store.blob_path(entity.storage_key)
    if (policy.type not in LOCAL_STORAGE_TYPES and policy.type in st.drivers) or not path.exists():
        return web.Response(status=404, text="Entity data does not exist.")
    etag = f'"{entity.hash_id}"'
    size = min(entity.size, path.stat().st_size)
    name = request.match_info["name"]
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": f"public, max-age={_PUBLIC_MAXAGE}",
        "Access-Control-Allow-Origin": "*",
        "Content-Type": mimetypes.guess_type(name)[0] or "application/octet-stream",
    }
    if request.query.get("download") == "true":
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name)}"
    if_match = request.headers.get("If-Match")
    if (
        if_match
        and if_match.strip() != "*"
        and etag not in [t.strip() for t in if_match.split(",")]
    ):
        return web.Response(status=412, headers=headers)
    if_none = request.headers.get("If-None-Match")
    if if_none and (if_none.strip() == "*" or etag in [t.strip() for t in if_none.split(",")]):
        return web.Response(status=304, headers=headers)
    ranges = None
    range_header = request.headers.get("Range")
    if range_header and size > 0:
        if_range = request.headers.get("If-Range")
        if not if_range or if_range.strip() == etag:
            ranges = _ranges(range_header, size)
            if ranges is None:
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
    return await _send(request, st, path, size, ranges, headers)


_BOUNDARY = "CLOUDREVE_EMULATOR_BOUNDARY"
_Part = tuple[bytes, int, int]


def _plan(
    size: int, ranges: list[tuple[int, int]] | None, headers: dict[str, str]
) -> tuple[int, list[_Part], bytes]:
    """Return the status, the (head, first, last) parts and the trailer of a response."""
    if ranges is None:
        return 200, [(b"", 0, size - 1)], b""
    if len(ranges) == 1:
        start, end = ranges[0]
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return 206, [(b"", start, end)], b""
    ctype = headers["Content-Type"]
    headers["Content-Type"] = f"multipart/byteranges; boundary={_BOUNDARY}"
    parts: list[_Part] = []
    for start, end in ranges:
        head = (
            f"\r\n--{_BOUNDARY}\r\nContent-Type: {ctype}\r\n"
            f"Content-Range: bytes {start}-{end}/{size}\r\n\r\n"
        )
        parts.append((head.encode(), start, end))
    return 206, parts, f"\r\n--{_BOUNDARY}--\r\n".encode()


async def _send(
    request: web.Request,
    st: State,
    path: os.PathLike[str],
    size: int,
    ranges: list[tuple[int, int]] | None,
    headers: dict[str, str],
) -> web.StreamResponse:
    status, parts, trailer = _plan(size, ranges, headers)
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = sum(len(h) + e - s + 1 for h, s, e in parts) + len(trailer)
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    budget = request.get(CUT_RESPONSE_AFTER)
    sent = 0
    async with await anyio.open_file(path, "rb") as src:
        for head, start, end in parts:
            await resp.write(head)
            sent += len(head)
            await src.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                piece = await src.read(min(_PIECE, remaining))
                if not piece:
                    break
                if budget is not None and sent + len(piece) >= budget:
                    await resp.write(piece[: max(0, budget - sent)])
                    _abort(request)
                    return resp
                await st.faults.throttle(len(piece))
                await resp.write(piece)
                sent += len(piece)
                remaining -= len(piece)
        await resp.write(trailer)
    await resp.write_eof()

    return resp


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
    log.info("fault_connection_cut", path=request.path, direction="response")
