"""Upload fault tests against the emulator's injection (BR-10/11/14/15/16/17, contract 6)."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from emulator.testing import EmulatorHandle, running_emulator
from tests.transfer.conftest import CHUNK
from tests.transfer.roundtrip import MemoryJournal, connected
from transfer import (
    PacerConfig,
    QuotaExceeded,
    TransferConfig,
    UploadFailed,
)

CHUNK_ROUTE = "/api/v4/file/upload/{id}/{index}"


def _file(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _indices(emu: EmulatorHandle) -> list[int]:
    return [int(i) for i in emu.requests.param_values("POST", CHUNK_ROUTE, "index")]


def _remote_bytes(emu: EmulatorHandle, email: str, path: str) -> int | None:
    row = emu.file(email, path)
    return None if row is None else row.size


@pytest.mark.anyio
async def test_br17_502_on_one_chunk_resends_only_that_chunk(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A 502 on chunk 1 re-sends chunk 1 only: 3 chunk requests for 2 chunks, same session."""
    src = _file(tmp_path, "ten.bin", 2 * CHUNK)
    emu.faults.fail("POST", CHUNK_ROUTE, nth=2, status=502, html="<h1>Bad Gateway</h1>")
    async with connected(emu, tmp_path) as drive:
        entry = await drive.upload(
            src, "/t/ten.bin", overwrite=False, journal=MemoryJournal(), key="k"
        )
    assert entry.size == 2 * CHUNK
    assert _indices(emu) == [0, 1, 1]
    sessions = set(emu.requests.param_values("POST", CHUNK_ROUTE, "session_id"))
    assert len(sessions) == 1
    assert emu.requests.count("PUT", "/api/v4/file/upload") == 1


