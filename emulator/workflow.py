"""Workflow tasks of the emulator (contract 8): remote download, archive, extract, import and
relocate, with their ``/api/v4/workflow`` routes.

Each type is a :class:`emulator.tasks.TaskJob` whose ``step`` follows the phases of the real
server's ``pkg/filemanager/workflows``. Jobs touch the drive only through :class:`Drive`, the few
store operations they need (:class:`StoreDrive` over the emulator's store), so they also run
against an in-memory drive in tests.

Group flags, ``aria2_batch``, the archive limits, the monitor period and the retry budget come
from :class:`WorkflowSettings` (``EmulatorConfig.extra``). Relocate is accepted on
``/workflow/reloacte``, ``/workflow/relocate`` and ``/workflow/reloc`` (8.8).
"""

from __future__ import annotations

import base64
import codecs
import json
import shutil
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import anyio
import structlog
from aiohttp import web

from emulator import errors, hashids
from emulator.config import ConfigError
from emulator.core import (
    STATE,
    field_bool,
    field_int,
    field_str,
    field_str_list,
    ok,
    query_int,
    read_json,
)
from emulator.errors import ApiError
from emulator.session import require_user
from emulator.store import (
    FILE,
    Entity,
    FileRow,
    Store,
    User,
    my_uri,
    parse_uri,
    validate_name,
)
from emulator.tasks import Clock, Progress, RetryPolicy, Task, TaskFailed, TaskRunner, TaskStatus

log = structlog.get_logger("emulator.workflow")

PHASE_NOT_STARTED = ""
PHASE_MONITOR = "monitor"
PHASE_TRANSFER = "transfer"
PHASE_SEEDING = "seeding"

BATCH_ARIA2_SIZE = 40015
"""Code for more URLs than the group's ``aria2_batch`` (contract 1.5)."""

_UNSAFE_NAME_CHARS = str.maketrans(dict.fromkeys('\\:*?"<>|', "_"))


@dataclass(frozen=True, slots=True)
class Entry:
    """A file or folder of a user's drive, as the jobs see it."""

    uri: str
    name: str
    is_folder: bool
    size: int


class Drive(Protocol):
    """The store operations workflow jobs need; errors are :class:`ApiError` with the API code."""

    async def stat(self, user_id: int, uri: str) -> Entry:
        """Return the entry at ``uri`` (40016 when a path element is missing)."""
        ...

    async def create_folder(self, user_id: int, uri: str) -> None:
        """Create a folder and its ancestors; an existing folder is not an error."""
        ...

    async def put_file(
        self, user_id: int, uri: str, src: Path, *, policy_id: int | None = None
    ) -> None:
        """Create a new file from a local file, ancestors included (40004 if the name is taken).

        The blob goes to ``policy_id`` when given, else to the destination folder's policy.
        """
        ...

    async def prevalidate(self, user_id: int, folder: str, name: str, size: int) -> None:
        """Check that ``name`` of ``size`` bytes could be uploaded into ``folder``.

        Raises:
            ApiError: the folder is missing (40016), the name or size breaks the folder's policy
                (40052, 40049), or the quota would be exceeded (40051).
        """
        ...

    async def read_file(self, user_id: int, uri: str, dst: Path) -> None:
        """Copy the current version of the file at ``uri`` into the local file ``dst``."""
        ...

    async def walk(self, user_id: int, uri: str) -> list[tuple[str, Entry]]:
        """Return every entry below the folder ``uri`` with its relative path, parents first."""
        ...

    async def pending_entities(self, user_id: int, uri: str, policy_id: str) -> int:
        """How many entities of the file are not yet stored by the policy."""
        ...

    async def relocate_file(self, user_id: int, uri: str, policy_id: str) -> int:
        """Move every entity of the file to the policy's storage; return how many moved."""
        ...


def sanitize_file_name(name: str) -> str:
    """Replace ``\\ : * ? " < > |`` by ``_`` as the remote-download transfer does (8.2)."""
    return name.translate(_UNSAFE_NAME_CHARS)


def join_uri(folder: str, relative: str) -> str:
    """Join a relative slash path (raw names) onto a folder URI, percent-encoding each segment."""
    parts = [quote(p, safe="!~*'()") for p in relative.split("/") if p not in ("", ".", "..")]
    return "/".join([folder.rstrip("/"), *parts])


Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


# ---------------------------------------------------------------------------------------------
# Remote download


