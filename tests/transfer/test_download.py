"""Download tests (contract 7, BR-02/23/26/33/34): ranged, resumable, URL re-issue, atomic."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from emulator.testing import EmulatorHandle, running_emulator
from tests.transfer.conftest import CHUNK
from tests.transfer.roundtrip import MemoryJournal, connected
from transfer import DownloadFailed, PacerConfig, TransferConfig
from transfer.download import Downloader, part_path

CONTENT_ROUTE = "/api/v4/file/content/{entity}/{speed}/{name}"


async def _put(drive: object, tmp_path: Path, remote: str, data: bytes) -> None:
    src = tmp_path / "upload.src"
    src.write_bytes(data)
    await drive.upload(  # type: ignore[attr-defined]
        src, remote, overwrite=True, journal=MemoryJournal(), key=remote
    )


@pytest.mark.anyio
async def test_s7_download_sets_mtime_and_leaves_no_part(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A finished download has the entry's size and mtime and no .part or state file left."""
    data = os.urandom(3 * CHUNK + 11)
    async with connected(emu, tmp_path) as drive:
        await _put(drive, tmp_path, "/d/Track # 7.zip", data)
        entry = await drive.stat("/d/Track # 7.zip")
        assert entry is not None
        out = tmp_path / "out" / entry.name
        await drive.download(entry, out)
    assert out.read_bytes() == data
    assert out.stat().st_mtime == pytest.approx(entry.updated_at.timestamp(), abs=1e-3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["Track # 7.zip"]


@pytest.mark.anyio
async def test_br23_parallel_segments_reissue_expired_url_once(tmp_path: Path) -> None:
    """URLs expiring mid-download are re-issued once and the bytes on disk are kept."""
    async with running_emulator(tmp_path, chunk_size=CHUNK, url_ttl=60) as emu:
        data = os.urandom(6 * CHUNK)
        async with connected(emu, tmp_path) as drive:
            await _put(drive, tmp_path, "/d/big.bin", data)
            entry = await drive.stat("/d/big.bin")
            assert entry is not None
            emu.requests.clear()
            seen: list[int] = []

            def progress(n: int) -> None:
                seen.append(n)
                if len(seen) == 1:
                    emu.clock.advance(120)

            downloader = Downloader(drive.client, segment_size=CHUNK, segments=1)
            out = tmp_path / "big.bin"
            await downloader.download(entry, out, progress=progress)
        assert out.read_bytes() == data
        assert emu.requests.count("POST", "/api/v4/file/url") == 2
        assert sum(seen) == len(data)


@pytest.mark.anyio
async def test_s7_interrupted_download_resumes_from_bytes_on_disk(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A connection cut mid-body leaves a .part; the next run fetches only the missing bytes."""
    data = os.urandom(4 * CHUNK)
    strict = PacerConfig(min_sleep_s=0.0, max_attempts=1)
    async with connected(emu, tmp_path, pacer=strict) as drive:
        await _put(drive, tmp_path, "/d/r.bin", data)
        entry = await drive.stat("/d/r.bin")
        assert entry is not None
        out = tmp_path / "r.bin"
        emu.faults.fail("GET", CONTENT_ROUTE, cut_response_after=CHUNK + 100)
        first = Downloader(drive.client, segment_size=8 * CHUNK, max_attempts=1)
        with pytest.raises(DownloadFailed) as info:
            await first.download(entry, out)
        assert info.value.retryable
        assert part_path(out).exists()
        assert not out.exists()
        kept = info.value.offset
        assert kept > 0
        got: list[int] = []
        resumed: list[int] = []
        await Downloader(drive.client, segment_size=8 * CHUNK).download(
            entry, out, progress=got.append, resumed=resumed.append
        )
    assert out.read_bytes() == data
    assert sum(got) == len(data) - kept
    assert resumed == [kept]


@pytest.mark.anyio
async def test_s7_changed_entity_restarts_part_from_zero(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A .part of an older version is discarded: the new version is fetched from byte 0."""
    old, new = os.urandom(4 * CHUNK), os.urandom(4 * CHUNK)
    strict = PacerConfig(min_sleep_s=0.0, max_attempts=1)
    async with connected(emu, tmp_path, pacer=strict) as drive:
        await _put(drive, tmp_path, "/d/v.bin", old)
        entry = await drive.stat("/d/v.bin")
        assert entry is not None
        out = tmp_path / "v.bin"
        emu.faults.fail("GET", CONTENT_ROUTE, cut_response_after=CHUNK)
        with pytest.raises(DownloadFailed):
            await Downloader(drive.client, max_attempts=1).download(entry, out)
        await _put(drive, tmp_path, "/d/v.bin", new)
        entry2 = await drive.stat("/d/v.bin")
        assert entry2 is not None
        assert entry2.primary_entity != entry.primary_entity
        got: list[int] = []
        await drive.download(entry2, out, progress=got.append)
    assert out.read_bytes() == new
    assert sum(got) == len(new)


@pytest.mark.anyio
async def test_s7_stale_entry_after_overwrite_restarts_via_if_range(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """Resuming with If-Range against a replaced file restarts from zero; no mixed bytes."""
    old, new = os.urandom(4 * CHUNK), os.urandom(4 * CHUNK)
    strict = PacerConfig(min_sleep_s=0.0, max_attempts=1)
    async with connected(emu, tmp_path, pacer=strict) as drive:
        await _put(drive, tmp_path, "/d/w.bin", old)
        entry = await drive.stat("/d/w.bin")
        assert entry is not None
        out = tmp_path / "w.bin"
        emu.faults.fail("GET", CONTENT_ROUTE, cut_response_after=CHUNK)
        with pytest.raises(DownloadFailed):
            await Downloader(drive.client, max_attempts=1).download(entry, out)
        await _put(drive, tmp_path, "/d/w.bin", new)
        # The caller still holds the old entry: If-Range makes the server answer 200 in full,
        # and the download starts over instead of appending new bytes to old ones.
        await Downloader(drive.client).download(entry, out)
    assert out.read_bytes() == new


@pytest.mark.anyio
async def test_s7_unfinished_upload_is_not_downloaded(emu: EmulatorHandle, tmp_path: Path) -> None:
    """A placeholder with sys:upload_session_id fails with DownloadFailed, nothing written."""
    src = tmp_path / "p.bin"
    src.write_bytes(os.urandom(2 * CHUNK))
    emu.faults.fail("POST", "/api/v4/file/upload/{id}/{index}", nth=2, times=50, status=503)
    strict = PacerConfig(min_sleep_s=0.0, max_attempts=1)
    async with connected(
        emu, tmp_path, pacer=strict, transfer=TransferConfig(file_retries=0)
    ) as drive:
        with pytest.raises(Exception, match="chunk 1"):
            await drive.upload(src, "/d/p.bin", overwrite=False, journal=MemoryJournal(), key="k")
        entry = await drive.stat("/d/p.bin")
        assert entry is not None
        assert entry.uploading
        with pytest.raises(DownloadFailed, match="unfinished"):
            await drive.download(entry, tmp_path / "p.out")
    assert not (tmp_path / "p.out").exists()


@pytest.mark.anyio
async def test_s7_parallel_segments_with_a_failing_segment(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """Three segments at once, one answered 502 first: the file is whole and byte-identical."""
    data = os.urandom(7 * CHUNK + 3)
    async with connected(emu, tmp_path) as drive:
        await _put(drive, tmp_path, "/d/par.bin", data)
        entry = await drive.stat("/d/par.bin")
        assert entry is not None
        emu.requests.clear()
        emu.faults.fail("GET", CONTENT_ROUTE, nth=2, status=502)
        got: list[int] = []

        async def no_wait(_: float) -> None:
            return None

        downloader = Downloader(drive.client, segment_size=CHUNK, segments=3, sleep=no_wait)
        await downloader.download(entry, tmp_path / "par.bin", progress=got.append)
    assert (tmp_path / "par.bin").read_bytes() == data
    assert sum(got) == len(data)
    assert emu.requests.count("GET", CONTENT_ROUTE) == 8 + 1


def test_part_names_fit_the_name_limit(tmp_path: Path) -> None:
    """Temporary names stay within 255 bytes, for a 250-byte final name too."""
    short = part_path(tmp_path / "a.bin")
    assert short.name == "a.bin.part"
    long_name = "é" * 125  # 250 bytes
    part = part_path(tmp_path / long_name)
    assert part.parent == tmp_path
    assert len((part.name + ".json.tmp").encode()) <= 255
    assert part != part_path(tmp_path / ("é" * 124 + "e"))


@pytest.mark.anyio
async def test_br33_every_name_up_to_the_limit_downloads_and_leaves_no_temporary(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """Names of 240 to 255 bytes all download: no temporary name derived from them is too long."""
    names = ["L" * (size - 4) + ".txt" for size in range(240, 256)]
    out = tmp_path / "out"
    async with connected(emu, tmp_path) as drive:
        for name in names:
            await _put(drive, tmp_path, f"/long/{name}", name.encode())
        for name in names:
            entry = await drive.stat(f"/long/{name}")
            assert entry is not None
            await drive.download(entry, out / name)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert all((out / name).read_bytes() == name.encode() for name in names)


@pytest.mark.anyio
async def test_s7_changed_file_restarts_part_even_when_the_entry_lacks_its_entity(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """Entries rebuilt without ``primary_entity`` (from a plan) still never resume stale bytes."""
    old, new = os.urandom(4 * CHUNK), os.urandom(4 * CHUNK)
    strict = PacerConfig(min_sleep_s=0.0, max_attempts=1)
    async with connected(emu, tmp_path, pacer=strict) as drive:
        await _put(drive, tmp_path, "/d/w.bin", old)
        entry = await drive.stat("/d/w.bin")
        assert entry is not None
        out = tmp_path / "w.bin"
        emu.faults.fail("GET", CONTENT_ROUTE, cut_response_after=CHUNK)
        with pytest.raises(DownloadFailed):
            await Downloader(drive.client, max_attempts=1).download(
                replace(entry, primary_entity=None), out
            )
        await _put(drive, tmp_path, "/d/w.bin", new)
        entry2 = await drive.stat("/d/w.bin")
        assert entry2 is not None
        await drive.download(replace(entry2, primary_entity=None), out)
    assert out.read_bytes() == new


@pytest.mark.anyio
async def test_br26_404_on_a_cached_url_fetches_one_fresh_url(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A 404 on the first URL (blob relocated) costs one fresh, uncached POST /file/url."""
    data = os.urandom(2 * CHUNK + 7)
    async with connected(emu, tmp_path) as drive:
        await _put(drive, tmp_path, "/d/moved.bin", data)
        entry = await drive.stat("/d/moved.bin")
        assert entry is not None
        emu.requests.clear()
        emu.faults.fail("GET", CONTENT_ROUTE, status=404, html="Entity data does not exist.")
        got: list[int] = []
        await drive.download(entry, tmp_path / "moved.bin", progress=got.append)
    assert (tmp_path / "moved.bin").read_bytes() == data
    assert emu.requests.count("POST", "/api/v4/file/url") == 2
    assert emu.requests.statuses("GET", CONTENT_ROUTE) == [404, 200]
    assert sum(got) == len(data)