@pytest.mark.anyio
async def test_s6_4_connection_cut_mid_chunk_is_retried(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A connection cut half-way through chunk 0's body re-sends chunk 0; the file is whole."""
    src = _file(tmp_path, "cut.bin", 2 * CHUNK + 5)
    emu.faults.fail("POST", CHUNK_ROUTE, cut_request_after=CHUNK // 2)
    async with connected(emu, tmp_path) as drive:
        await drive.upload(src, "/t/cut.bin", overwrite=False, journal=MemoryJournal(), key="k")
        out = tmp_path / "back.bin"
        entry = await drive.stat("/t/cut.bin")
        assert entry is not None
        await drive.download(entry, out)
    assert out.read_bytes() == src.read_bytes()
    assert _indices(emu) == [0, 0, 1, 2]


@pytest.mark.anyio
async def test_br15_expired_tokens_cause_one_refresh_for_8_workers(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """8 concurrent uploads that all meet an expired token trigger exactly one refresh."""
    files = [_file(tmp_path, f"f{i}.bin", CHUNK + i) for i in range(8)]
    journal = MemoryJournal()
    async with connected(emu, tmp_path) as drive:
        await drive.mkdir("/w")
        emu.faults.expire_tokens()
        async with anyio.create_task_group() as tg:
            for i, path in enumerate(files):
                tg.start_soon(_upload, drive, path, f"/w/{path.name}", journal, str(i))
    assert emu.requests.count("POST", "/api/v4/session/token/refresh") == 1
    for i, path in enumerate(files):
        assert _remote_bytes(emu, next(iter(emu.users)), f"/w/{path.name}") == CHUNK + i


async def _upload(drive: object, path: Path, remote: str, journal: MemoryJournal, key: str) -> None:
    await drive.upload(path, remote, overwrite=False, journal=journal, key=key)  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_br16_token_expiring_between_chunks_refreshes_and_resends_same_index(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """Tokens expire after chunk 0: chunk 1 gets 40011, one refresh, then the same index again."""
    src = _file(tmp_path, "mid.bin", 3 * CHUNK)
    journal = MemoryJournal()
    async with connected(emu, tmp_path, transfer=TransferConfig(chunk_concurrency=1)) as drive:
        progress: list[int] = []

        def on_progress(n: int) -> None:
            progress.append(n)
            if len(progress) == 1:
                emu.faults.expire_tokens()

        await drive.upload(
            src, "/t/mid.bin", overwrite=False, journal=journal, key="k", progress=on_progress
        )
    assert _indices(emu) == [0, 1, 1, 2]
    assert emu.requests.count("POST", "/api/v4/session/token/refresh") == 1
    assert len(set(emu.requests.param_values("POST", CHUNK_ROUTE, "session_id"))) == 1
    assert sum(progress) == 3 * CHUNK


@pytest.mark.anyio
async def test_br14_quota_exceeded_is_typed_without_retry_storm(tmp_path: Path) -> None:
    """40051 at session creation raises QuotaExceeded (fatal) after one request; nothing is left."""
    async with running_emulator(tmp_path, chunk_size=CHUNK) as emu:
        email = next(iter(emu.users))
        emu.faults.set_quota(email, 3 * CHUNK)
        small = _file(tmp_path, "small.bin", CHUNK)
        big = _file(tmp_path, "big.bin", 3 * CHUNK)
        async with connected(emu, tmp_path) as drive:
            await drive.upload(
                small, "/q/small.bin", overwrite=False, journal=MemoryJournal(), key="s"
            )
            with pytest.raises(QuotaExceeded) as info:
                await drive.upload(
                    big, "/q/big.bin", overwrite=False, journal=MemoryJournal(), key="b"
                )
            assert info.value.fatal
            assert await drive.stat("/q/big.bin") is None
            assert (await drive.stat("/q/small.bin")) is not None
            capacity = await drive.capacity()
        assert emu.requests.count("PUT", "/api/v4/file/upload") == 2
        assert capacity.used == CHUNK


@pytest.mark.anyio
async def test_s6_6_interrupted_upload_resumes_in_a_new_drive_with_only_missing_chunks(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """Interrupted after 2 of 5 chunks, a new Drive (new client, same journal) sends only 3."""
    src = _file(tmp_path, "five.bin", 5 * CHUNK - 3)
    journal = MemoryJournal()
    emu.faults.fail("POST", CHUNK_ROUTE, nth=3, times=100, status=503)
    strict = PacerConfig(min_sleep_s=0.0, max_sleep_s=0.01, max_attempts=2)
    no_file_retry = TransferConfig(chunk_concurrency=1, file_retries=0)
    async with connected(emu, tmp_path, pacer=strict, transfer=no_file_retry) as drive:
        with pytest.raises(UploadFailed) as info:
            await drive.upload(src, "/r/five.bin", overwrite=False, journal=journal, key="k")
    assert info.value.chunk == 2
    assert info.value.retryable
    assert sorted(journal.acked["k"]) == [0, 1]
    emu.faults.clear()
    emu.requests.clear()
    resumed: list[int] = []
    async with connected(emu, tmp_path) as drive:
        entry = await drive.upload(
            src, "/r/five.bin", overwrite=False, journal=journal, key="k", resumed=resumed.append
        )
    assert entry.size == 5 * CHUNK - 3
    assert _indices(emu) == [2, 3, 4]
    assert resumed == [2 * CHUNK]
    assert emu.requests.count("PUT", "/api/v4/file/upload") == 0
    assert "k" not in journal.sessions


@pytest.mark.anyio
async def test_br10_session_expired_between_runs_restarts_from_chunk_0(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A journaled session past its expiry is cancelled and the file re-sent from chunk 0."""
    src = _file(tmp_path, "exp.bin", 2 * CHUNK)
    journal = MemoryJournal()
    emu.faults.fail("POST", CHUNK_ROUTE, nth=2, times=100, status=503)
    strict = PacerConfig(min_sleep_s=0.0, max_sleep_s=0.01, max_attempts=1)
    async with connected(
        emu, tmp_path, pacer=strict, transfer=TransferConfig(file_retries=0)
    ) as drive:
        with pytest.raises(UploadFailed):
            await drive.upload(src, "/e/exp.bin", overwrite=False, journal=journal, key="k")
    old = journal.sessions["k"].session_id
    emu.faults.clear()
    emu.requests.clear()
    emu.clock.advance(2 * 86400)
    async with connected(emu, tmp_path) as drive:
        entry = await drive.upload(src, "/e/exp.bin", overwrite=False, journal=journal, key="k")
        listing = await drive.list("/e")
    assert entry.size == 2 * CHUNK
    assert not entry.uploading
    assert [e.name for e in listing] == ["exp.bin"]
    assert _indices(emu) == [0, 1]
    new_sessions = set(emu.requests.param_values("POST", CHUNK_ROUTE, "session_id"))
    assert old not in new_sessions


@pytest.mark.anyio
async def test_br11_orphan_placeholder_of_our_session_is_cleaned_once(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A journaled session whose cancel was lost leaves a placeholder; it is removed once."""
    src = _file(tmp_path, "draft.bin", 2 * CHUNK)
    journal = MemoryJournal()
    emu.faults.fail("POST", CHUNK_ROUTE, nth=2, times=100, status=503)
    strict = PacerConfig(min_sleep_s=0.0, max_sleep_s=0.01, max_attempts=1)
    async with connected(
        emu, tmp_path, pacer=strict, transfer=TransferConfig(file_retries=0)
    ) as drive:
        with pytest.raises(UploadFailed):
            await drive.upload(src, "/o/draft.bin", overwrite=False, journal=journal, key="k")
    emu.faults.clear()
    # The local file changed size: the old session cannot be resumed; its cancel fails once.
    src.write_bytes(os.urandom(CHUNK + 1))
    emu.faults.fail("DELETE", "/api/v4/file/upload", status=502, times=1)
    emu.requests.clear()
    async with connected(
        emu,
        tmp_path,
        pacer=PacerConfig(min_sleep_s=0.0, max_attempts=1),
        transfer=TransferConfig(file_retries=0),
    ) as drive:
        entry = await drive.upload(src, "/o/draft.bin", overwrite=False, journal=journal, key="k")
        listing = await drive.list("/o")
    assert entry.size == CHUNK + 1
    assert [(e.name, e.uploading) for e in listing] == [("draft.bin", False)]
    # cancel (502), create (40004: our placeholder), cancel again, create.
    assert emu.requests.count("DELETE", "/api/v4/file/upload") == 2
    assert emu.requests.count("PUT", "/api/v4/file/upload") == 2


@pytest.mark.anyio
async def test_s6_9_lost_answer_to_completing_chunk_is_checked_not_failed(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """The completing chunk's answer is lost; its retry gets 40011 and file info shows success."""
    src = _file(tmp_path, "done.bin", 2 * CHUNK)
    emu.faults.fail("POST", CHUNK_ROUTE, nth=2, cut_response_after=0)
    async with connected(emu, tmp_path) as drive:
        entry = await drive.upload(
            src, "/c/done.bin", overwrite=False, journal=MemoryJournal(), key="k"
        )
    assert entry.size == 2 * CHUNK
    assert not entry.uploading
    assert _indices(emu)[:2] == [0, 1]
    assert emu.requests.count("PUT", "/api/v4/file/upload") == 1


@pytest.mark.anyio
async def test_s6_4_parallel_chunks_up_to_policy_concurrency(tmp_path: Path) -> None:
    """With chunk_concurrency 3 a 7-chunk file arrives whole; every index is sent once."""
    async with running_emulator(tmp_path, chunk_size=CHUNK, chunk_concurrency=3) as emu:
        src = _file(tmp_path, "par.bin", 7 * CHUNK - 1)
        async with connected(emu, tmp_path) as drive:
            entry = await drive.upload(
                src, "/p/par.bin", overwrite=False, journal=MemoryJournal(), key="k"
            )
            out = tmp_path / "par.out"
            await drive.download(entry, out)
        assert sorted(_indices(emu)) == list(range(7))
        assert out.read_bytes() == src.read_bytes()


@pytest.mark.anyio
async def test_br04_names_are_sent_in_nfc_unless_disabled(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """An NFD name arrives as NFC by default, and byte-for-byte with upload_nfc=False."""
    src = _file(tmp_path, "n.bin", 3)
    nfd = "Se\u0301ance.flac"
    async with connected(emu, tmp_path) as drive:
        entry = await drive.upload(
            src, f"/n/{nfd}", overwrite=False, journal=MemoryJournal(), key="a"
        )
    assert entry.name == "S\u00e9ance.flac"
    raw = TransferConfig(upload_nfc=False)
    async with connected(emu, tmp_path, transfer=raw) as drive:
        entry = await drive.upload(
            src, f"/raw/{nfd}", overwrite=False, journal=MemoryJournal(), key="b"
        )
    assert entry.name == nfd


@pytest.mark.anyio
async def test_s6_5_permanent_chunk_failure_cancels_the_session(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A non-retryable chunk error deletes the session: no placeholder, journal closed."""
    src = _file(tmp_path, "perm.bin", 2 * CHUNK)
    journal = MemoryJournal()
    emu.faults.fail("POST", CHUNK_ROUTE, nth=2, code=40012, msg="Invalid chunk index")
    async with connected(emu, tmp_path) as drive:
        with pytest.raises(UploadFailed) as info:
            await drive.upload(src, "/x/perm.bin", overwrite=False, journal=journal, key="k")
        assert not info.value.retryable
        assert info.value.chunk == 1
        assert info.value.offset == CHUNK
        assert await drive.stat("/x/perm.bin") is None
    assert "k" not in journal.sessions
    assert emu.requests.count("DELETE", "/api/v4/file/upload") == 1


@pytest.mark.anyio
async def test_br32_interrupted_overwrite_keeps_v1_until_v2_commits(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A v2 upload cut after chunk 0 leaves v1 readable; resuming it commits v2."""
    v1 = os.urandom(CHUNK + 10)
    v2 = os.urandom(2 * CHUNK + 20)
    src = tmp_path / "report.pdf"
    src.write_bytes(v1)
    journal = MemoryJournal()
    strict = PacerConfig(min_sleep_s=0.0, max_attempts=1)
    async with connected(
        emu, tmp_path, pacer=strict, transfer=TransferConfig(file_retries=0)
    ) as drive:
        await drive.upload(src, "/b/report.pdf", overwrite=False, journal=journal, key="v1")
        src.write_bytes(v2)
        emu.faults.fail("POST", CHUNK_ROUTE, nth=2, status=503)
        with pytest.raises(UploadFailed):
            await drive.upload(src, "/b/report.pdf", overwrite=True, journal=journal, key="v2")
        current = await drive.stat("/b/report.pdf")
        assert current is not None
        await drive.download(current, tmp_path / "now.pdf")
        assert (tmp_path / "now.pdf").read_bytes() == v1
        done = await drive.upload(src, "/b/report.pdf", overwrite=True, journal=journal, key="v2")
        await drive.download(done, tmp_path / "after.pdf")
    assert (tmp_path / "after.pdf").read_bytes() == v2
    assert done.id == current.id


@pytest.mark.anyio
async def test_br20_pipe_source_is_spooled_with_exact_lengths(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A 3-chunk-ish stream from a FIFO is measured first: exact size, every chunk full length."""
    import threading

    data = os.urandom(3 * CHUNK - 100)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as fh:
            fh.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    async with connected(emu, tmp_path) as drive:
        entry = await drive.upload(
            fifo, "/p/piped.bin", overwrite=False, journal=MemoryJournal(), key="k"
        )
        await drive.download(entry, tmp_path / "back.bin")
    writer.join()
    assert entry.size == len(data)
    assert (tmp_path / "back.bin").read_bytes() == data
    assert _indices(emu) == [0, 1, 2]


@pytest.mark.anyio
@pytest.mark.parametrize(("size", "expected"), [(0, [0]), (CHUNK, [0]), (2 * CHUNK, [0, 1])])
async def test_br06_br07_chunk_requests_for_empty_and_exact_multiple_sizes(
    emu: EmulatorHandle, tmp_path: Path, size: int, expected: list[int]
) -> None:
    """0 bytes is one empty chunk; exact multiples send no extra empty chunk."""
    src = _file(tmp_path, "e.bin", size)
    async with connected(emu, tmp_path) as drive:
        entry = await drive.upload(
            src, "/z/e.bin", overwrite=False, journal=MemoryJournal(), key="k"
        )
    assert entry.size == size
    assert _indices(emu) == expected


@pytest.mark.anyio
async def test_br30_warns_when_the_session_is_shorter_than_the_expected_upload(
    tmp_path: Path,
) -> None:
    """With slow chunks seen before, a session that would expire first is warned about."""
    from structlog.testing import capture_logs

    async with running_emulator(tmp_path, chunk_size=CHUNK, session_ttl=30) as emu:
        src = _file(tmp_path, "slow.bin", 4 * CHUNK)
        async with connected(emu, tmp_path) as drive:
            drive.client.expected_call_s = 40.0
            with capture_logs() as events:
                entry = await drive.upload(
                    src, "/s/slow.bin", overwrite=False, journal=MemoryJournal(), key="k"
                )
    assert entry.size == 4 * CHUNK
    warned = [e for e in events if e["event"] == "upload_session_too_short"]
    assert warned
    assert warned[0]["estimate_s"] == 80.0


@pytest.mark.anyio
async def test_s6_6_resume_of_a_changed_source_starts_over(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A source rewritten (same size, new mtime) after 2 of 5 chunks is re-sent from chunk 0."""
    src = _file(tmp_path, "chg.bin", 5 * CHUNK - 3)
    journal = MemoryJournal()
    emu.faults.fail("POST", CHUNK_ROUTE, nth=3, times=100, status=503)
    strict = PacerConfig(min_sleep_s=0.0, max_sleep_s=0.01, max_attempts=2)
    no_file_retry = TransferConfig(chunk_concurrency=1, file_retries=0)
    async with connected(emu, tmp_path, pacer=strict, transfer=no_file_retry) as drive:
        with pytest.raises(UploadFailed):
            await drive.upload(src, "/c/chg.bin", overwrite=False, journal=journal, key="k")
    old_session = journal.sessions["k"].session_id
    new = os.urandom(5 * CHUNK - 3)
    src.write_bytes(new)
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    emu.faults.clear()
    emu.requests.clear()
    async with connected(emu, tmp_path) as drive:
        entry = await drive.upload(src, "/c/chg.bin", overwrite=False, journal=journal, key="k")
        out = tmp_path / "back.bin"
        await drive.download(entry, out)
    assert out.read_bytes() == new
    assert _indices(emu) == [0, 1, 2, 3, 4]
    assert old_session not in set(emu.requests.param_values("POST", CHUNK_ROUTE, "session_id"))


@pytest.mark.anyio
async def test_br11_abandoned_session_leaves_no_placeholder(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """Abandoning a journaled session removes its placeholder and forgets it; again is a no-op."""
    src = _file(tmp_path, "gone.bin", 3 * CHUNK)
    journal = MemoryJournal()
    emu.faults.fail("POST", CHUNK_ROUTE, nth=2, times=100, status=503)
    strict = PacerConfig(min_sleep_s=0.0, max_sleep_s=0.01, max_attempts=1)
    async with connected(
        emu, tmp_path, pacer=strict, transfer=TransferConfig(chunk_concurrency=1, file_retries=0)
    ) as drive:
        with pytest.raises(UploadFailed):
            await drive.upload(src, "/g/gone.bin", overwrite=False, journal=journal, key="k")
        assert emu.file(next(iter(emu.users)), "/g/gone.bin") is not None
        emu.faults.clear()
        assert await drive.abandon_upload(journal, "k")
        assert not await drive.abandon_upload(journal, "k")
        assert await drive.stat("/g/gone.bin") is None
    assert "k" not in journal.sessions


@pytest.mark.anyio
async def test_br10_session_the_server_dropped_is_replaced_and_sent_from_chunk_0(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A journaled session still valid by its expires but unknown to the server (40011) is
    cancelled, a new one opened and every chunk sent again: one whole file, no placeholder."""
    src = _file(tmp_path, "drop.bin", 3 * CHUNK)
    journal = MemoryJournal()
    emu.faults.fail("POST", CHUNK_ROUTE, nth=2, times=100, status=503)
    strict = PacerConfig(min_sleep_s=0.0, max_sleep_s=0.01, max_attempts=1)
    no_retry = TransferConfig(chunk_concurrency=1, file_retries=0)
    async with connected(emu, tmp_path, pacer=strict, transfer=no_retry) as drive:
        with pytest.raises(UploadFailed):
            await drive.upload(src, "/e/drop.bin", overwrite=False, journal=journal, key="k")
    old = journal.sessions["k"].session_id
    emu.faults.clear()
    assert emu.faults.expire_session(old)
    emu.requests.clear()
    async with connected(emu, tmp_path) as drive:
        entry = await drive.upload(src, "/e/drop.bin", overwrite=False, journal=journal, key="k")
        listing = await drive.list("/e")
    assert entry.size == 3 * CHUNK
    assert [(e.name, e.uploading) for e in listing] == [("drop.bin", False)]
    # Chunk 1 meets 40011, is replayed once after a token refresh (the symptom is the same as
    # an expired token's), then the new session gets every index.
    assert _indices(emu) == [1, 1, 0, 1, 2]
    sessions = emu.requests.param_values("POST", CHUNK_ROUTE, "session_id")
    assert sessions[:2] == [old, old]
    assert len(set(sessions[2:])) == 1
    assert old not in sessions[2:]
    assert emu.requests.count("DELETE", "/api/v4/file/upload") == 1
    assert emu.requests.count("PUT", "/api/v4/file/upload") == 1
    assert "k" not in journal.sessions


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["local", "remote"])
async def test_s6_4_chunks_above_1_mib_go_without_warnings(tmp_path: Path, policy: str) -> None:
    """2 MiB chunks to Cloudreve or a slave raise no aiohttp large-body warning (warnings are
    errors here), carry exact lengths, and a 502 retry re-sends the whole chunk."""
    size = 2 << 20
    async with running_emulator(tmp_path, policy=policy, chunk_size=size) as emu:
        src = _file(tmp_path, "two.bin", 2 * size + 5)
        route = CHUNK_ROUTE if policy == "local" else "/api/v4/slave/upload/*"
        emu.faults.fail("POST", route, nth=2, status=502, html="<h1>Bad Gateway</h1>")
        async with connected(emu, tmp_path) as drive:
            entry = await drive.upload(
                src, "/m/two.bin", overwrite=False, journal=MemoryJournal(), key="k"
            )
            await drive.download(entry, tmp_path / "back.bin")
        assert emu.requests.count("POST", route) == 4
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