@dataclass(slots=True)
class HttpDownload:
    """One download of an http(s) URL into a temporary folder, standing in for aria2.

    ``state`` follows ``downloader.Status``: ``downloading`` until the body is saved, then
    ``completed``; ``error`` with ``error_message`` when the URL cannot be fetched.

    Unlike the real server, private and loopback addresses are allowed (no SSRF check): the
    emulator only ever reaches loopback servers started by tests.
    """

    url: str
    save_dir: Path
    name: str = ""
    state: str = "downloading"
    total: int = 0
    downloaded: int = 0
    download_speed: int = 0
    error_message: str = ""
    selected: bool = True
    canceled: bool = False
    _cancel: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def __post_init__(self) -> None:
        self.name = _name_from_url(self.url)

    @property
    def path(self) -> Path:
        """Where the downloaded body is saved."""
        return self.save_dir / self.name

    async def run(self) -> None:
        """Fetch the URL; never raises, the outcome is in ``state``."""
        with self._cancel:
            try:
                await self._fetch()
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                self.state = "error"
                self.error_message = f"{type(exc).__name__}: {exc}"
                log.warning("remote_download_failed", url=self.url, error=self.error_message)

    async def _fetch(self) -> None:
        self.save_dir.mkdir(parents=True, exist_ok=True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(self.url) as resp,
        ):
            if resp.status >= 400:
                self.state = "error"
                self.error_message = f"HTTP status {resp.status}"
                return
            self.total = resp.content_length or 0
            window_start, window_bytes = time.monotonic(), 0
            with self.path.open("wb") as out:
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    out.write(chunk)
                    self.downloaded += len(chunk)
                    window_bytes += len(chunk)
                    elapsed = time.monotonic() - window_start
                    if elapsed >= 0.5:
                        self.download_speed = int(window_bytes / elapsed)
                        window_start, window_bytes = time.monotonic(), 0
        self.total = self.total or self.downloaded
        self.download_speed = 0
        self.state = "completed"

    def cancel(self) -> None:
        """Stop the fetch; the task sees ``canceled`` on its next check."""
        self.canceled = True
        self._cancel.cancel()

    def status_json(self) -> dict[str, object]:
        """Return ``DownloadStatus`` (contract 8.1) without the save path."""
        progress = self.downloaded / self.total if self.total else 0.0
        out: dict[str, object] = {
            "name": self.name,
            "state": self.state,
            "total": self.total,
            "downloaded": self.downloaded,
            "download_speed": self.download_speed,
            "uploaded": 0,
            "upload_speed": 0,
            "files": [
                {
                    "index": 1,
                    "name": self.name,
                    "size": self.total,
                    "progress": min(progress, 1.0),
                    "selected": self.selected,
                }
            ],
        }
        if self.error_message:
            out["error_message"] = self.error_message
        return out


def _name_from_url(url: str) -> str:
    """The file name aria2 saves an HTTP URL under: the last path segment, else index.html."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    return name or "index.html"


@dataclass(slots=True, eq=False)
class RemoteDownloadJob:
    """``remote_download``: fetch a URL, then transfer the file into ``dst`` (8.2-8.4)."""

    drive: Drive
    clock: Clock
    spawn: Spawn
    owner_id: int
    src_url: str
    dst: str
    temp_dir: Path
    monitor_interval_s: float = 1.0
    torrent: bool = False
    type: str = "remote_download"
    download: HttpDownload | None = None
    failed: int = 0
    transferred: bool = False
    validated_total: int | None = None

    async def step(self, task: Task) -> TaskStatus:
        """Run the phase the task is in: start, monitor, transfer or await seeding."""
        if task.phase == PHASE_NOT_STARTED:
            return self._start(task)
        if task.phase in (PHASE_MONITOR, PHASE_SEEDING):
            await self._validate()
            return self._monitor(task)
        return await self._transfer(task)

    async def _validate(self) -> None:
        """Pre-validate the destination whenever the download's size becomes known or changes."""
        download = self.download
        assert download is not None, "monitor phase without a download"
        if download.state == "error" or download.total == self.validated_total:
            return
        self.validated_total = download.total
        name = sanitize_file_name(download.name)
        try:
            await self.drive.prevalidate(self.owner_id, self.dst, name, download.total)
        except ApiError as exc:
            download.cancel()
            raise TaskFailed(
                f"failed to validate files: {exc.msg} (code {exc.code}) (non-retryable error)",
                critical=True,
            ) from exc

    def _start(self, task: Task) -> TaskStatus:
        if self.torrent:
            raise TaskFailed(
                "unsupported: torrent downloads (src_file) are not emulated", critical=True
            )
        scheme = urlsplit(self.src_url).scheme.lower()
        if scheme not in ("http", "https"):
            raise TaskFailed(
                f"url rejected: unsupported scheme {scheme!r} (non-retryable error)", critical=True
            )
        download = HttpDownload(self.src_url, self.temp_dir)
        self.download = download
        self.spawn(download.run)
        task.phase = PHASE_MONITOR
        task.resume_after(self.clock.now(), 0)
        return TaskStatus.SUSPENDING

    def _monitor(self, task: Task) -> TaskStatus:
        download = self.download
        assert download is not None, "monitor phase without a download"
        if download.canceled:
            return TaskStatus.CANCELED
        if download.state == "error":
            raise TaskFailed(
                f'download task failed with state "error" (non-retryable error), errorMsg: '
                f"{download.error_message}",
                critical=True,
            )
        if download.state == "completed":
            if task.phase == PHASE_MONITOR:
                task.phase = PHASE_TRANSFER
                task.resume_after(self.clock.now(), 0)
                return TaskStatus.SUSPENDING
            return TaskStatus.COMPLETED
        task.resume_after(self.clock.now(), self.monitor_interval_s)
        return TaskStatus.SUSPENDING

    async def _transfer(self, task: Task) -> TaskStatus:
        download = self.download
        assert download is not None, "transfer phase without a download"
        files = [download] if download.selected and not self.transferred else []
        size = sum(d.total for d in files)
        task.progress = {
            "upload_count": Progress(total=len(files)),
            "upload": Progress(total=size),
        }
        self.failed = 0
        errors: list[str] = []
        for worker, item in enumerate(files):
            dst = join_uri(self.dst, sanitize_file_name(item.name))
            single = Progress(total=item.total, identifier=dst)
            task.progress[f"upload_single_{worker}"] = single
            try:
                await self.drive.put_file(self.owner_id, dst, item.path)
                self.transferred = True
            except ApiError as exc:
                self.failed += 1
                errors.append(f"{item.name}: failed to upload file: {exc.msg} (code {exc.code})")
            single.current = item.total
            task.progress["upload"].current += item.total
            task.progress["upload_count"].current += 1
        if self.failed:
            raise TaskFailed(
                f"failed to transfer {self.failed} file(s), first 5 errors: {'; '.join(errors[:5])}"
            )
        task.phase = PHASE_SEEDING
        task.resume_after(self.clock.now(), 0)
        return TaskStatus.SUSPENDING

    def summary_props(self, task: Task) -> dict[str, object]:
        """``src_str``, ``src``, ``dst``, ``failed`` and ``download`` (8.1)."""
        return {
            "src_str": "" if self.torrent else self.src_url,
            "src": self.src_url if self.torrent else "",
            "dst": self.dst,
            "failed": self.failed,
            "download": self.download.status_json() if self.download else None,
        }

    def select(self, index: int, download: bool) -> None:
        """Select or deselect one file of the download (``PATCH /workflow/download/{id}``)."""
        if self.download is not None and index == 1:
            self.download.selected = download

    async def cancel(self, task: Task) -> None:
        """Cancel in the downloader; a task not yet handed to it ignores the call (8.4)."""
        if self.download is not None:
            self.download.cancel()

    async def cleanup(self, task: Task) -> None:
        """Stop the fetch and remove the temporary folder."""
        if self.download is not None and self.download.state == "downloading":
            self.download.cancel()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Archive and extract


