"""An in-memory drive for planner and scheduler tests (no HTTP)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import anyio

from transfer import NotFound, RemoteEntry, UploadJournal


class FakeDrive:
    """Files live in a dict keyed by absolute drive path; folders in a set."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, datetime]] = {}
        self.folders: set[str] = set()
        self.uploads: list[tuple[str, bool]] = []
        self.downloads: list[str] = []
        self.deleted: list[str] = []
        self.fail_paths: dict[str, Exception] = {}
        self.walk_error: Exception | None = None
        self.abandoned: list[str] = []
        self.placeholders: set[str] = set()

    def put(self, path: str, data: bytes, mtime: float = 1_700_000_000.0) -> None:
        """Store a file directly, creating its folders."""
        self.files[path] = (data, datetime.fromtimestamp(mtime, UTC))
        parts = path.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            self.folders.add("/" + "/".join(parts[:depth]))

    def _entry(self, path: str) -> RemoteEntry:
        name = path.rpartition("/")[2]
        if path in self.folders:
            return RemoteEntry(path, name, True, 0, datetime.fromtimestamp(0, UTC), path, path)
        data, mtime = self.files[path]
        metadata = {"sys:upload_session_id": "s"} if path in self.placeholders else {}
        return RemoteEntry(
            path,
            name,
            False,
            len(data),
            mtime,
            "id" + path,
            "cloudreve://my" + path,
            metadata=metadata,
        )

    async def walk(self, root: str) -> AsyncIterator[RemoteEntry]:
        if self.walk_error is not None:
            raise self.walk_error
        prefix = root.rstrip("/") + "/"
        for path in sorted(self.folders | set(self.files)):
            if path.startswith(prefix):
                yield self._entry(path)

    async def stat(self, path: str) -> RemoteEntry | None:
        if path == "/":
            return RemoteEntry("/", "", True, 0, datetime.fromtimestamp(0, UTC), "", "")
        if path in self.folders or path in self.files:
            return self._entry(path)
        return None

    async def mkdir(self, path: str) -> RemoteEntry:
        self.put(path + "/.x", b"")
        del self.files[path + "/.x"]
        return self._entry(path)

    async def delete(self, paths: Sequence[str], *, hard: bool = False) -> None:
        for path in paths:
            self.deleted.append(path)
            self.files.pop(path, None)
            for other in [p for p in self.files if p.startswith(path + "/")]:
                del self.files[other]
            self.folders = {f for f in self.folders if f != path and not f.startswith(path + "/")}

    async def upload(
        self,
        local: Path,
        remote_path: str,
        *,
        overwrite: bool,
        journal: UploadJournal,
        key: str,
        progress: Callable[[int], None] | None = None,
        resumed: Callable[[int], None] | None = None,
    ) -> RemoteEntry:
        if remote_path in self.fail_paths:
            raise self.fail_paths[remote_path]
        if remote_path in self.files and not overwrite:
            raise AssertionError(f"upload over an existing file without overwrite: {remote_path}")
        data = await anyio.Path(local).read_bytes()
        self.put(remote_path, data, (await anyio.Path(local).stat()).st_mtime)
        self.uploads.append((remote_path, overwrite))
        if progress is not None:
            progress(len(data))
        return self._entry(remote_path)

    async def abandon_upload(self, journal: UploadJournal, key: str) -> bool:
        if await journal.load(key) is None:
            return False
        await journal.session_closed(key)
        self.abandoned.append(key)
        return True

    async def download(
        self,
        entry: RemoteEntry,
        local: Path,
        *,
        progress: Callable[[int], None] | None = None,
        resumed: Callable[[int], None] | None = None,
        thumbnail_dir: Path | None = None,
    ) -> None:
        if entry.path not in self.files:
            raise NotFound(404, 40016, "not found", "", "GET", entry.path)
        data, mtime = self.files[entry.path]
        await anyio.Path(local).write_bytes(data)
        os.utime(local, (mtime.timestamp(), mtime.timestamp()))
        self.downloads.append(entry.path)
        if progress is not None:
            progress(len(data))
