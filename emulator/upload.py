"""The upload core (contract 6.1-6.8): sessions, placeholders, chunk tracking, completion.

``PUT /file/upload`` validates, reserves quota (the placeholder entity counts in ``used``),
creates the visible placeholder (or a placeholder version), locks the path and stores the session
in the KV. Chunks for local and relay policies arrive at ``POST /file/upload/{id}/{index}``; for
the remote policy at the slave route ``POST /api/v4/slave/upload/{id}?chunk=N`` of this same
server, authorised by a ``Bearer Cr <sig>:<exp>`` credential signed over the URL path and every
``X-Cr-*`` header. Both complete through the same tracking: from 4.18.0 the chunk that makes the
set of received indexes complete finishes the file; older versions finish on the last index.
"""

from __future__ import annotations

import mimetypes
import secrets
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from emulator import errors, hashids
from emulator.core import (
    State,
    field_int,
    field_str,
    hmac_check,
    hmac_sign,
    ok,
    read_json,
    state,
)
from emulator.errors import ApiError
from emulator.files import declared_length, policy_json, validate_metadata, write_body
from emulator.policy import CallbackFailed, PolicyInfo, SessionCredentials, UploadSessionInfo
from emulator.session import current_user, require_user
from emulator.store import (
    ENTITY_LIVE_PHOTO,
    ENTITY_VERSION,
    FILE,
    LOCAL_STORAGE_TYPES,
    FileRow,
    SessionState,
    commit_version,
    parent_of,
    parse_uri,
    preallocate,
    validate_name,
)

log = structlog.get_logger("emulator.upload")
routes = web.RouteTableDef()
DEFAULT_LOCAL_CHUNK = 25 << 20
_MAX_METADATA = 256