@dataclass(slots=True, eq=False)
class CreateArchiveJob:
    """``create_archive``: zip the sources into a new file at ``dst`` (8.7)."""

    drive: Drive
    clock: Clock
    owner_id: int
    sources: list[str]
    dst: str
    temp_dir: Path
    max_size: int = 0
    type: str = "create_archive"
    failed: int = 0

    @property
    def zip_path(self) -> Path:
        """The archive built in the compress phase."""
        return self.temp_dir / "archive.zip"

    async def step(self, task: Task) -> TaskStatus:
        """Compress, then upload the archive."""
        if task.phase in ("", "not_started"):
            task.phase = "compress_files"
            task.resume_after(self.clock.now(), 0)
            return TaskStatus.SUSPENDING
        if task.phase == "compress_files":
            await self._compress(task)
            task.phase = "upload_archive"
            task.resume_after(self.clock.now(), 0)
            return TaskStatus.SUSPENDING
        return await self._upload(task)

    async def _compress(self, task: Task) -> None:
        count = task.progress.setdefault("archive_count", Progress())
        size = task.progress.setdefault("archive_size", Progress())
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        members = await self._members()
        blob = self.temp_dir / "blob"
        with zipfile.ZipFile(self.zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for arcname, entry in members:
                if entry.is_folder:
                    zf.writestr(arcname.rstrip("/") + "/", b"")
                    continue
                size.total += entry.size
                if self.max_size and size.total > self.max_size:
                    raise TaskFailed(
                        f"failed to compress files: total size {size.total} exceeds the "
                        f"limit {self.max_size}"
                    )
                try:
                    await self.drive.read_file(self.owner_id, entry.uri, blob)
                except ApiError as exc:
                    self.failed += 1
                    log.warning("archive_member_skipped", uri=entry.uri, api_code=exc.code)
                    continue
                zf.write(blob, arcname)
                size.current += entry.size
                count.current += 1
        blob.unlink(missing_ok=True)
        task.progress.pop("archive_count", None)
        task.progress.pop("archive_size", None)

    async def _members(self) -> list[tuple[str, Entry]]:
        """Every source with its name in the archive; folders bring their content."""
        members: list[tuple[str, Entry]] = []
        for uri in self.sources:
            try:
                entry = await self.drive.stat(self.owner_id, uri)
            except ApiError as exc:
                raise TaskFailed(
                    f"failed to compress files: {uri}: {exc.msg}", critical=True
                ) from exc
            members.append((entry.name, entry))
            if entry.is_folder:
                for rel, child in await self.drive.walk(self.owner_id, uri):
                    members.append((f"{entry.name}/{rel}", child))
        return members

    async def _upload(self, task: Task) -> TaskStatus:
        total = self.zip_path.stat().st_size
        task.progress["upload"] = Progress(total=total)
        try:
            await self.drive.put_file(self.owner_id, self.dst, self.zip_path)
        except ApiError as exc:
            raise TaskFailed(f"failed to upload archive file: {exc.msg} (code {exc.code})") from exc
        task.progress["upload"].current = total
        return TaskStatus.COMPLETED

    def summary_props(self, task: Task) -> dict[str, object]:
        """``src_multiple``, ``dst`` and ``failed`` (8.1)."""
        return {"src_multiple": list(self.sources), "dst": self.dst, "failed": self.failed}

    async def cancel(self, task: Task) -> None:
        """Archive tasks cannot be canceled; the call is a no-op as in CE (8.4)."""

    async def cleanup(self, task: Task) -> None:
        """Remove the temporary archive."""
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _in_mask(path: str, masks: list[str]) -> bool:
    """Whether an archive path is one of the masks or lies below one."""
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in masks)


