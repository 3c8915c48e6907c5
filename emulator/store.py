"""The emulator's state: SQLite metadata, blobs on disk, and the in-memory KV of the real server.

Paths given to and returned by this module are *decoded* paths below a user's root, ``/``-separated
and starting with ``/`` (``/photos/a b#1.jpg``); the root is ``/``. URIs (``cloudreve://my/...``)
are built and parsed by :func:`my_uri` and :func:`parse_uri`.

Internal API for other emulator modules (workflow tasks, thumbnails):

* :meth:`Store.resolve` (owner id, path) -> :class:`FileRow`, 40016 when any element is missing.
* :meth:`Store.import_local_file` creates a file from a local path like a new upload without
  overwrite (40004 on a clash, 40051 over quota); ancestors are created.
* :meth:`Store.export_blob` copies a file's current blob (or a given entity) to a local path.
* :meth:`Store.walk` yields ``(path, FileRow)`` for every item below a folder, depth first.
* :meth:`Store.set_entity_storage` moves an entity to another policy / storage key (relocate).
* :meth:`Store.policy_for` gives the policy new uploads under a folder use.

All methods raise :class:`emulator.errors.ApiError` with the contract's codes. Transactions are
short and synchronous; the app runs in one event loop, so there is no concurrent writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import anyio

from emulator import errors, hashids
from emulator.config import Clock
from emulator.errors import ApiError
from emulator.policy import PolicyDriver, PolicyInfo, UploadSessionInfo

FILE = 0
FOLDER = 1
ENTITY_VERSION = 0
ENTITY_THUMBNAIL = 1
ENTITY_LIVE_PHOTO = 2
LOCAL_STORAGE_TYPES = ("local", "remote")
_FORBIDDEN_NAME_CHARS = set('\\/:*?"<>|')
_URI_SAFE = "-_.!~*'()"
GB = 1 << 30
TB = 1 << 40

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, password_hash TEXT NOT NULL,
    nickname TEXT NOT NULL, is_admin INTEGER NOT NULL, status TEXT NOT NULL, quota INTEGER NOT NULL,
    totp_secret TEXT NOT NULL DEFAULT '', policy_id INTEGER NOT NULL, created_at REAL NOT NULL,
    state_salt TEXT NOT NULL, version_retention INTEGER NOT NULL DEFAULT 0,
    retention_ext TEXT NOT NULL DEFAULT '[]', retention_max INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS policies (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, chunk_size INTEGER NOT NULL,
    chunk_concurrency INTEGER NOT NULL, relay INTEGER NOT NULL, max_size INTEGER NOT NULL,
    allowed_suffix TEXT NOT NULL DEFAULT '[]', denied_suffix TEXT NOT NULL DEFAULT '[]',
    allowed_regexp TEXT NOT NULL DEFAULT '', denied_regexp TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL, parent_id INTEGER, name TEXT NOT NULL,
    type INTEGER NOT NULL, size INTEGER NOT NULL DEFAULT 0, primary_entity INTEGER,
    policy_id INTEGER, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    trashed INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS files_name ON files(parent_id, name);
CREATE INDEX IF NOT EXISTS files_owner ON files(owner_id, trashed);
CREATE TABLE IF NOT EXISTS entities (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, owner_id INTEGER NOT NULL,
    type INTEGER NOT NULL, size INTEGER NOT NULL, storage_key TEXT NOT NULL,
    policy_id INTEGER NOT NULL, created_at REAL NOT NULL, upload_session_id TEXT
);
CREATE INDEX IF NOT EXISTS entities_file ON entities(file_id);
CREATE INDEX IF NOT EXISTS entities_key ON entities(storage_key);
CREATE TABLE IF NOT EXISTS metadata (
    file_id INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(file_id, key)
);
CREATE TABLE IF NOT EXISTS shares (
    id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL, file_id INTEGER NOT NULL,
    password TEXT NOT NULL, is_private INTEGER NOT NULL, downloads INTEGER NOT NULL,
    expires REAL, visited INTEGER NOT NULL DEFAULT 0, downloaded INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dav_accounts (
    id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL, name TEXT NOT NULL, uri TEXT NOT NULL,
    password TEXT NOT NULL, options INTEGER NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class User:
    """A user account."""

    id: int
    email: str
    nickname: str
    is_admin: bool
    status: str
    quota: int
    totp_secret: str
    policy_id: int
    created_at: float
    state_salt: str
    version_retention: bool
    retention_ext: tuple[str, ...]
    retention_max: int
    password_hash: str

    @property
    def hash_id(self) -> str:
        """The user's public id."""
        return hashids.encode(self.id, hashids.USER)


@dataclass(frozen=True, slots=True)
class FileRow:
    """A file or folder."""

    id: int
    owner_id: int
    parent_id: int | None
    name: str
    type: int
    size: int
    primary_entity: int | None
    policy_id: int | None
    created_at: float
    updated_at: float
    trashed: bool

    @property
    def is_folder(self) -> bool:
        """True for a folder."""
        return self.type == FOLDER

    @property
    def hash_id(self) -> str:
        """The file's public id."""
        return hashids.encode(self.id, hashids.FILE)


@dataclass(frozen=True, slots=True)
class Entity:
    """A blob: one version of a file (or a thumbnail / live photo)."""

    id: int
    file_id: int
    owner_id: int
    type: int
    size: int
    storage_key: str
    policy_id: int
    created_at: float
    upload_session_id: str | None

    @property
    def hash_id(self) -> str:
        """The entity's public id."""
        return hashids.encode(self.id, hashids.ENTITY)


@dataclass(slots=True)
class Lock:
    """A path lock (contract 5.13)."""

    token: str
    owner_id: int
    path: str
    app_type: str
    expires: float
    file_type: int = FILE