class UploadCore:
    """Live upload sessions of one emulator; implements ``emulator.policy.UploadHost``."""

    def __init__(self, st: State) -> None:
        self._st = st

    @property
    def site_url(self) -> str:
        """Base URL of the running emulator."""
        return self._st.site_url

    def live(self, session_id: str) -> SessionState | None:
        """Return the session if it is in the KV and not expired (emulator clock)."""
        sess = self._st.store.sessions.get(session_id)
        if sess is None:
            return None
        if sess.info.expires <= self._st.clock.now():
            del self._st.store.sessions[session_id]
            return None
        return sess

    def get_session(self, session_id: str) -> UploadSessionInfo | None:
        """Return the live session's info, or None."""
        sess = self.live(session_id)
        return sess.info if sess is not None else None

    def expire(self, session_id: str) -> bool:
        """Expire a session now (fault injection); False when it is unknown."""
        sess = self._st.store.sessions.get(session_id)
        if sess is None:
            return False
        sess.info = replace(sess.info, expires=int(self._st.clock.now()) - 1)
        lock = self._st.store.locks.get(sess.lock_token)
        if lock is not None:
            lock.expires = self._st.clock.now() - 1
        return True

    async def complete_upload(self, session_id: str, stored_size: int) -> None:
        """Finish an upload on a storage-side or client callback.

        Raises:
            CallbackFailed: 40011 when the session is gone, 40055 on a size mismatch, or the
                error of the completion itself.
        """
        sess = self.live(session_id)
        if sess is None:
            raise CallbackFailed(errors.UPLOAD_SESSION_EXPIRED, "Upload session expired")
        if stored_size != sess.info.size:
            raise CallbackFailed(
                errors.META_MISMATCH,
                f"File size not match, expected: {sess.info.size}, actual: {stored_size}",
            )
        try:
            await self.finish(sess)
        except ApiError as exc:
            raise CallbackFailed(exc.code, exc.msg) from exc

    async def finish(self, sess: SessionState) -> None:
        """Commit the placeholder as the file's content, drop the session and the lock."""
        st = self._st
        info = sess.info
        if st.faults.take_completion_failure():
            raise ApiError(errors.DB_ERROR, "Failed to finish upload (injected fault)")
        try:
            item = st.store.file(info.file_id)
            entity = st.store.entity(info.entity_id)
        except ApiError as exc:
            raise ApiError(errors.PARENT_NOT_EXIST, "Placeholder file not found") from exc
        if info.policy.type not in LOCAL_STORAGE_TYPES and info.policy.relay:
            tmp = relay_path(st, info.session_id)
            await st.store.store_blob(info.policy, info.storage_key, tmp)
            tmp.unlink(missing_ok=True)
        when = sess.last_modified if sess.last_modified is not None else st.clock.now()
        with st.store.tx():
            st.store.delete_metadata(item.id, "sys:upload_session_id")
            st.store.delete_metadata(item.id, "thumb:disabled")
            for key, value in sess.metadata.items():
                st.store.set_metadata(item.id, key, value)
        if entity.type == ENTITY_LIVE_PHOTO:
            st.store.update_entity(entity.id, upload_session_id=None)
            orphans = []
        else:
            orphans = commit_version(st.store, item, entity, when)
        st.store.sessions.pop(info.session_id, None)
        st.store.unlock(sess.lock_token)
        await st.store.delete_blobs(orphans)
        log.info("upload_completed", session_id=info.session_id, size_bytes=info.size)

    def chunk_count(self, info: UploadSessionInfo) -> int:
        """Return ``C`` of contract 6.3."""
        if info.chunk_size <= 0:
            return 1
        return max(1, -(-info.size // info.chunk_size))

    async def receive_chunk(self, request: web.Request, sess: SessionState, index: int) -> None:
        """Check the index and length, write the chunk and complete when due (6.4 steps 5-6)."""
        st = self._st
        info = sess.info
        count = self.chunk_count(info)
        if index < 0 or index >= count:
            raise ApiError(errors.INVALID_CHUNK_INDEX, "Chunk index out of range")
        start = index * info.chunk_size if info.chunk_size > 0 else 0
        expected = (
            info.size - start if info.chunk_size <= 0 else min(info.chunk_size, info.size - start)
        )
        try:
            # Like the real server's SniffContentLength: no length header reads as 0 bytes, and
            # a header that is not a number fails the same length check.
            length = declared_length(request) or 0
        except ApiError:
            length = -1
        if length != expected:
            raise ApiError(
                errors.INVALID_CONTENT_LENGTH, f"Invalid Content-Length (expected: {expected})"
            )
        target = chunk_target(st, info)
        if not target.exists():
            preallocate(target, info.size if st.config.pre_allocate else 0)
        if not st.config.pre_allocate and start > target.stat().st_size:
            # Without pre-allocation the local driver only appends at the current end.
            raise ApiError(
                errors.IO_FAILED, "size of unfinished uploaded chunks is not as expected"
            )
        got = await write_body(request, target, start, expected)
        if got != expected:
            raise ApiError(errors.IO_FAILED, "Failed to write chunk: unexpected end of body")
        sess.received.add(index)
        if sess.completion_started:
            return
        due = index == count - 1 if st.config.legacy_upload else len(sess.received) >= count
        if due:
            sess.completion_started = True
            await self.finish(sess)


UPLOADS = web.AppKey("emulator_uploads", UploadCore)


def uploads(request: web.Request) -> UploadCore:
    """Return the upload core of a request's app."""
    return request.app[UPLOADS]


def relay_path(st: State, session_id: str) -> Path:
    """Return the local spool file of a relayed (non-local storage) upload."""
    return st.store.data_dir / "tmp" / f"relay_{session_id}"


def chunk_target(st: State, info: UploadSessionInfo) -> Path:
    """Return the local file chunks of a session are written into."""
    if info.policy.type in LOCAL_STORAGE_TYPES:
        return st.store.blob_path(info.storage_key)
    return relay_path(st, info.session_id)


def _sign_content(path: str, headers: dict[str, str]) -> str:
    # X-Cr-Filename is left out of the signature, as the real server does.
    cr = sorted(
        f"{k.lower()}={v}"
        for k, v in headers.items()
        if k.lower().startswith("x-cr-") and k.lower() != "x-cr-filename"
    )
    return "\n".join([path, *cr])


def sign_path(secret: str, path: str, headers: dict[str, str], expires: int) -> str:
    """Return ``<b64url(hmac)>:<expires>`` over a path and its ``X-Cr-*`` headers."""
    return hmac_sign(secret, _sign_content(path, headers), expires)


def check_signature(st: State, request: web.Request, sign: str) -> None:
    """Verify a ``sign_path`` signature of a request (403, 40005 or 40071, see hmac_check)."""
    content = _sign_content(request.path, dict(request.headers.items()))
    hmac_check(st.store.secret, content, sign, st.clock.now())


# ---- create session ----


def _parse_create(body: dict[str, Any]) -> dict[str, Any]:
    size = field_int(body, "size", 0, minimum=0)
    policy_id = field_str(body, "policy_id")
    if policy_id:
        try:
            hashids.decode(policy_id, hashids.POLICY)
        except hashids.HashIdError as exc:
            raise ApiError(errors.PARAM_ERR, "Failed to parse object ID") from exc
    entity_type = field_str(body, "entity_type")
    if entity_type not in ("", "version", "live_photo"):
        raise errors.param_error()
    meta_in = body.get("metadata") or {}
    if not isinstance(meta_in, dict) or len(meta_in) > _MAX_METADATA:
        raise errors.param_error()
    last_modified = body.get("last_modified")
    if last_modified is not None and (
        isinstance(last_modified, bool) or not isinstance(last_modified, int)
    ):
        raise errors.param_error()
    return {
        "uri": field_str(body, "uri", required=True),
        "size": size,
        "entity_type": entity_type,
        "metadata": validate_metadata(meta_in),
        "last_modified": last_modified / 1000 if last_modified else None,
        "mime_type": field_str(body, "mime_type"),
        "previous": field_str(body, "previous"),
    }


def _chunk_size(st: State, policy: PolicyInfo) -> int:
    if policy.relay:
        return 0
    if policy.type in LOCAL_STORAGE_TYPES:
        return policy.chunk_size
    driver = st.drivers.get(policy.type)
    return policy.chunk_size or (driver.default_chunk_size() if driver else 0)


@routes.put("/api/v4/file/upload")
async def create_session(request: web.Request) -> web.Response:
    """Create an upload session and its placeholder (contract 6.2, 6.8)."""
    st = state(request)
    args = _parse_create(await read_json(request))
    user = require_user(request)
    uri = parse_uri(args["uri"])
    if uri.fs != "my" or uri.path == "/":
        raise ApiError(errors.NO_PERMISSION, "Not supported action")
    parent_path, name = parent_of(uri.path)
    validate_name(name)
    existing = st.store.lookup(user.id, uri.path)
    kind = args["entity_type"]
    if existing is not None and (existing.is_folder or kind == ""):
        raise ApiError(errors.OBJECT_EXIST, "Object existed")
    if existing is None and kind == "live_photo":
        raise errors.not_found_path()
    held = st.store.locked(user.id, uri.path, subtree=True)
    if held is not None:
        raise st.store.lock_conflict([held])
    if existing is not None and args["previous"]:
        try:
            prev = hashids.decode(args["previous"], hashids.ENTITY)
        except hashids.HashIdError as exc:
            raise ApiError(errors.PARAM_ERR, "Failed to parse object ID") from exc
        if prev != existing.primary_entity:
            raise ApiError(errors.STALE_VERSION, "File version changed")
    parent = st.store.mkdirs(user.id, parent_path)
    policy = st.store.policy_for(parent)
    st.store.check_name_against_policy(name, policy)
    if policy.max_size and args["size"] > policy.max_size:
        raise ApiError(errors.FILE_TOO_LARGE, "File too large")
    if policy.type not in LOCAL_STORAGE_TYPES and policy.type not in st.drivers:
        raise ApiError(
            errors.POLICY_NOT_ALLOWED,
            f"Storage policy type {policy.type!r} has no driver in this emulator",
        )
    st.store.check_quota(user.id, args["size"])
    sess = await _open(st, user.id, uri.path, parent.id, name, existing, policy, args)
    try:
        # Everything that can fail after the lock is taken runs here, so a failure leaves no
        # placeholder, lock or quota reservation behind.
        if st.config.pre_allocate and policy.type in LOCAL_STORAGE_TYPES:
            preallocate(chunk_target(st, sess.info), sess.info.size)
        creds = await _credentials(st, sess)
    except BaseException:
        await _drop(st, sess, abort=False)
        raise
    log.info("upload_session_created", session_id=sess.info.session_id, size_bytes=args["size"])
    return ok(_session_json(st, sess, creds, args["uri"]))


async def _open(
    st: State,
    owner_id: int,
    path: str,
    parent_id: int,
    name: str,
    existing: FileRow | None,
    policy: PolicyInfo,
    args: dict[str, Any],
) -> SessionState:
    session_id = str(uuid.uuid4())
    now = st.clock.now()
    expires = int(now + st.config.session_ttl)
    key = st.store.new_storage_key(owner_id, name)
    # The lock comes first: creating the placeholder may await blob deletion.
    lock = st.store.lock(owner_id, path, "upload", expires - now, FILE)
    try:
        file_id, entity_id = await _placeholder(
            st, owner_id, parent_id, name, existing, policy, key, session_id, args
        )
    except BaseException:
        st.store.unlock(lock.token)
        raise
    info = UploadSessionInfo(
        session_id=session_id,
        uri=args["uri"],
        owner_id=owner_id,
        file_id=file_id,
        entity_id=entity_id,
        size=args["size"],
        chunk_size=_chunk_size(st, policy),
        expires=expires,
        callback_secret=secrets.token_hex(16),
        policy=policy,
        mime_type=args["mime_type"] or mimetypes.guess_type(name)[0] or "application/octet-stream",
        storage_key=key,
    )
    sess = SessionState(
        info=info,
        lock_token=lock.token,
        last_modified=args["last_modified"],
        metadata=args["metadata"],
        is_version=existing is not None,
    )
    st.store.sessions[session_id] = sess

    return sess


async def _placeholder(
    st: State,
    owner_id: int,
    parent_id: int,
    name: str,
    existing: FileRow | None,
    policy: PolicyInfo,
    key: str,
    session_id: str,
    args: dict[str, Any],
) -> tuple[int, int]:
    """Create the visible placeholder (or a placeholder version); return (file id, entity id)."""
    ent_type = ENTITY_LIVE_PHOTO if args["entity_type"] == "live_photo" else ENTITY_VERSION
    stale: list[tuple[PolicyInfo, str]] = []
    with st.store.tx():
        if existing is None:
            file_id = st.store.insert_file(owner_id, parent_id, name, FILE, args["size"]).id
        else:
            file_id = existing.id
            stale = _stale_placeholders(st, file_id, existing.primary_entity)
        entity = st.store.add_entity(
            file_id, args["size"], key, policy.id, ent_type, upload_session_id=session_id
        )
        if existing is None:
            st.store.update_file(file_id, primary_entity=entity.id)
        st.store.set_metadata(file_id, "sys:upload_session_id", session_id)
    await st.store.delete_blobs(stale)

    return file_id, entity.id


def _stale_placeholders(
    st: State, file_id: int, primary: int | None
) -> list[tuple[PolicyInfo, str]]:
    """Drop placeholder entities of sessions that are no longer alive (a new version replaces
    them, as the real server's ``WithRemoveStaleEntities``); return their orphaned blobs."""
    orphans: list[tuple[PolicyInfo, str]] = []
    for ent in st.store.entities(file_id):
        sid = ent.upload_session_id
        live = st.store.sessions.get(sid) if sid else None
        if sid and ent.id != primary and (live is None or live.info.expires <= st.clock.now()):
            orphans.extend(st.store.delete_entity(ent))
    return orphans


async def _credentials(st: State, sess: SessionState) -> SessionCredentials:
    info = sess.info
    if info.policy.type == "remote":
        path = f"/api/v4/slave/upload/{info.session_id}"
        sign = sign_path(st.store.secret, path, {}, info.expires)
        return SessionCredentials(upload_urls=(st.site_url + path,), credential=f"Bearer Cr {sign}")
    if info.policy.type in LOCAL_STORAGE_TYPES or info.policy.relay:
        return SessionCredentials()
    return await st.drivers[info.policy.type].open_session(info)


def _session_json(
    st: State, sess: SessionState, creds: SessionCredentials, uri: str
) -> dict[str, Any]:
    info = sess.info
    body: dict[str, Any] = {
        "session_id": info.session_id,
        "upload_id": creds.upload_id,
        "chunk_size": info.chunk_size,
        "expires": info.expires,
        "storage_policy": policy_json(info.policy, st.store),
        "uri": uri,
        "callback_secret": info.callback_secret,
    }
    if creds.upload_urls:
        body["upload_urls"] = list(creds.upload_urls)
    if creds.credential:
        body["credential"] = creds.credential
    if creds.complete_url:
        body["completeURL"] = creds.complete_url
    if creds.mime_type:
        body["mime_type"] = creds.mime_type
    if creds.upload_policy:
        body["upload_policy"] = creds.upload_policy
    body.update(creds.extra)

    return body


async def _drop(st: State, sess: SessionState, *, abort: bool) -> None:
    """Remove a session's placeholder, metadata, lock and KV entry (cancel, failed open)."""
    info = sess.info
    st.store.sessions.pop(info.session_id, None)
    st.store.unlock(sess.lock_token)
    await _remove_placeholder(st, info.file_id, info.session_id)
    if abort and info.policy.type in st.drivers and not info.policy.relay:
        await st.drivers[info.policy.type].abort_session(info)
    relay_path(st, info.session_id).unlink(missing_ok=True)


async def _remove_placeholder(st: State, file_id: int, session_id: str) -> bool:
    try:
        item = st.store.file(file_id)
    except ApiError:
        return False
    ents = st.store.entities(item.id)
    target = next((e for e in ents if e.upload_session_id == session_id), None)
    if target is None:
        return False
    if len(ents) == 1:
        await st.store.delete_blobs(st.store.hard_delete(item))
        return True
    with st.store.tx():
        orphans = st.store.delete_entity(target)
        st.store.delete_metadata(item.id, "sys:upload_session_id")
    await st.store.delete_blobs(orphans)
    return True


# ---- chunks ----


@routes.post("/api/v4/file/upload/{session_id}/{index}")
async def upload_chunk(request: web.Request) -> web.Response:
    """Receive one chunk for a local or relay policy (contract 6.4, checks in its order)."""
    st = state(request)
    core = uploads(request)
    try:
        index = int(request.match_info["index"])
    except ValueError as exc:
        raise errors.param_error() from exc
    if index < 0:
        # The real route binds the index with ``min=0``: a validation error, not 40012.
        raise errors.param_error()
    sess = core.live(request.match_info["session_id"])
    if sess is None:
        raise ApiError(errors.UPLOAD_SESSION_EXPIRED, "Upload session expired or not exist")
    user = current_user(request)
    if user is None or user.id != sess.info.owner_id:
        raise ApiError(errors.UPLOAD_SESSION_EXPIRED, "Upload session expired or not exist")
    _check_placeholder(st, sess)
    if sess.info.policy.type != "local" and not sess.info.policy.relay:
        raise ApiError(errors.POLICY_NOT_ALLOWED, "Storage policy not allowed for this upload")
    await core.receive_chunk(request, sess, index)
    return ok()


def _check_placeholder(st: State, sess: SessionState) -> None:
    info = sess.info
    path = parse_uri(info.uri).path
    item = st.store.lookup(info.owner_id, path)
    if item is None or item.id != info.file_id:
        raise errors.not_found_path()
    lock = st.store.locks.get(sess.lock_token)
    if lock is None or lock.expires <= st.clock.now():
        raise ApiError(errors.LOCK_CONFLICT, "Lock expired")


@routes.post("/api/v4/slave/upload/{session_id}")
async def slave_upload(request: web.Request) -> web.Response:
    """Receive one chunk for the remote policy on the built-in slave (contract 6.4 remote)."""
    st = state(request)
    core = uploads(request)
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer Cr "):
        raise ApiError(errors.NO_PERMISSION, "Missing authorization")
    check_signature(st, request, header[len("Bearer Cr ") :])
    # Workaround: the real slave parses ``chunk`` with Atoi and ignores the error, so a missing
    # or malformed value means chunk 0.
    raw_chunk = request.query.get("chunk", "0")
    index = int(raw_chunk) if raw_chunk.lstrip("-").isdigit() else 0
    sess = core.live(request.match_info["session_id"])
    if sess is None:
        raise ApiError(errors.UPLOAD_SESSION_EXPIRED, "Upload session expired or not exist")
    if sess.info.policy.type != "remote":
        raise ApiError(errors.POLICY_NOT_ALLOWED, "Storage policy not allowed for this upload")
    try:
        await core.receive_chunk(request, sess, index)
    except ApiError as exc:
        if sess.completion_started and exc.code not in (
            errors.INVALID_CHUNK_INDEX,
            errors.INVALID_CONTENT_LENGTH,
            errors.IO_FAILED,
        ):
            # The slave reports a failed call back to the master as a callback error.
            raise ApiError(errors.CALLBACK_ERROR, f"Failed to callback master: {exc.msg}") from exc
        raise
    return ok()


# ---- cancel ----


@routes.delete("/api/v4/file/upload")
async def cancel(request: web.Request) -> web.Response:
    """Cancel an upload session and remove its placeholder (contract 6.7)."""
    st = state(request)
    body = await read_json(request)
    session_id = field_str(body, "id", required=True)
    raw = field_str(body, "uri", required=True)
    user = require_user(request)
    uri = parse_uri(raw)
    if uri.fs != "my":
        raise ApiError(errors.NO_PERMISSION, "Not supported action")
    item = st.store.resolve(user.id, uri.path)
    owned = [e for e in st.store.entities(item.id) if e.upload_session_id == session_id]
    if not owned:
        raise ApiError(errors.NOT_FOUND, "Upload session not found")
    sess = uploads(request).live(session_id)
    if sess is not None:
        await _drop(st, sess, abort=True)
    else:
        await _remove_placeholder(st, item.id, session_id)
        held = st.store.locked(user.id, uri.path)
        if held is not None and held.app_type == "upload":
            st.store.unlock(held.token)
        st.store.sessions.pop(session_id, None)
        relay_path(st, session_id).unlink(missing_ok=True)
    log.info("upload_session_cancelled", session_id=session_id)
    return ok()