@dataclass(slots=True, eq=False)
class ExtractArchiveJob:
    """``extract_archive``: unpack a zip file into the folder ``dst`` (8.7)."""

    drive: Drive
    clock: Clock
    owner_id: int
    src: str
    dst: str
    temp_dir: Path
    decompress_limit: int = 0
    file_mask: list[str] = field(default_factory=list)
    encoding: str = ""
    type: str = "extract_archive"
    failed: int = 0
    processed: set[str] = field(default_factory=set)

    async def step(self, task: Task) -> TaskStatus:
        """Check the limit, fetch the archive, then create each member in ``dst``."""
        try:
            archive = await self.drive.stat(self.owner_id, self.src)
        except ApiError as exc:
            raise TaskFailed(
                f"failed to get archive file: {exc.msg} (non-retryable error)", critical=True
            ) from exc
        if self.decompress_limit and archive.size > self.decompress_limit:
            raise TaskFailed(
                f"file size {archive.size} exceeds the limit {self.decompress_limit} "
                "(non-retryable error)",
                critical=True,
            )
        local = self.temp_dir / "src.zip"
        if not local.exists():
            task.phase = "download_zip"
            task.progress["download"] = Progress(total=archive.size)
            self.temp_dir.mkdir(parents=True, exist_ok=True)
            await self.drive.read_file(self.owner_id, self.src, local)
            task.progress.pop("download")
        try:
            with zipfile.ZipFile(local, metadata_encoding=self._name_encoding()) as zf:
                await self._extract(task, zf)
        except zipfile.BadZipFile as exc:
            raise TaskFailed(
                f"failed to identify archive format: {exc} (non-retryable error)", critical=True
            ) from exc
        return TaskStatus.COMPLETED

    def _name_encoding(self) -> str | None:
        """The requested encoding of member names, or None (UTF-8 flag / CP437) when unknown."""
        if not self.encoding:
            return None
        try:
            return codecs.lookup(self.encoding).name
        except LookupError:
            log.warning("extract_encoding_unknown", encoding=self.encoding)
            return None

    async def _extract(self, task: Task, zf: zipfile.ZipFile) -> None:
        members = zf.infolist()
        count = task.progress.setdefault("extract_count", Progress(total=len(members)))
        size = task.progress.setdefault(
            "extract_size", Progress(total=sum(m.file_size for m in members))
        )
        count.current = size.current = 0
        blob = self.temp_dir / "member"
        for info in members:
            raw = info.filename.replace("\\", "/")
            count.current += 1
            size.current += info.file_size
            if raw in self.processed:
                continue
            if (self.file_mask and not _in_mask(raw, self.file_mask)) or not _legit(raw):
                continue
            target = join_uri(self.dst, raw)
            if info.is_dir():
                await self.drive.create_folder(self.owner_id, target)
            else:
                try:
                    with zf.open(info) as src, blob.open("wb") as out:
                        shutil.copyfileobj(src, out)
                except RuntimeError as exc:
                    # CE passes no password to zip extraction: encrypted members are skipped.
                    log.warning("extract_member_skipped", member=raw, reason=str(exc))
                    continue
                try:
                    await self.drive.put_file(self.owner_id, target, blob)
                except ApiError as exc:
                    raise TaskFailed(
                        f"failed to upload file {raw!r} in archive file: {exc.msg} "
                        f"(code {exc.code})"
                    ) from exc
            self.processed.add(raw)

    def summary_props(self, task: Task) -> dict[str, object]:
        """``src``, ``dst`` and ``failed`` (8.1)."""
        return {"src": self.src, "dst": self.dst, "failed": self.failed}

    async def cancel(self, task: Task) -> None:
        """Extract tasks cannot be canceled; the call is a no-op as in CE (8.4)."""

    async def cleanup(self, task: Task) -> None:
        """Remove the local copy of the archive."""
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _legit(raw: str) -> bool:
    """Reject absolute paths and ``..`` segments (the server skips such members)."""
    parts = raw.split("/")
    return not raw.startswith("/") and ".." not in parts


# ---------------------------------------------------------------------------------------------
# Import and relocate


@dataclass(slots=True, eq=False)
class ImportJob:
    """``import``: copy files from a server folder into a user's drive (admin, 8.7).

    The real server registers files already present in the policy's storage; the emulator copies
    them in as new uploads, with their blobs in the requested policy.
    """

    drive: Drive
    owner_id: int
    src: Path
    dst: str
    recursive: bool
    policy_id: int
    type: str = "import"

    async def step(self, task: Task) -> TaskStatus:
        """Index the server folder, then create each file below ``dst``."""
        if not self.src.is_dir():
            raise TaskFailed(f"failed to list files in {self.src}: not a folder", critical=True)
        pattern = "**/*" if self.recursive else "*"
        files = sorted(p for p in self.src.glob(pattern) if p.is_file())
        indexed = task.progress.setdefault("indexed", Progress())
        indexed.current = indexed.total = len(files)
        imported = task.progress.setdefault("imported", Progress(total=len(files)))
        for path in files:
            rel = path.relative_to(self.src).as_posix()
            try:
                await self.drive.put_file(
                    self.owner_id, join_uri(self.dst, rel), path, policy_id=self.policy_id
                )
            except ApiError as exc:
                if exc.code != 40004:
                    raise TaskFailed(f"failed to import {rel}: {exc.msg}") from exc
            imported.current += 1
        return TaskStatus.COMPLETED

    def summary_props(self, task: Task) -> dict[str, object]:
        """Import tasks report through progress keys only (8.1)."""
        return {}

    async def cancel(self, task: Task) -> None:
        """Import tasks cannot be canceled (8.4)."""

    async def cleanup(self, task: Task) -> None:
        """Nothing to release."""


