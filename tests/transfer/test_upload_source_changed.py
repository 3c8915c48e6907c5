"""A local file modified while it is being uploaded fails the upload (as rclone's
"source file is being updated"); the next upload of the same key starts afresh."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from emulator.testing import EmulatorHandle, running_emulator
from tests.transfer.conftest import CHUNK
from tests.transfer.roundtrip import MemoryJournal, connected
from transfer import Drive, SourceChanged, TransferConfig

pytestmark = pytest.mark.anyio
S3_CHUNK = 5 << 20  # moto's minimum part size
SEQUENTIAL = TransferConfig(chunk_concurrency=1)


def _rewrite(path: Path, size: int) -> bytes:
    """Write new bytes into ``path`` and move its mtime on, as an editor saving it would."""
    data = os.urandom(size)
    path.write_bytes(data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    return data


def _after_chunks(count: int, action: Callable[[], object]) -> Callable[[int], None]:
    """A progress callback that runs ``action`` once, after ``count`` chunks were sent."""
    sent: list[int] = []

    def on_progress(n: int) -> None:
        sent.append(n)
        if len(sent) == count:
            action()

    return on_progress


async def _download(drive: Drive, remote: str, dest: Path) -> bytes:
    entry = await drive.stat(remote)
    assert entry is not None
    await drive.download(entry, dest)
    return await anyio.Path(dest).read_bytes()


async def test_file_rewritten_mid_upload_fails_and_leaves_nothing(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """Rewritten after chunk 0 of 3: SourceChanged (not retryable), the session is cancelled
    and forgotten, no file is left; the next upload sends the new bytes in a new session."""
    src = tmp_path / "live.bin"
    src.write_bytes(os.urandom(3 * CHUNK))
    journal = MemoryJournal()
    new: list[bytes] = []
    on_progress = _after_chunks(1, lambda: new.append(_rewrite(src, 3 * CHUNK)))
    async with connected(emu, tmp_path, transfer=SEQUENTIAL) as drive:
        with pytest.raises(SourceChanged) as info:
            await drive.upload(
                src, "/t/live.bin", overwrite=False, journal=journal, key="k", progress=on_progress
            )
        assert not info.value.retryable
        assert not info.value.fatal
        assert str(src) in str(info.value)
        assert await journal.load("k") is None
        assert await drive.stat("/t/live.bin") is None
        assert emu.requests.count("DELETE", "/api/v4/file/upload") == 1

        await drive.upload(src, "/t/live.bin", overwrite=False, journal=journal, key="k")
        assert await _download(drive, "/t/live.bin", tmp_path / "back.bin") == new[0]
    assert emu.requests.count("PUT", "/api/v4/file/upload") == 2
    assert await journal.load("k") is None


async def test_file_growing_after_last_chunk_is_not_reported_done(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """Appended to after its last chunk went: the upload raises SourceChanged, not success, and
    keeps no journal entry; the next upload overwrites with the whole new content."""
    src = tmp_path / "log.txt"
    old = os.urandom(2 * CHUNK)
    src.write_bytes(old)
    journal = MemoryJournal()

    def append() -> None:
        with src.open("ab") as fh:
            fh.write(b"one more line\n")

    on_progress = _after_chunks(2, append)
    async with connected(emu, tmp_path, transfer=SEQUENTIAL) as drive:
        with pytest.raises(SourceChanged):
            await drive.upload(
                src, "/t/log.txt", overwrite=False, journal=journal, key="k", progress=on_progress
            )
        assert await journal.load("k") is None

        await drive.upload(src, "/t/log.txt", overwrite=True, journal=journal, key="k")
        back = await _download(drive, "/t/log.txt", tmp_path / "back.txt")
    assert back == old + b"one more line\n"


async def test_file_deleted_mid_upload_is_source_changed(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """Deleted after chunk 0: SourceChanged, and the session is cancelled and forgotten."""
    src = tmp_path / "gone.bin"
    src.write_bytes(os.urandom(3 * CHUNK))
    journal = MemoryJournal()
    on_progress = _after_chunks(1, src.unlink)
    async with connected(emu, tmp_path, transfer=SEQUENTIAL) as drive:
        with pytest.raises(SourceChanged):
            await drive.upload(
                src, "/t/gone.bin", overwrite=False, journal=journal, key="k", progress=on_progress
            )
        assert await journal.load("k") is None
        assert await drive.stat("/t/gone.bin") is None


async def test_s3_file_changed_after_last_part_is_never_completed(tmp_path: Path) -> None:
    """On S3 the check runs before the complete: no complete POST, no callback, no file; the
    session is cancelled and the next upload stores the new bytes."""
    async with running_emulator(tmp_path, policy="s3", chunk_size=S3_CHUNK) as emu:
        src = tmp_path / "photo.jpg"
        src.write_bytes(os.urandom(700_000))
        journal = MemoryJournal()
        new: list[bytes] = []
        on_progress = _after_chunks(1, lambda: new.append(_rewrite(src, 700_000)))
        async with connected(emu, tmp_path) as drive:
            with pytest.raises(SourceChanged):
                await drive.upload(
                    src,
                    "/up/photo.jpg",
                    overwrite=False,
                    journal=journal,
                    key="k",
                    progress=on_progress,
                )
            assert emu.requests.count("POST", "/storage/s3/*") == 0
            assert emu.requests.count("GET", "/api/v4/callback/s3/*") == 0
            assert emu.requests.count("DELETE", "/api/v4/file/upload") == 1
            assert await journal.load("k") is None
            assert await drive.stat("/up/photo.jpg") is None

            await drive.upload(src, "/up/photo.jpg", overwrite=False, journal=journal, key="k")
            assert await _download(drive, "/up/photo.jpg", tmp_path / "back.jpg") == new[0]