@dataclass(slots=True)
class SessionState:
    """An upload session in the KV store, with its chunk tracking (contract 6.4)."""

    info: UploadSessionInfo
    lock_token: str
    last_modified: float | None
    metadata: dict[str, str]
    is_version: bool
    received: set[int] = field(default_factory=set)
    completion_started: bool = False


@dataclass(frozen=True, slots=True)
class Uri:
    """A parsed ``cloudreve://`` URI."""

    fs: str
    path: str
    fs_id: str = ""
    password: str = ""
    query: str = ""

    def __str__(self) -> str:
        return format_uri(self.fs, self.path)


def encode_segment(name: str) -> str:
    """Percent-encode one path segment like JavaScript ``encodeURIComponent``."""
    return quote(name, safe=_URI_SAFE)


def format_uri(fs: str, path: str) -> str:
    """Return ``cloudreve://<fs>/<encoded path>`` (the root has no trailing slash)."""
    segments = [encode_segment(s) for s in path.split("/") if s]
    return f"cloudreve://{fs}" + "".join(f"/{s}" for s in segments)


def my_uri(path: str) -> str:
    """Return the ``cloudreve://my`` URI of a decoded path."""
    return format_uri("my", path)


def parse_uri(raw: str) -> Uri:
    """Parse a ``cloudreve://`` URI; a trailing ``/`` is trimmed and ``.``/``..`` cleaned.

    Raises:
        ApiError: 40001 ``unknown uri`` when the string is not such a URI.
    """
    prefix = "cloudreve://"
    if not isinstance(raw, str) or not raw[: len(prefix)].lower() == prefix:
        raise ApiError(errors.PARAM_ERR, "unknown uri")
    rest = raw[len(prefix) :]
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    authority, slash, raw_path = rest.partition("/")
    fs_id = password = ""
    if "@" in authority:
        userinfo, _, authority = authority.rpartition("@")
        fs_id, _, password = userinfo.partition(":")
        fs_id, password = unquote(fs_id), unquote(password)
    fs = authority.lower()
    if fs not in ("my", "share", "trash", "shared_with_me"):
        raise ApiError(errors.PARAM_ERR, "unknown uri")
    parts: list[str] = []
    for seg in (raw_path if slash else "").split("/"):
        name = unquote(seg)
        if name in ("", "."):
            continue
        if name == "..":
            if parts:
                parts.pop()
            continue
        parts.append(name)

    return Uri(fs=fs, path="/" + "/".join(parts), fs_id=fs_id, password=password, query=query)


def split_path(path: str) -> list[str]:
    """Return the names along a decoded path."""
    return [p for p in path.split("/") if p]


def join_path(parent: str, name: str) -> str:
    """Return ``parent/name`` for decoded paths."""
    return parent.rstrip("/") + "/" + name