@dataclass(slots=True, eq=False)
class RelocateJob:
    """``relocate`` (Pro): move every entity of the sources to another policy (8.8)."""

    drive: Drive
    clock: Clock
    owner_id: int
    sources: list[str]
    dst_policy_id: str
    type: str = "relocate"
    failed: int = 0
    files: list[tuple[str, int]] = field(default_factory=list)
    done: int = 0

    async def step(self, task: Task) -> TaskStatus:
        """Index the entities below the sources, then move them file by file.

        Progress ``relocate`` counts entities (done / total).
        """
        if task.phase == "":
            self.files = await self._index()
            task.progress["relocate"] = Progress(total=sum(n for _, n in self.files))
            task.phase = "transfer"
            task.resume_after(self.clock.now(), 0)
            return TaskStatus.SUSPENDING
        progress = task.progress.setdefault("relocate", Progress())
        for uri, pending in self.files[self.done :]:
            try:
                progress.current += await self.drive.relocate_file(
                    self.owner_id, uri, self.dst_policy_id
                )
            except ApiError as exc:
                self.failed += 1
                progress.current += pending
                log.warning("relocate_file_failed", uri=uri, api_code=exc.code)
            self.done += 1
        task.phase = "finish"
        if self.failed:
            raise TaskFailed(f"failed to relocate {self.failed} file(s)", critical=True)
        return TaskStatus.COMPLETED

    async def _index(self) -> list[tuple[str, int]]:
        """Every file below the sources with its number of entities still to move."""
        uris: list[str] = []
        for uri in self.sources:
            try:
                entry = await self.drive.stat(self.owner_id, uri)
            except ApiError as exc:
                raise TaskFailed(f"failed to index {uri}: {exc.msg}", critical=True) from exc
            if not entry.is_folder:
                uris.append(entry.uri)
                continue
            uris.extend(
                e.uri for _, e in await self.drive.walk(self.owner_id, uri) if not e.is_folder
            )
        found = []
        for uri in uris:
            pending = await self.drive.pending_entities(self.owner_id, uri, self.dst_policy_id)
            if pending:
                found.append((uri, pending))
        return found

    def summary_props(self, task: Task) -> dict[str, object]:
        """``src_multiple``, ``dst_policy_id`` and ``failed`` (8.8)."""
        return {
            "src_multiple": list(self.sources),
            "dst_policy_id": self.dst_policy_id,
            "failed": self.failed,
        }

    async def cancel(self, task: Task) -> None:
        """Relocate tasks cannot be canceled (8.4)."""

    async def cleanup(self, task: Task) -> None:
        """Nothing to release."""


# ---------------------------------------------------------------------------------------------
# The drive as the store offers it


class StoreDrive:
    """:class:`Drive` over the emulator's store; only ``cloudreve://my`` URIs are accepted."""

    def __init__(self, store: Store, temp_root: Path) -> None:
        self.store = store
        self.temp_root = temp_root

    def _path(self, uri: str) -> str:
        parsed = parse_uri(uri)
        if parsed.fs != "my":
            raise ApiError(errors.NO_PERMISSION, "Not supported action")
        return parsed.path

    def _entry(self, item: FileRow) -> Entry:
        return Entry(my_uri(self.store.path_of(item)), item.name, item.is_folder, item.size)

    async def stat(self, user_id: int, uri: str) -> Entry:
        """Return the entry at ``uri`` (40016 when missing)."""
        return self._entry(self.store.resolve(user_id, self._path(uri)))

    async def create_folder(self, user_id: int, uri: str) -> None:
        """Create a folder and its ancestors."""
        self.store.mkdirs(user_id, self._path(uri))

    async def put_file(
        self, user_id: int, uri: str, src: Path, *, policy_id: int | None = None
    ) -> None:
        """Create a new file from a local file (40004 taken, 40073 locked, 40051 over quota)."""
        path = self._path(uri)
        if policy_id is None:
            await self.store.import_local_file(user_id, path, src)
            return
        policy = self.store.policy(policy_id)
        size = (await anyio.Path(src).stat()).st_size
        self.store.check_unlocked(user_id, path)
        self.store.check_quota(user_id, size)
        key = self.store.new_storage_key(user_id, path.rpartition("/")[2])
        await self.store.store_blob(policy, key, src)
        # No await from here on: the file never shows up without its content.
        try:
            item = self.store.create(user_id, path, FILE)
        except ApiError:
            await self.store.delete_blobs([(policy, key)])
            raise
        ent = self.store.add_entity(item.id, size, key, policy.id)
        self.store.update_file(item.id, size=size, primary_entity=ent.id)

    async def prevalidate(self, user_id: int, folder: str, name: str, size: int) -> None:
        """Apply the upload checks of the folder's policy and the quota to a future file."""
        item = self.store.resolve(user_id, self._path(folder))
        if not item.is_folder:
            raise errors.not_found_path()
        policy = self.store.policy_for(item)
        validate_name(name)
        self.store.check_name_against_policy(name, policy)
        if policy.max_size and size > policy.max_size:
            raise ApiError(errors.FILE_TOO_LARGE, "File too large")
        self.store.check_quota(user_id, size)

    async def read_file(self, user_id: int, uri: str, dst: Path) -> None:
        """Copy the file's current version into ``dst``."""
        item = self.store.resolve(user_id, self._path(uri))
        await self.store.export_blob(item, dst)

    async def walk(self, user_id: int, uri: str) -> list[tuple[str, Entry]]:
        """Return everything below the folder ``uri`` with paths relative to it."""
        folder = self.store.resolve(user_id, self._path(uri))
        if not folder.is_folder:
            return []
        return [(p.lstrip("/"), self._entry(f)) for p, f in self.store.walk(folder, "/")]

    def _movable(self, item: FileRow, policy_id: int) -> list[Entity]:
        return [
            e
            for e in self.store.entities(item.id)
            if e.policy_id != policy_id and not e.upload_session_id
        ]

    async def pending_entities(self, user_id: int, uri: str, policy_id: str) -> int:
        """How many finished entities of the file another policy stores."""
        target = _decode_id(policy_id, hashids.POLICY)
        return len(self._movable(self.store.resolve(user_id, self._path(uri)), target))

    async def relocate_file(self, user_id: int, uri: str, policy_id: str) -> int:
        """Copy each entity of the file to the policy as a new entity and drop the old one.

        New entity ids mean content URLs handed out before the move stop working (case BR-26).
        """
        policy = self.store.policy(_decode_id(policy_id, hashids.POLICY))
        item = self.store.resolve(user_id, self._path(uri))
        moved = 0
        for ent in self._movable(item, policy.id):
            tmp = self.temp_root / f"relocate-{ent.id}"
            tmp.parent.mkdir(parents=True, exist_ok=True)
            try:
                await self.store.export_blob(item, tmp, ent.id)
                key = self.store.new_storage_key(user_id, item.name)
                await self.store.store_blob(policy, key, tmp)
            finally:
                tmp.unlink(missing_ok=True)
            new = self.store.add_entity(item.id, ent.size, key, policy.id, ent.type)
            if item.primary_entity == ent.id:
                item = self.store.update_file(item.id, primary_entity=new.id)
            await self.store.delete_blobs(self.store.delete_entity(ent))
            moved += 1
        return moved


