"""A storage that refuses the multipart complete for good (``EntityTooSmall``, ``InvalidPart``,
``SignatureDoesNotMatch``) fails the upload once: the session is cancelled and forgotten, so the
next run opens a fresh session instead of failing on the same one until it expires."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from emulator.testing import running_emulator
from tests.transfer.roundtrip import MemoryJournal, connected
from transfer.policies._storage import StorageError

pytestmark = pytest.mark.anyio
MIB = 1 << 20


def _error_xml(code: str) -> str:
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        f"<Error><Code>{code}</Code><Message>refused</Message><RequestId>r1</RequestId></Error>"
    )


@pytest.mark.parametrize("policy", ["s3", "ks3"])
async def test_entity_too_small_cancels_the_session_and_the_next_run_starts_fresh(
    tmp_path: Path, policy: str
) -> None:
    """1 MiB parts: the complete answers EntityTooSmall (typed, not retryable); the session is
    deleted and leaves the journal, and a second upload opens a new session instead of resuming."""
    async with running_emulator(tmp_path, policy=policy, chunk_size=MIB) as emu:
        src = tmp_path / "big.bin"
        src.write_bytes(os.urandom(3 * MIB + 5))
        journal = MemoryJournal()
        async with connected(emu, tmp_path) as drive:
            for attempt in (1, 2):
                with pytest.raises(StorageError) as info:
                    await drive.upload(
                        src, "/up/big.bin", overwrite=False, journal=journal, key="k"
                    )
                assert info.value.storage_code == "EntityTooSmall"
                assert not info.value.retryable
                assert await journal.load("k") is None
                assert await drive.stat("/up/big.bin") is None
                assert emu.requests.count("PUT", "/api/v4/file/upload") == attempt
                assert emu.requests.count("DELETE", "/api/v4/file/upload") == attempt
                assert emu.requests.count("PUT", f"/storage/{policy}/*") == 4 * attempt


@pytest.mark.parametrize("code", ["InvalidPart", "SignatureDoesNotMatch"])
async def test_permanent_complete_refusal_forgets_the_session(tmp_path: Path, code: str) -> None:
    """A 400/403 refusal of the complete is raised as it came; the session is cancelled once,
    and the next upload of the same key opens a new session and succeeds."""
    async with running_emulator(tmp_path, policy="s3", chunk_size=5 * MIB) as emu:
        status = 403 if code == "SignatureDoesNotMatch" else 400
        emu.faults.add(
            method="POST", path="/storage/s3/*", times=1, status=status, html=_error_xml(code)
        )
        src = tmp_path / "photo.jpg"
        src.write_bytes(os.urandom(700_000))
        journal = MemoryJournal()
        async with connected(emu, tmp_path) as drive:
            with pytest.raises(StorageError) as info:
                await drive.upload(src, "/up/photo.jpg", overwrite=False, journal=journal, key="k")
            assert info.value.storage_code == code
            assert await journal.load("k") is None
            assert emu.requests.count("DELETE", "/api/v4/file/upload") == 1
            assert emu.requests.count("GET", "/api/v4/callback/s3/*") == 0

            entry = await drive.upload(
                src, "/up/photo.jpg", overwrite=False, journal=journal, key="k"
            )
        assert entry.size == 700_000
        assert emu.requests.count("PUT", "/api/v4/file/upload") == 2
        assert emu.requests.count("DELETE", "/api/v4/file/upload") == 1


async def test_transient_complete_failure_keeps_and_resumes_the_session(tmp_path: Path) -> None:
    """A 503 on the complete is retried in the same session: nothing is cancelled."""
    async with running_emulator(tmp_path, policy="s3", chunk_size=5 * MIB) as emu:
        emu.faults.add(
            method="POST",
            path="/storage/s3/*",
            times=1,
            status=503,
            html=_error_xml("ServiceUnavailable"),
        )
        src = tmp_path / "photo.jpg"
        src.write_bytes(os.urandom(700_000))
        journal = MemoryJournal()
        async with connected(emu, tmp_path) as drive:
            entry = await drive.upload(
                src, "/up/photo.jpg", overwrite=False, journal=journal, key="k"
            )
        assert entry.size == 700_000
        assert emu.requests.count("PUT", "/api/v4/file/upload") == 1
        assert emu.requests.count("DELETE", "/api/v4/file/upload") == 0
        assert emu.requests.count("POST", "/storage/s3/*") == 2


def _too_small(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e["event"] == "upload_part_too_small"]


@pytest.mark.parametrize("policy", ["s3", "ks3"])
async def test_parts_below_5_mib_are_warned_about_once_up_front(
    tmp_path: Path, policy: str
) -> None:
    """A session of 1 MiB parts for a 4-part file logs one warning before the first part."""
    async with running_emulator(tmp_path, policy=policy, chunk_size=MIB) as emu:
        src = tmp_path / "big.bin"
        src.write_bytes(os.urandom(3 * MIB + 5))
        async with connected(emu, tmp_path) as drive:
            with capture_logs() as logs, pytest.raises(StorageError):
                await drive.upload(
                    src, "/up/big.bin", overwrite=False, journal=MemoryJournal(), key="k"
                )
    warned = _too_small(logs)
    assert len(warned) == 1
    assert warned[0]["log_level"] == "warning"
    assert warned[0]["part_bytes"] == MIB
    assert warned[0]["min_part_bytes"] == 5 * MIB
    assert warned[0]["parts"] == 4
    events = [e["event"] for e in logs]
    assert events.index("upload_part_too_small") < events.index("chunk_uploaded")


@pytest.mark.parametrize(("policy", "size"), [("s3", 700_000), ("cos", 3 * MIB + 5)])
async def test_no_part_size_warning_for_one_part_or_other_storages(
    tmp_path: Path, policy: str, size: int
) -> None:
    """A file that fits one part, or a storage with a smaller minimum, gets no warning."""
    async with running_emulator(tmp_path, policy=policy, chunk_size=MIB) as emu:
        src = tmp_path / "f.bin"
        src.write_bytes(os.urandom(size))
        async with connected(emu, tmp_path) as drive:
            with capture_logs() as logs:
                await drive.upload(
                    src, "/up/f.bin", overwrite=False, journal=MemoryJournal(), key="k"
                )
    assert _too_small(logs) == []