def parent_of(path: str) -> tuple[str, str]:
    """Return ``(parent path, name)``."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return parent or "/", name


def validate_name(name: str) -> None:
    """Check a file or folder name (contract 10).

    Raises:
        ApiError: 40052 for an empty, too long (> 255 UTF-8 bytes) or forbidden name.
    """
    size = len(name.encode())
    if size == 0 or size > 255:
        raise ApiError(errors.ILLEGAL_OBJECT_NAME, "Invalid object name: length out of range")
    if name in (".", "..") or any(c in _FORBIDDEN_NAME_CHARS for c in name):
        raise ApiError(errors.ILLEGAL_OBJECT_NAME, "Invalid object name")


def _hash_password(password: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{password}".encode()).hexdigest()


class Store:
    """Metadata in SQLite under ``data_dir/emulator.db``, blobs under ``data_dir/blobs``."""

    def __init__(self, data_dir: Path, clock: Clock) -> None:
        self.data_dir = data_dir
        self.blob_dir = data_dir / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.db = sqlite3.connect(
            data_dir / "emulator.db", isolation_level=None, check_same_thread=False
        )
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        self.drivers: dict[str, PolicyDriver] = {}
        self.locks: dict[str, Lock] = {}
        self.sessions: dict[str, SessionState] = {}
        self.kv: dict[str, tuple[Any, float]] = {}
        self.revoked_roots: dict[str, float] = {}
        self.tokens_not_before = 0.0
        self.secret = self._setting("secret", secrets.token_hex(32))
        self.instance_id = self._setting("instance_id", str(uuid.uuid4()))

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """Run statements in one short write transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _setting(self, key: str, default: str) -> str:
        row = self.db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        if row is not None:
            return str(row["value"])
        self.db.execute("INSERT INTO settings(key, value) VALUES (?, ?)", (key, default))
        return default

    # ---- key-value store with TTL (the server's cache) ----

    def kv_set(self, key: str, value: Any, ttl_s: float) -> None:
        """Store ``value`` until ``ttl_s`` seconds from now (emulator clock)."""
        self.kv[key] = (value, self.clock.now() + ttl_s)

    def kv_get(self, key: str) -> Any:
        """Return a live value or None."""
        item = self.kv.get(key)
        if item is None:
            return None
        if item[1] <= self.clock.now():
            del self.kv[key]
            return None
        return item[0]

    def kv_delete(self, key: str) -> None:
        """Remove a value."""
        self.kv.pop(key, None)

    # ---- policies ----

    def create_policy(
        self,
        type_: str,
        *,
        name: str = "",
        chunk_size: int = 0,
        chunk_concurrency: int = 1,
        relay: bool = False,
        max_size: int = 0,
        allowed_suffix: tuple[str, ...] = (),
        denied_suffix: tuple[str, ...] = (),
        allowed_regexp: str = "",
        denied_regexp: str = "",
    ) -> PolicyInfo:
        """Create a storage policy and return it."""
        cur = self.db.execute(
            "INSERT INTO policies(name, type, chunk_size, chunk_concurrency, relay, max_size,"
            " allowed_suffix, denied_suffix, allowed_regexp, denied_regexp)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                name or f"Default {type_} policy",
                type_,
                chunk_size,
                chunk_concurrency,
                int(relay),
                max_size,
                json.dumps(list(allowed_suffix)),
                json.dumps(list(denied_suffix)),
                allowed_regexp,
                denied_regexp,
            ),
        )
        assert cur.lastrowid is not None
        return self.policy(cur.lastrowid)

    def policy(self, policy_id: int) -> PolicyInfo:
        """Return a policy by numeric id (40001 when unknown)."""
        row = self.db.execute("SELECT * FROM policies WHERE id=?", (policy_id,)).fetchone()
        if row is None:
            raise ApiError(errors.PARAM_ERR, "Storage policy not found")
        return _policy(row)

    def policies(self) -> list[PolicyInfo]:
        """Return every policy."""
        return [_policy(r) for r in self.db.execute("SELECT * FROM policies ORDER BY id")]

    def policy_rules(self, policy_id: int) -> Mapping[str, Any]:
        """Return the name rules of a policy (suffix lists and regexps)."""
        row = self.db.execute("SELECT * FROM policies WHERE id=?", (policy_id,)).fetchone()
        if row is None:
            raise ApiError(errors.PARAM_ERR, "Storage policy not found")
        return {
            "allowed_suffix": json.loads(row["allowed_suffix"]),
            "denied_suffix": json.loads(row["denied_suffix"]),
            "allowed_regexp": row["allowed_regexp"],
            "denied_regexp": row["denied_regexp"],
        }

    def update_policy(self, policy_id: int, **fields: Any) -> PolicyInfo:
        """Change columns of a policy (tests use this for limits and name rules)."""
        for key, value in fields.items():
            if key not in (
                "name",
                "chunk_size",
                "chunk_concurrency",
                "relay",
                "max_size",
                "allowed_suffix",
                "denied_suffix",
                "allowed_regexp",
                "denied_regexp",
            ):
                raise ValueError(f"unknown policy field {key}")
            if key in ("allowed_suffix", "denied_suffix"):
                value = json.dumps(list(value))
            self.db.execute(f"UPDATE policies SET {key}=? WHERE id=?", (value, policy_id))
        return self.policy(policy_id)

    def check_name_against_policy(self, name: str, policy: PolicyInfo) -> None:
        """Apply a policy's extension and regexp rules (40052) to a file name."""
        rules = self.policy_rules(policy.id)
        ext = name.rpartition(".")[2].lower() if "." in name else ""
        allowed = [s.lower() for s in rules["allowed_suffix"]]
        denied = [s.lower() for s in rules["denied_suffix"]]
        if allowed and ext not in allowed:
            raise ApiError(errors.ILLEGAL_OBJECT_NAME, "File type not allowed")
        if denied and ext and ext in denied:
            raise ApiError(errors.ILLEGAL_OBJECT_NAME, "File type not allowed")
        if rules["allowed_regexp"] and not re.search(rules["allowed_regexp"], name):
            raise ApiError(errors.ILLEGAL_OBJECT_NAME, "File name not allowed")
        if rules["denied_regexp"] and re.search(rules["denied_regexp"], name):
            raise ApiError(errors.ILLEGAL_OBJECT_NAME, "File name not allowed")

    def policy_for(self, folder: FileRow) -> PolicyInfo:
        """Return the policy new uploads under ``folder`` use (nearest folder override wins)."""
        current: FileRow | None = folder
        while current is not None:
            if current.policy_id is not None:
                return self.policy(current.policy_id)
            current = self.file(current.parent_id) if current.parent_id is not None else None
        return self.policy(self.user(folder.owner_id).policy_id)

    def set_folder_policy(self, folder: FileRow, policy_id: int) -> None:
        """Make ``policy_id`` the policy of new uploads under ``folder`` (inherited)."""
        self.policy(policy_id)
        self.db.execute("UPDATE files SET policy_id=? WHERE id=?", (policy_id, folder.id))

    # ---- users ----

    def create_user(
        self,
        email: str,
        password: str,
        *,
        admin: bool,
        policy_id: int,
        quota: int | None = None,
        totp_secret: str = "",
    ) -> User:
        """Create a user with an empty root folder."""
        salt = secrets.token_hex(8)
        now = self.clock.now()
        with self.tx() as db:
            cur = db.execute(
                "INSERT INTO users(email, password_hash, nickname, is_admin, status, quota,"
                " totp_secret, policy_id, created_at, state_salt)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    email,
                    _hash_password(password, salt),
                    email.partition("@")[0],
                    int(admin),
                    "active",
                    quota if quota is not None else (TB if admin else GB),
                    totp_secret,
                    policy_id,
                    now,
                    salt,
                ),
            )
            user_id = cur.lastrowid
            assert user_id is not None
            db.execute(
                "INSERT INTO files(owner_id, parent_id, name, type, created_at, updated_at)"
                " VALUES (?, NULL, '', ?, ?, ?)",
                (user_id, FOLDER, now, now),
            )
        return self.user(user_id)

    def user(self, user_id: int) -> User:
        """Return a user (404 when unknown)."""
        row = self.db.execute("SELECT * FROM users WHERE id=?", (user_id,)).fetchone()
        if row is None:
            raise ApiError(errors.NOT_FOUND, "User not found")
        return _user(row)

    def user_by_email(self, email: str) -> User | None:
        """Return a user by email (case-insensitive), or None."""
        row = self.db.execute(
            "SELECT * FROM users WHERE lower(email)=lower(?)", (email,)
        ).fetchone()
        return _user(row) if row is not None else None

    def users(self) -> list[User]:
        """Return every user."""
        return [_user(r) for r in self.db.execute("SELECT * FROM users ORDER BY id")]

    def check_password(self, user: User, password: str) -> bool:
        """True when ``password`` is the user's password."""
        return secrets.compare_digest(user.password_hash, _hash_password(password, user.state_salt))

    def update_user(self, user_id: int, **fields: Any) -> User:
        """Change columns of a user (quota, status, settings, password)."""
        for key, value in fields.items():
            if key == "password":
                salt = self.user(user_id).state_salt
                key, value = "password_hash", _hash_password(str(value), salt)
            elif key == "retention_ext":
                value = json.dumps(list(value))
            elif key not in (
                "quota",
                "status",
                "nickname",
                "totp_secret",
                "version_retention",
                "retention_max",
                "policy_id",
                "is_admin",
            ):
                raise ValueError(f"unknown user field {key}")
            self.db.execute(f"UPDATE users SET {key}=? WHERE id=?", (value, user_id))
        return self.user(user_id)

    def used(self, user_id: int) -> int:
        """Bytes counted against the quota: all entities, trash and reservations included."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(size), 0) AS s FROM entities WHERE owner_id=?", (user_id,)
        ).fetchone()
        return int(row["s"])

    def check_quota(self, user_id: int, extra: int) -> None:
        """Raise 40051 when ``extra`` more bytes would exceed the user's quota."""
        if self.used(user_id) + extra > self.user(user_id).quota:
            raise ApiError(errors.INSUFFICIENT_CAPACITY, "Insufficient capacity")

    # ---- files ----

    def file(self, file_id: int) -> FileRow:
        """Return a file by id (40016 when unknown)."""
        row = self.db.execute("SELECT * FROM files WHERE id=?", (file_id,)).fetchone()
        if row is None:
            raise errors.not_found_path()
        return _file(row)

    def root(self, owner_id: int) -> FileRow:
        """Return the user's root folder."""
        row = self.db.execute(
            "SELECT * FROM files WHERE owner_id=? AND parent_id IS NULL AND name=''", (owner_id,)
        ).fetchone()
        if row is None:
            raise errors.not_found_path()
        return _file(row)

    def child(self, parent_id: int, name: str) -> FileRow | None:
        """Return the child named ``name`` of a folder, or None."""
        row = self.db.execute(
            "SELECT * FROM files WHERE parent_id=? AND name=?", (parent_id, name)
        ).fetchone()
        return _file(row) if row is not None else None

    def children(self, folder_id: int) -> list[FileRow]:
        """Return the direct children of a folder."""
        rows = self.db.execute("SELECT * FROM files WHERE parent_id=?", (folder_id,))
        return [_file(r) for r in rows]

    def lookup(self, owner_id: int, path: str) -> FileRow | None:
        """Return the item at ``path`` of the user's drive, or None."""
        current = self.root(owner_id)
        for name in split_path(path):
            if not current.is_folder:
                return None
            found = self.child(current.id, name)
            if found is None:
                return None
            current = found
        return current

    def resolve(self, owner_id: int, path: str) -> FileRow:
        """Return the item at ``path`` (40016 when any element is missing)."""
        found = self.lookup(owner_id, path)
        if found is None:
            raise errors.not_found_path()
        return found

    def path_of(self, item: FileRow) -> str:
        """Return the decoded path of an item in its owner's drive (trash items: their UUID)."""
        names: list[str] = []
        current = item
        while current.parent_id is not None:
            names.append(current.name)
            current = self.file(current.parent_id)
        if current.trashed:
            names.append(current.name)
        return "/" + "/".join(reversed(names))

    def in_trash(self, item: FileRow) -> bool:
        """True when the item or one of its ancestors is in the trash."""
        current = item
        while current.parent_id is not None:
            current = self.file(current.parent_id)
        return current.trashed

    def mkdirs(self, owner_id: int, path: str) -> FileRow:
        """Return the folder at ``path``, creating missing ones (40004 if a file is in the way)."""
        current = self.root(owner_id)
        for name in split_path(path):
            found = self.child(current.id, name)
            if found is None:
                validate_name(name)
                found = self.insert_file(owner_id, current.id, name, FOLDER)
            elif not found.is_folder:
                raise ApiError(errors.OBJECT_EXIST, "Object existed")
            current = found
        return current

    def insert_file(
        self, owner_id: int, parent_id: int, name: str, type_: int, size: int = 0
    ) -> FileRow:
        """Insert a file row as is (no name, clash or quota checks; callers check first)."""
        now = self.clock.now()
        cur = self.db.execute(
            "INSERT INTO files(owner_id, parent_id, name, type, size, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (owner_id, parent_id, name, type_, size, now, now),
        )
        assert cur.lastrowid is not None
        return self.file(cur.lastrowid)

    def create(self, owner_id: int, path: str, type_: int) -> FileRow:
        """Create an empty file or folder at ``path``; ancestors are created.

        Raises:
            ApiError: 40004 when the name is taken, 40052 for a bad name.
        """
        parent_path, name = parent_of(path)
        validate_name(name)
        parent = self.mkdirs(owner_id, parent_path)
        if self.child(parent.id, name) is not None:
            raise ApiError(errors.OBJECT_EXIST, "Object existed")
        if type_ == FILE:
            self.check_name_against_policy(name, self.policy_for(parent))
        return self.insert_file(owner_id, parent.id, name, type_)

    def update_file(self, file_id: int, **fields: Any) -> FileRow:
        """Change columns of a file row."""
        for key, value in fields.items():
            if key not in ("size", "primary_entity", "updated_at", "name", "parent_id"):
                raise ValueError(f"unknown file field {key}")
            self.db.execute(f"UPDATE files SET {key}=? WHERE id=?", (value, file_id))
        return self.file(file_id)

    def walk(self, folder: FileRow, path: str | None = None) -> Iterator[tuple[str, FileRow]]:
        """Yield ``(path, item)`` for every item below ``folder``, parents before children."""
        base = self.path_of(folder) if path is None else path
        for item in sorted(self.children(folder.id), key=lambda f: (-f.type, f.name)):
            item_path = join_path(base, item.name)
            yield item_path, item
            if item.is_folder:
                yield from self.walk(item, item_path)

    def subtree(self, item: FileRow) -> list[FileRow]:
        """Return the item and everything below it."""
        found = [item]
        if item.is_folder:
            found.extend(f for _, f in self.walk(item, "/"))
        return found

    def rename(self, item: FileRow, new_name: str) -> FileRow:
        """Rename an item (40004 on a taken name, 40052 on a bad one)."""
        validate_name(new_name)
        if item.parent_id is None:
            raise ApiError(errors.NO_PERMISSION, "Not supported action")
        if new_name == item.name:
            return item
        if self.child(item.parent_id, new_name) is not None:
            raise ApiError(errors.OBJECT_EXIST, "Object existed")
        if not item.is_folder:
            self.check_name_against_policy(new_name, self.policy_for(self.file(item.parent_id)))
        return self.update_file(item.id, name=new_name)

    def move(self, item: FileRow, dst: FileRow) -> FileRow:
        """Move an item into folder ``dst``, keeping its name."""
        if self.child(dst.id, item.name) is not None:
            raise ApiError(errors.OBJECT_EXIST, "Object existed")
        return self.update_file(item.id, parent_id=dst.id)

    def copy(self, item: FileRow, dst: FileRow, name: str | None = None) -> FileRow:
        """Copy an item (recursively) into folder ``dst``; blobs are shared, quota is checked."""
        name = name or item.name
        if self.child(dst.id, name) is not None:
            raise ApiError(errors.OBJECT_EXIST, "Object existed")
        items = self.subtree(item)
        if len(items) > 100000:
            raise ApiError(errors.FILE_COUNT_LIMITED, "Walked file count exceeds the limit")
        extra = sum(e.size for f in items for e in self.entities(f.id))
        self.check_quota(dst.owner_id, extra)
        with self.tx():
            return self._copy_one(item, dst, name)

    def _copy_one(self, item: FileRow, dst: FileRow, name: str) -> FileRow:
        now = self.clock.now()
        cur = self.db.execute(
            "INSERT INTO files(owner_id, parent_id, name, type, size, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (dst.owner_id, dst.id, name, item.type, item.size, now, item.updated_at),
        )
        assert cur.lastrowid is not None
        new_id = cur.lastrowid
        for key, value in self.metadata(item.id).items():
            if not key.startswith("sys:"):
                self.db.execute(
                    "INSERT INTO metadata(file_id, key, value) VALUES (?,?,?)", (new_id, key, value)
                )
        primary = None
        for ent in self.entities(item.id):
            if ent.upload_session_id:
                continue
            copied = self.add_entity(
                new_id, ent.size, ent.storage_key, ent.policy_id, ent.type, owner_id=dst.owner_id
            )
            if ent.id == item.primary_entity:
                primary = copied.id
        self.db.execute("UPDATE files SET primary_entity=? WHERE id=?", (primary, new_id))
        copied_row = self.file(new_id)
        for child in self.children(item.id):
            self._copy_one(child, copied_row, child.name)

        return copied_row

    def soft_delete(self, item: FileRow) -> FileRow:
        """Move an item into the trash: renamed to a UUID, detached, ``sys:restore_uri`` set."""
        if item.parent_id is None:
            raise ApiError(errors.NO_PERMISSION, "Not supported action")
        restore_uri = my_uri(self.path_of(item))
        with self.tx() as db:
            db.execute(
                "UPDATE files SET parent_id=NULL, name=?, trashed=1 WHERE id=?",
                (str(uuid.uuid4()), item.id),
            )
            self.set_metadata(item.id, "sys:restore_uri", restore_uri)
            self.set_metadata(
                item.id, "sys:expected_collect_time", str(int(self.clock.now() + 7 * 86400))
            )
        return self.file(item.id)

    def restore(self, item: FileRow) -> FileRow:
        """Move a trash item back to its ``sys:restore_uri`` (40016 if the parent is gone)."""
        meta = self.metadata(item.id)
        uri = meta.get("sys:restore_uri")
        if not item.trashed or uri is None:
            raise ApiError(errors.NO_PERMISSION, "Not supported action")
        parent_path, name = parent_of(parse_uri(uri).path)
        parent = self.resolve(item.owner_id, parent_path)
        return self._untrash(item, parent, name)

    def untrash_into(self, item: FileRow, dst: FileRow) -> FileRow:
        """Move a trash item into folder ``dst`` under its original name (trash -> my move)."""
        meta = self.metadata(item.id)
        name = (
            parent_of(parse_uri(meta["sys:restore_uri"]).path)[1]
            if meta.get("sys:restore_uri")
            else item.name
        )
        return self._untrash(item, dst, name)

    def _untrash(self, item: FileRow, parent: FileRow, name: str) -> FileRow:
        """Move a trash item into ``parent`` as ``name`` and drop its trash metadata."""
        if self.child(parent.id, name) is not None:
            raise ApiError(errors.OBJECT_EXIST, "Object existed")
        with self.tx() as db:
            db.execute(
                "UPDATE files SET parent_id=?, name=?, trashed=0 WHERE id=?",
                (parent.id, name, item.id),
            )
            db.execute(
                "DELETE FROM metadata WHERE file_id=? AND key IN"
                " ('sys:restore_uri', 'sys:expected_collect_time')",
                (item.id,),
            )
        return self.file(item.id)

    def trash_items(self, owner_id: int) -> list[FileRow]:
        """Return the top-level items of the user's trash."""
        rows = self.db.execute(
            "SELECT * FROM files WHERE owner_id=? AND trashed=1 AND parent_id IS NULL", (owner_id,)
        )
        return [_file(r) for r in rows]

    def trash_item(self, owner_id: int, name: str) -> FileRow:
        """Return a top-level trash item by its UUID name, or a descendant path (40016)."""
        parts = split_path(name)
        if not parts:
            raise errors.not_found_path()
        row = self.db.execute(
            "SELECT * FROM files WHERE owner_id=? AND trashed=1 AND parent_id IS NULL AND name=?",
            (owner_id, parts[0]),
        ).fetchone()
        if row is None:
            raise errors.not_found_path()
        current = _file(row)
        for part in parts[1:]:
            found = self.child(current.id, part)
            if found is None:
                raise errors.not_found_path()
            current = found
        return current

    def hard_delete(self, item: FileRow) -> list[tuple[PolicyInfo, str]]:
        """Delete an item and its subtree; return the blobs nobody references any more."""
        if item.parent_id is None and not item.trashed:
            raise ApiError(errors.NO_PERMISSION, "Not supported action")
        items = self.subtree(item)
        keys: set[tuple[int, str]] = set()
        with self.tx() as db:
            for f in items:
                for ent in self.entities(f.id):
                    keys.add((ent.policy_id, ent.storage_key))
                db.execute("DELETE FROM entities WHERE file_id=?", (f.id,))
                db.execute("DELETE FROM metadata WHERE file_id=?", (f.id,))
                db.execute("DELETE FROM files WHERE id=?", (f.id,))
        return self._orphans(keys)

    def _orphans(self, keys: set[tuple[int, str]]) -> list[tuple[PolicyInfo, str]]:
        orphans = []
        for policy_id, key in keys:
            used = self.db.execute(
                "SELECT 1 FROM entities WHERE storage_key=? AND policy_id=?", (key, policy_id)
            ).fetchone()
            if used is None:
                orphans.append((self.policy(policy_id), key))
        return orphans

    # ---- metadata ----

    def metadata(self, file_id: int) -> dict[str, str]:
        """Return all metadata of a file."""
        rows = self.db.execute("SELECT key, value FROM metadata WHERE file_id=?", (file_id,))
        return {r["key"]: r["value"] for r in rows}

    def set_metadata(self, file_id: int, key: str, value: str) -> None:
        """Set one metadata key."""
        self.db.execute(
            "INSERT INTO metadata(file_id, key, value) VALUES (?,?,?)"
            " ON CONFLICT(file_id, key) DO UPDATE SET value=excluded.value",
            (file_id, key, value),
        )

    def delete_metadata(self, file_id: int, key: str) -> None:
        """Remove one metadata key (no error when absent)."""
        self.db.execute("DELETE FROM metadata WHERE file_id=? AND key=?", (file_id, key))

    # ---- entities and blobs ----

    def add_entity(
        self,
        file_id: int,
        size: int,
        storage_key: str,
        policy_id: int,
        type_: int = ENTITY_VERSION,
        *,
        owner_id: int | None = None,
        upload_session_id: str | None = None,
    ) -> Entity:
        """Record a blob of a file."""
        owner = owner_id if owner_id is not None else self.file(file_id).owner_id
        cur = self.db.execute(
            "INSERT INTO entities(file_id, owner_id, type, size, storage_key, policy_id,"
            " created_at, upload_session_id) VALUES (?,?,?,?,?,?,?,?)",
            (
                file_id,
                owner,
                type_,
                size,
                storage_key,
                policy_id,
                self.clock.now(),
                upload_session_id,
            ),
        )
        assert cur.lastrowid is not None
        return self.entity(cur.lastrowid)

    def entity(self, entity_id: int) -> Entity:
        """Return an entity (40077 when unknown)."""
        row = self.db.execute("SELECT * FROM entities WHERE id=?", (entity_id,)).fetchone()
        if row is None:
            raise ApiError(errors.ENTITY_NOT_EXIST, "Entity not exist")
        return _entity(row)

    def entities(self, file_id: int) -> list[Entity]:
        """Return a file's entities, oldest first."""
        rows = self.db.execute("SELECT * FROM entities WHERE file_id=? ORDER BY id", (file_id,))
        return [_entity(r) for r in rows]

    def update_entity(self, entity_id: int, **fields: Any) -> Entity:
        """Change columns of an entity."""
        for key, value in fields.items():
            if key not in ("size", "storage_key", "policy_id", "upload_session_id", "created_at"):
                raise ValueError(f"unknown entity field {key}")
            self.db.execute(f"UPDATE entities SET {key}=? WHERE id=?", (value, entity_id))
        return self.entity(entity_id)

    def delete_entity(self, entity: Entity) -> list[tuple[PolicyInfo, str]]:
        """Remove an entity row; return its blob if nothing else references it."""
        self.db.execute("DELETE FROM entities WHERE id=?", (entity.id,))
        return self._orphans({(entity.policy_id, entity.storage_key)})

    def set_entity_storage(self, entity_id: int, policy_id: int, storage_key: str) -> Entity:
        """Point an entity at another policy and storage key (relocate)."""
        self.policy(policy_id)
        return self.update_entity(entity_id, policy_id=policy_id, storage_key=storage_key)

    def new_storage_key(self, owner_id: int, name: str) -> str:
        """Return a fresh storage key for a blob of ``name``."""
        # ASCII only, so the key's last component stays far below the 255-byte limit of
        # local file systems whatever the name's script.
        safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)
        safe = safe[-80:]
        return f"{owner_id}/{uuid.uuid4().hex}_{safe}"

    def blob_path(self, storage_key: str) -> Path:
        """Return the local file of a blob stored by a local or remote policy."""
        path = (self.blob_dir / storage_key).resolve()
        if not path.is_relative_to(self.blob_dir.resolve()):
            raise ApiError(errors.PARAM_ERR, "bad storage key")
        return path

    async def delete_blobs(self, blobs: list[tuple[PolicyInfo, str]]) -> None:
        """Remove unreferenced blobs from their storage (missing blobs are fine)."""
        for policy, key in blobs:
            if policy.type in LOCAL_STORAGE_TYPES or policy.type not in self.drivers:
                self.blob_path(key).unlink(missing_ok=True)
            else:
                await self.drivers[policy.type].delete_blob(key)

    async def export_blob(self, item: FileRow, dst: Path, entity_id: int | None = None) -> Entity:
        """Copy a file's current blob (or ``entity_id``) to the local path ``dst``."""
        eid = entity_id if entity_id is not None else item.primary_entity
        if item.is_folder or eid is None:
            raise ApiError(errors.ENTITY_NOT_EXIST, "Entity not exist")
        ent = self.entity(eid)
        policy = self.policy(ent.policy_id)
        if policy.type in LOCAL_STORAGE_TYPES or policy.type not in self.drivers:
            src = self.blob_path(ent.storage_key)
            if not src.exists():
                raise ApiError(errors.ENTITY_NOT_EXIST, "Entity data does not exist.")
            shutil.copyfile(src, dst)
        else:
            await self.drivers[policy.type].fetch_blob(ent.storage_key, dst)
        return ent

    async def store_blob(self, policy: PolicyInfo, storage_key: str, src: Path) -> None:
        """Put the local file ``src`` into a policy's storage as ``storage_key``."""
        if policy.type in LOCAL_STORAGE_TYPES or policy.type not in self.drivers:
            dst = self.blob_path(storage_key)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        else:
            await self.drivers[policy.type].put_blob(storage_key, src)

    async def import_local_file(
        self, owner_id: int, path: str, src: Path, *, updated_at: float | None = None
    ) -> FileRow:
        """Create a file at ``path`` from a local file, like a new upload without overwrite.

        Raises:
            ApiError: 40004 when the name is taken (or locked), 40051 over quota, 40049 over
                the policy's size limit, 40052 for a bad name.
        """
        size = (await anyio.Path(src).stat()).st_size
        parent_path, name = parent_of(path)
        validate_name(name)
        parent = self.mkdirs(owner_id, parent_path)
        if self.child(parent.id, name) is not None or self.locked(owner_id, path) is not None:
            raise ApiError(errors.OBJECT_EXIST, "Object existed")
        policy = self.policy_for(parent)
        self.check_name_against_policy(name, policy)
        if policy.max_size and size > policy.max_size:
            raise ApiError(errors.FILE_TOO_LARGE, "File too large")
        self.check_quota(owner_id, size)
        key = self.new_storage_key(owner_id, name)
        await self.store_blob(policy, key, src)
        with self.tx():
            item = self.insert_file(owner_id, parent.id, name, FILE)
            ent = self.add_entity(item.id, size, key, policy.id)
            when = updated_at if updated_at is not None else self.clock.now()
            return self.update_file(item.id, size=size, primary_entity=ent.id, updated_at=when)

    # ---- locks ----

    def locked(self, owner_id: int, path: str, *, subtree: bool = False) -> Lock | None:
        """Return a live lock on ``path`` (or, with ``subtree``, on anything below it)."""
        now = self.clock.now()
        for token, lock in list(self.locks.items()):
            if lock.expires <= now:
                del self.locks[token]
                continue
            if lock.owner_id != owner_id:
                continue
            if lock.path == path or (subtree and lock.path.startswith(path.rstrip("/") + "/")):
                return lock
        return None

    def lock(self, owner_id: int, path: str, app_type: str, ttl_s: float, file_type: int) -> Lock:
        """Take a path lock (40073 with the conflict list when held)."""
        held = self.locked(owner_id, path)
        if held is not None:
            raise self.lock_conflict([held])
        lock = Lock(secrets.token_hex(16), owner_id, path, app_type, self.clock.now() + ttl_s)
        lock.file_type = file_type
        self.locks[lock.token] = lock
        return lock

    def lock_conflict(self, held: list[Lock]) -> ApiError:
        """Return the 40073 error for held locks (contract 5.13)."""
        data = [
            {
                "path": my_uri(lock.path),
                "token": lock.token,
                "owner": {"application": {"type": lock.app_type}},
                "type": lock.file_type,
            }
            for lock in held
        ]
        return ApiError(errors.LOCK_CONFLICT, "Lock conflict", data=data)

    def check_unlocked(self, owner_id: int, path: str, *, subtree: bool = True) -> None:
        """Raise 40073 when ``path`` (or anything below it) is locked."""
        held = self.locked(owner_id, path, subtree=subtree)
        if held is not None:
            raise self.lock_conflict([held])

    def unlock(self, token: str) -> bool:
        """Release a lock; False when it was not held."""
        return self.locks.pop(token, None) is not None

    # ---- shares and WebDAV accounts ----

    def create_share(
        self,
        owner_id: int,
        file_id: int,
        password: str,
        is_private: bool,
        downloads: int,
        expires: float | None,
    ) -> int:
        """Create a share link and return its numeric id."""
        cur = self.db.execute(
            "INSERT INTO shares(owner_id, file_id, password, is_private, downloads, expires,"
            " created_at) VALUES (?,?,?,?,?,?,?)",
            (owner_id, file_id, password, int(is_private), downloads, expires, self.clock.now()),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def share(self, share_id: int) -> sqlite3.Row:
        """Return a share row (404 when unknown)."""
        row = self.db.execute("SELECT * FROM shares WHERE id=?", (share_id,)).fetchone()
        if row is None:
            raise ApiError(errors.NOT_FOUND, "Share not found")
        return row  # type: ignore[no-any-return]  # sqlite3.Row is untyped

    def shares(self, owner_id: int) -> list[sqlite3.Row]:
        """Return a user's shares, newest first."""
        return list(
            self.db.execute("SELECT * FROM shares WHERE owner_id=? ORDER BY id DESC", (owner_id,))
        )

    def delete_share(self, share_id: int) -> None:
        """Remove a share."""
        self.db.execute("DELETE FROM shares WHERE id=?", (share_id,))

    def create_dav_account(self, owner_id: int, name: str, uri: str, options: int) -> int:
        """Create a WebDAV account with a generated password; return its numeric id."""
        password = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(32))
        cur = self.db.execute(
            "INSERT INTO dav_accounts(owner_id, name, uri, password, options, created_at)"
            " VALUES (?,?,?,?,?,?)",
            (owner_id, name, uri, password, options, self.clock.now()),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def is_shared(self, file_id: int) -> bool:
        """True when a share link points at the file."""
        row = self.db.execute("SELECT 1 FROM shares WHERE file_id=?", (file_id,)).fetchone()
        return row is not None

    def update_share(
        self,
        share_id: int,
        password: str,
        is_private: bool,
        downloads: int,
        expires: float | None,
    ) -> None:
        """Change a share's settings."""
        self.db.execute(
            "UPDATE shares SET is_private=?, password=?, downloads=?, expires=? WHERE id=?",
            (int(is_private), password, downloads, expires, share_id),
        )

    def count_share_view(self, share_id: int) -> None:
        """Count one visit of a share."""
        self.db.execute("UPDATE shares SET visited=visited+1 WHERE id=?", (share_id,))

    def dav_account(self, owner_id: int, dav_id: int) -> sqlite3.Row:
        """Return a user's WebDAV account (404 when unknown or someone else's)."""
        row = self.db.execute(
            "SELECT * FROM dav_accounts WHERE id=? AND owner_id=?", (dav_id, owner_id)
        ).fetchone()
        if row is None:
            raise ApiError(errors.NOT_FOUND, "Account not found")
        return row  # type: ignore[no-any-return]  # sqlite3.Row is untyped

    def update_dav_account(self, dav_id: int, name: str, uri: str, options: int) -> None:
        """Change a WebDAV account."""
        self.db.execute(
            "UPDATE dav_accounts SET name=?, uri=?, options=? WHERE id=?",
            (name, uri, options, dav_id),
        )

    def delete_dav_account(self, dav_id: int) -> None:
        """Remove a WebDAV account."""
        self.db.execute("DELETE FROM dav_accounts WHERE id=?", (dav_id,))

    def dav_accounts(self, owner_id: int) -> list[sqlite3.Row]:
        """Return a user's WebDAV accounts."""
        return list(
            self.db.execute("SELECT * FROM dav_accounts WHERE owner_id=? ORDER BY id", (owner_id,))
        )


def _policy(row: sqlite3.Row) -> PolicyInfo:
    return PolicyInfo(
        id=row["id"],
        hash_id=hashids.encode(row["id"], hashids.POLICY),
        name=row["name"],
        type=row["type"],
        chunk_size=row["chunk_size"],
        chunk_concurrency=row["chunk_concurrency"],
        relay=bool(row["relay"]),
        max_size=row["max_size"],
    )


def _user(row: sqlite3.Row) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        nickname=row["nickname"],
        is_admin=bool(row["is_admin"]),
        status=row["status"],
        quota=row["quota"],
        totp_secret=row["totp_secret"],
        policy_id=row["policy_id"],
        created_at=row["created_at"],
        state_salt=row["state_salt"],
        version_retention=bool(row["version_retention"]),
        retention_ext=tuple(json.loads(row["retention_ext"])),
        retention_max=row["retention_max"],
        password_hash=row["password_hash"],
    )