def _decode_id(raw: str, kind: int) -> int:
    """Decode a hash id (40001 ``Failed to parse object ID`` when malformed)."""
    try:
        return hashids.decode(raw, kind)
    except hashids.HashIdError as exc:
        raise ApiError(errors.PARAM_ERR, "Failed to parse object ID") from exc


# ---------------------------------------------------------------------------------------------
# HTTP routes (contract 8)

ADMIN_PERMISSIONS = frozenset({0, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 16})
USER_PERMISSIONS = frozenset({2, 7, 11})
PERM_ARCHIVE = 5
PERM_REMOTE_DOWNLOAD = 9
PERM_RELOCATE = 10
_CATEGORIES = ("general", "downloading", "downloaded")
_GENERAL_TYPES = ("create_archive", "extract_archive", "relocate", "import")


@dataclass(frozen=True, slots=True)
class WorkflowSettings:
    """Group and queue settings of the workflow routes, read from ``EmulatorConfig.extra``.

    Keys (all optional): ``user_permissions`` / ``admin_permissions`` (comma-separated group
    flags), ``aria2_batch_user`` / ``aria2_batch_admin``, ``decompress_size`` and
    ``compress_size`` (bytes, 0 = unlimited), ``download_interval_s`` (monitor period),
    ``task_max_retry``, ``task_backoff_s`` (first retry delay).
    """

    user_permissions: frozenset[int] = USER_PERMISSIONS
    admin_permissions: frozenset[int] = ADMIN_PERMISSIONS
    aria2_batch_user: int = 1
    aria2_batch_admin: int = 50
    decompress_size: int = 0
    compress_size: int = 0
    download_interval_s: float = 1.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_extra(cls, extra: dict[str, str]) -> WorkflowSettings:
        """Build the settings from ``EmulatorConfig.extra`` (ConfigError on a bad value)."""
        try:
            return cls(
                user_permissions=_flags(extra.get("user_permissions"), USER_PERMISSIONS),
                admin_permissions=_flags(extra.get("admin_permissions"), ADMIN_PERMISSIONS),
                aria2_batch_user=int(extra.get("aria2_batch_user", 1)),
                aria2_batch_admin=int(extra.get("aria2_batch_admin", 50)),
                decompress_size=int(extra.get("decompress_size", 0)),
                compress_size=int(extra.get("compress_size", 0)),
                download_interval_s=float(extra.get("download_interval_s", 1.0)),
                retry=RetryPolicy(
                    max_retry=int(extra.get("task_max_retry", 5)),
                    backoff_min_s=float(extra.get("task_backoff_s", 0.1)),
                ),
            )
        except ValueError as exc:
            raise ConfigError(f"workflow settings in extra: {exc}") from exc

    def permissions(self, user: User) -> frozenset[int]:
        """The group flags of the user's group."""
        return self.admin_permissions if user.is_admin else self.user_permissions

    def aria2_batch(self, user: User) -> int:
        """How many URLs one remote-download request may carry."""
        return self.aria2_batch_admin if user.is_admin else self.aria2_batch_user


def _flags(raw: str | None, default: frozenset[int]) -> frozenset[int]:
    if raw is None:
        return default
    return frozenset(int(p) for p in raw.split(",") if p.strip())


@dataclass(slots=True)
class Workflows:
    """What the workflow routes share: the runner, the drive and the settings."""

    runner: TaskRunner
    drive: Drive
    settings: WorkflowSettings
    temp_root: Path

    def temp_dir(self) -> Path:
        """A fresh temporary folder for one task."""
        return self.temp_root / uuid.uuid4().hex


WORKFLOWS = web.AppKey("emulator_workflows", Workflows)
routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    """Add the ``/api/v4/workflow`` routes and run the task runner for the app's lifetime."""
    app.router.add_routes(routes)
    app.cleanup_ctx.append(_run_workflows)


