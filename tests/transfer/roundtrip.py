"""Shared helpers for end-to-end transfer tests: a memory journal, a case-name tree, round trip.

Storage-policy tests (``test_policies_*.py``) import these too::

    async with running_emulator(tmp_path, policy="s3", chunk_size=...) as emu:
        async with connected(emu, tmp_path) as drive:
            await roundtrip(drive, tmp_path, chunk_size=...)
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from emulator.testing import EmulatorHandle
from transfer import (
    Drive,
    Pacer,
    PacerConfig,
    RemoteConfig,
    SavedUpload,
    TransferConfig,
    join_remote,
    safe_local_name,
)

__all__ = [
    "CASE_NAMES",
    "MemoryJournal",
    "build_tree",
    "connected",
    "download_tree",
    "roundtrip",
    "tree_digest",
    "upload_tree",
]

# Names from cases.md (BR-01/02/04/33): reserved URL characters, emoji, NFD, long names.
CASE_NAMES = (
    "plain.txt",
    "a b.txt",
    "100%.txt",
    "a%20b.txt",
    "x&y+z.txt",
    "Track # 7.zip",
    "emoji 📷🎉.bin",
    "Se\u0301ance.flac",
    "l" * 196 + ".bin",
    "文" * 60 + ".txt",
    "semi;colon=eq,comma@at$.dat",
    "(paren) 'quote' [br] ~tilde! .txt",
)


class MemoryJournal:
    """An in-memory :class:`transfer.UploadJournal` that counts what it was told."""

    def __init__(self) -> None:
        self.sessions: dict[str, SavedUpload] = {}
        self.acked: dict[str, dict[int, str]] = {}
        self.opened = 0
        self.closed = 0

    async def load(self, key: str) -> SavedUpload | None:
        saved = self.sessions.get(key)
        if saved is None:
            return None
        return SavedUpload(
            **{f: getattr(saved, f) for f in saved.__slots__ if f != "acked"},
            acked=dict(self.acked.get(key, {})),
        )

    async def session_opened(self, key: str, session: SavedUpload) -> None:
        self.sessions[key] = session
        self.acked[key] = dict(session.acked)
        self.opened += 1

    async def chunk_acked(self, key: str, index: int, etag: str) -> None:
        self.acked.setdefault(key, {})[index] = etag

    async def session_closed(self, key: str) -> None:
        self.sessions.pop(key, None)
        self.acked.pop(key, None)
        self.closed += 1


def remote_config(emu: EmulatorHandle, email: str | None = None, **kw: Any) -> RemoteConfig:
    """The RemoteConfig of an emulator user (the first user by default)."""
    email = email or next(iter(emu.users))
    return RemoteConfig(url=emu.url, email=email, password=emu.users[email], **kw)


@asynccontextmanager
async def connected(
    emu: EmulatorHandle,
    tmp_path: Path,
    *,
    email: str | None = None,
    pacer: PacerConfig | Pacer | None = None,
    transfer: TransferConfig | None = None,
    **connect_kw: Any,
) -> AsyncIterator[Drive]:
    """A signed-in Drive on the emulator with fast retries (tokens cached under tmp_path)."""
    remote = connect_kw.pop("remote", None) or remote_config(emu, email)
    async with Drive.connect(
        remote,
        token_cache=tmp_path / "tokens" / f"{remote.email}.json",
        pacer=pacer or PacerConfig(min_sleep_s=0.0, max_sleep_s=0.05),
        transfer=transfer or TransferConfig(),
        **connect_kw,
    ) as drive:
        yield drive


def build_tree(root: Path, chunk_size: int) -> dict[str, int]:
    """Write a tree of case names and edge sizes under ``root``; return ``{relpath: size}``.

    Sizes: 0 bytes, 1 byte, exact one and two chunk multiples, and a few uneven sizes.
    """
    step = max(chunk_size, 1024)
    sizes = [0, 1, step, 2 * step, 2 * step + 7, 3, 17, step - 1, 5, 11, 19, 23]
    made: dict[str, int] = {}
    for i, name in enumerate(CASE_NAMES):
        folder = root / ("nested dir #1/sub%dir" if i % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        size = sizes[i % len(sizes)]
        data = hashlib.sha256(name.encode()).digest() * (size // 32 + 1)
        (folder / name).write_bytes(data[:size])
        made[str((folder / name).relative_to(root))] = size
    (root / "empty folder").mkdir(exist_ok=True)
    return made


def tree_digest(root: Path) -> dict[str, str]:
    """``{NFC relpath: sha256}`` of every file, and ``{relpath/: "dir"}`` for folders."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames:
            rel = str((base / name).relative_to(root))
            out[unicodedata.normalize("NFC", rel) + "/"] = "dir"
        for name in filenames:
            rel = str((base / name).relative_to(root))
            digest = hashlib.sha256((base / name).read_bytes()).hexdigest()
            out[unicodedata.normalize("NFC", rel)] = digest
    return out


async def upload_tree(
    drive: Drive, root: Path, remote_root: str, journal: MemoryJournal | None = None
) -> None:
    """Upload every file and folder below ``root`` to ``remote_root``."""
    journal = journal or MemoryJournal()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        target = join_remote(remote_root, *rel.parts)
        for name in dirnames:
            await drive.mkdir(join_remote(target, name))
        for name in filenames:
            path = Path(dirpath) / name
            await drive.upload(
                path, join_remote(target, name), overwrite=False, journal=journal, key=str(path)
            )


async def download_tree(drive: Drive, remote_root: str, dest: Path) -> None:
    """Download everything below ``remote_root`` into ``dest`` (names checked for safety)."""
    base = join_remote(remote_root)
    async for entry in drive.walk(base):
        rel = entry.path[len(base) :].strip("/").split("/")
        local = dest.joinpath(*(safe_local_name(part) for part in rel))
        if entry.is_dir:
            local.mkdir(parents=True, exist_ok=True)
        else:
            await drive.download(entry, local)


async def roundtrip(
    drive: Drive, tmp_path: Path, *, chunk_size: int, remote_root: str = "/roundtrip"
) -> Mapping[str, str]:
    """Upload a case-name tree, download it elsewhere, assert both trees are byte-identical.

    Returns the digest of the tree for further checks.
    """
    src = tmp_path / "src"
    dest = tmp_path / "dest"
    build_tree(src, chunk_size)
    await upload_tree(drive, src, remote_root)
    await download_tree(drive, remote_root, dest)
    expected = tree_digest(src)
    actual = tree_digest(dest)
    assert actual == expected
    return expected