def _file(row: sqlite3.Row) -> FileRow:
    return FileRow(
        id=row["id"],
        owner_id=row["owner_id"],
        parent_id=row["parent_id"],
        name=row["name"],
        type=row["type"],
        size=row["size"],
        primary_entity=row["primary_entity"],
        policy_id=row["policy_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        trashed=bool(row["trashed"]),
    )


def _entity(row: sqlite3.Row) -> Entity:
    return Entity(
        id=row["id"],
        file_id=row["file_id"],
        owner_id=row["owner_id"],
        type=row["type"],
        size=row["size"],
        storage_key=row["storage_key"],
        policy_id=row["policy_id"],
        created_at=row["created_at"],
        upload_session_id=row["upload_session_id"],
    )


def preallocate(path: Path, size: int) -> None:
    """Create (or extend) a sparse file of ``size`` bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def commit_version(
    store: Store, item: FileRow, entity: Entity, updated_at: float
) -> list[tuple[PolicyInfo, str]]:
    """Make ``entity`` the file's current version and cap old versions (contract 6.8).

    With the owner's version retention off only the new version is kept; with it on (and the
    extension in ``retention_ext`` when that list is set) up to ``retention_max`` versions are
    kept (0 = unlimited). Thumbnails are dropped. Returns the blobs that became unreferenced.
    """
    user = store.user(item.owner_id)
    ext = item.name.rpartition(".")[2].lower() if "." in item.name else ""
    retain = user.version_retention and (
        not user.retention_ext or ext in [e.lower() for e in user.retention_ext]
    )
    keep = (user.retention_max or 1 << 62) if retain else 1
    orphans: list[tuple[PolicyInfo, str]] = []
    with store.tx():
        store.update_entity(entity.id, upload_session_id=None)
        store.update_file(
            item.id, size=entity.size, primary_entity=entity.id, updated_at=updated_at
        )
        versions = [
            e
            for e in store.entities(item.id)
            if e.type == ENTITY_VERSION and not e.upload_session_id and e.id != entity.id
        ]
        for old in versions[: max(0, len(versions) - (keep - 1))]:
            orphans.extend(store.delete_entity(old))
        for thumb in store.entities(item.id):
            if thumb.type == ENTITY_THUMBNAIL:
                orphans.extend(store.delete_entity(thumb))

    return orphans