async def _run_workflows(app: web.Application) -> AsyncIterator[None]:
    st = app[STATE]
    settings = WorkflowSettings.from_extra(st.config.extra)
    temp_root = st.config.data_dir / "workflow_temp"
    async with TaskRunner.open(st.clock, settings.retry) as runner:
        app[WORKFLOWS] = Workflows(runner, StoreDrive(st.store, temp_root), settings, temp_root)
        yield
    shutil.rmtree(temp_root, ignore_errors=True)


def _workflows(request: web.Request) -> Workflows:
    return request.app[WORKFLOWS]


def _require_permission(wf: Workflows, user: User, flag: int, what: str) -> None:
    if flag not in wf.settings.permissions(user):
        raise ApiError(errors.GROUP_NOT_ALLOWED, f"Group not allowed to {what}")


async def _check_destination(wf: Workflows, user: User, dst: str) -> None:
    """The destination must exist; failures keep the inner code, msg ``Invalid destination``."""
    try:
        await wf.drive.stat(user.id, dst)
    except ApiError as exc:
        raise ApiError(exc.code, "Invalid destination") from exc


def _task_json(task: Task) -> dict[str, object]:
    return task.to_json(lambda n: hashids.encode(n, hashids.TASK))


@routes.post("/api/v4/workflow/download")
async def create_download(request: web.Request) -> web.Response:
    """``POST /workflow/download``: one ``remote_download`` task per URL (8.2)."""
    user = require_user(request)
    wf = _workflows(request)
    body = await read_json(request)
    src = body.get("src") or []
    src_file = field_str(body, "src_file")
    dst = field_str(body, "dst", required=True)
    if not isinstance(src, list) or not all(isinstance(s, str) for s in src):
        raise errors.param_error()
    _require_permission(wf, user, PERM_REMOTE_DOWNLOAD, "download files")
    if not src_file and not src:
        raise ApiError(errors.PARAM_ERR, "No source files")
    if src_file and src:
        raise ApiError(errors.PARAM_ERR, "Invalid source files")
    await _check_destination(wf, user, dst)
    limit = wf.settings.aria2_batch(user)
    if limit > 0 and len(src) > limit:
        raise ApiError(BATCH_ARIA2_SIZE, "")
    if src_file:
        try:
            await wf.drive.stat(user.id, src_file)
        except ApiError as exc:
            raise ApiError(exc.code, "Invalid source file") from exc
        # Torrents need a BitTorrent client: the task is created as CE does, then ends error
        # with a message naming the unsupported feature.
        src = [src_file]
    tasks = []
    for url in src:
        if not url:
            continue
        job = RemoteDownloadJob(
            drive=wf.drive,
            clock=wf.runner.clock,
            spawn=wf.runner.start_soon,
            owner_id=user.id,
            src_url=url,
            dst=dst,
            temp_dir=wf.temp_dir(),
            monitor_interval_s=wf.settings.download_interval_s,
            torrent=bool(src_file),
        )
        tasks.append(wf.runner.submit(user.id, job))
    return ok([_task_json(t) for t in tasks])


def _path_task_id(request: web.Request) -> int:
    return _decode_id(request.match_info["id"], hashids.TASK)


def _own_live_task(request: web.Request, user: User) -> Task:
    """The caller's task while it is in the registry; 404 ``Task not found`` otherwise."""
    task = _workflows(request).runner.live(_path_task_id(request))
    if task is None or task.owner_id != user.id:
        raise ApiError(errors.NOT_FOUND, "Task not found")
    return task


@routes.patch("/api/v4/workflow/download/{id}")
async def select_download_files(request: web.Request) -> web.Response:
    """``PATCH /workflow/download/{id}``: select files while the task monitors (8.3)."""
    user = require_user(request)
    body = await read_json(request)
    files = body.get("files")
    if not isinstance(files, list):
        raise errors.param_error()
    task = _own_live_task(request, user)
    if task.status not in (TaskStatus.PROCESSING, TaskStatus.SUSPENDING):
        raise ApiError(errors.NOT_FOUND, "Task not in processing state")
    if task.phase != PHASE_MONITOR:
        raise ApiError(errors.NOT_FOUND, "Task not in monitoring loop")
    if isinstance(task.job, RemoteDownloadJob):
        for item in files:
            if not isinstance(item, dict):
                raise errors.param_error()
            task.job.select(field_int(item, "index"), field_bool(item, "download"))
    return ok()


@routes.delete("/api/v4/workflow/download/{id}")
async def cancel_download(request: web.Request) -> web.Response:
    """``DELETE /workflow/download/{id}``: cancel in the downloader (8.4)."""
    user = require_user(request)
    task = _own_live_task(request, user)
    await task.job.cancel(task)
    return ok()


@routes.get("/api/v4/workflow")
async def list_tasks(request: web.Request) -> web.Response:
    """``GET /workflow``: the caller's tasks of a category, newest first (8.5)."""
    user = require_user(request)
    page_size = query_int(request, "page_size")
    category = request.query.get("category", "")
    if not 10 <= page_size <= 100 or category not in _CATEGORIES:
        raise errors.param_error()
    after = _parse_cursor(request.query.get("next_page_token", ""))
    tasks = [
        t
        for t in _workflows(request).runner.list_for(user.id)
        if _in_category(t, category) and (after is None or t.id < after)
    ]
    pagination: dict[str, object] = {"page": 0, "page_size": page_size, "is_cursor": True}
    if category != "downloading" and len(tasks) > page_size:
        tasks = tasks[:page_size]
        pagination["next_token"] = _cursor(tasks[-1].id)
    return ok({"tasks": [_task_json(t) for t in tasks], "pagination": pagination})


def _in_category(task: Task, category: str) -> bool:
    if category == "general":
        return task.type in _GENERAL_TYPES
    if task.type != "remote_download":
        return False
    return task.status.finished == (category == "downloaded")


def _cursor(task_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"id": task_id}).encode()).decode()


def _parse_cursor(token: str) -> int | None:
    if not token:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))["id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.param_error("Invalid page token") from exc
    if not isinstance(value, int):
        raise errors.param_error("Invalid page token")
    return value


@routes.get("/api/v4/workflow/progress/{id}")
async def task_progress(request: web.Request) -> web.Response:
    """``GET /workflow/progress/{id}``: the live progress map, ``{}`` otherwise (8.6)."""
    user = require_user(request)
    task = _workflows(request).runner.live(_path_task_id(request))
    if task is None or (task.owner_id != user.id and not user.is_admin):
        return ok({})
    return ok({key: p.to_json() for key, p in task.progress.items()})


@routes.post("/api/v4/workflow/archive")
async def create_archive(request: web.Request) -> web.Response:
    """``POST /workflow/archive``: zip the sources into a new file (8.7)."""
    user = require_user(request)
    wf = _workflows(request)
    body = await read_json(request)
    src = field_str_list(body, "src", min_items=0)
    dst = field_str(body, "dst", required=True)
    _require_permission(wf, user, PERM_ARCHIVE, "compress files")
    try:
        await wf.drive.stat(user.id, dst)
    except ApiError as exc:
        if exc.code != errors.PARENT_NOT_EXIST:
            raise
    else:
        raise ApiError(errors.OBJECT_EXIST, "Object existed")
    job = CreateArchiveJob(
        drive=wf.drive,
        clock=wf.runner.clock,
        owner_id=user.id,
        sources=src,
        dst=dst,
        temp_dir=wf.temp_dir(),
        max_size=wf.settings.compress_size,
    )
    return ok(_task_json(wf.runner.submit(user.id, job)))


@routes.post("/api/v4/workflow/extract")
async def create_extract(request: web.Request) -> web.Response:
    """``POST /workflow/extract``: unpack the first source into ``dst`` (8.7)."""
    user = require_user(request)
    wf = _workflows(request)
    body = await read_json(request)
    src = field_str_list(body, "src", min_items=0)
    dst = field_str(body, "dst", required=True)
    mask = body.get("file_mask") or []
    if not isinstance(mask, list) or not all(isinstance(m, str) for m in mask):
        raise errors.param_error()
    _require_permission(wf, user, PERM_ARCHIVE, "compress files")
    if not src:
        raise ApiError(errors.PARAM_ERR, "No source files")
    await _check_destination(wf, user, dst)
    job = ExtractArchiveJob(
        drive=wf.drive,
        clock=wf.runner.clock,
        owner_id=user.id,
        src=src[0],
        dst=dst,
        temp_dir=wf.temp_dir(),
        decompress_limit=wf.settings.decompress_size,
        file_mask=list(mask),
        encoding=field_str(body, "encoding"),
    )
    return ok(_task_json(wf.runner.submit(user.id, job)))


@routes.post("/api/v4/workflow/import")
async def create_import(request: web.Request) -> web.Response:
    """``POST /workflow/import``: copy a server folder into a user's drive (admin, 8.7)."""
    user = require_user(request)
    wf = _workflows(request)
    body = await read_json(request)
    src = field_str(body, "src", required=True)
    dst = field_str(body, "dst", required=True)
    owner_hash = field_str(body, "user_id", required=True)
    policy_id = field_int(body, "policy_id")
    recursive = field_bool(body, "recursive")
    field_bool(body, "extract_media_meta")
    if policy_id == 0:
        raise errors.param_error()
    if not user.is_admin:
        raise ApiError(errors.GROUP_NOT_ALLOWED, "Only admin can import files")
    owner_id = _decode_id(owner_hash, hashids.USER)
    st = request.app[STATE]
    try:
        st.store.user(owner_id)
        st.store.policy(policy_id)
    except ApiError as exc:
        raise ApiError(errors.DB_ERROR, "Failed to get user") from exc
    job = ImportJob(
        drive=wf.drive,
        owner_id=owner_id,
        src=Path(src),
        dst=my_uri("/" + dst.strip("/")),
        recursive=recursive,
        policy_id=policy_id,
    )
    return ok(_task_json(wf.runner.submit(owner_id, job)))


async def create_relocate(request: web.Request) -> web.Response:
    """``POST /workflow/reloacte`` (also ``relocate``, ``reloc``): move blobs to a policy (8.8)."""
    user = require_user(request)
    wf = _workflows(request)
    body = await read_json(request)
    src = field_str_list(body, "src", min_items=1)
    policy_hash = field_str(body, "dst_policy_id", required=True)
    _require_permission(wf, user, PERM_RELOCATE, "relocate files")
    request.app[STATE].store.policy(_decode_id(policy_hash, hashids.POLICY))
    job = RelocateJob(
        drive=wf.drive,
        clock=wf.runner.clock,
        owner_id=user.id,
        sources=src,
        dst_policy_id=policy_hash,
    )
    return ok(_task_json(wf.runner.submit(user.id, job)))


for _relocate_path in ("relocate", "reloacte", "reloc"):
    routes.post(f"/api/v4/workflow/{_relocate_path}")(create_relocate)
