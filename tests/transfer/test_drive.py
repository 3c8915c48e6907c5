"""Drive listing, stat, mkdir, delete (contract 5), pacing against the emulator (BR-18/29)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import anyio
import pytest
from PIL import Image

from emulator.testing import EmulatorHandle, running_emulator
from tests.transfer.conftest import CHUNK
from tests.transfer.roundtrip import MemoryJournal, connected
from transfer import ListingInconsistent, Pacer, PacerConfig, TransferConfig
from transfer.api import ListPage

LIST_ROUTE = "/api/v4/file"
CHUNK_ROUTE = "/api/v4/file/upload/{id}/{index}"


@pytest.mark.anyio
async def test_br29_walk_follows_every_page_and_yields_folders(
    emu: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pages of 10, 25 files and a nested folder are all yielded once, folders included."""
    monkeypatch.setattr("transfer.drive._PAGE_SIZE", 10)
    src = tmp_path / "one"
    src.write_bytes(b"x")
    journal = MemoryJournal()
    async with connected(emu, tmp_path) as drive:
        for i in range(25):
            remote = f"/many/f{i:02}.txt"
            await drive.upload(src, remote, overwrite=False, journal=journal, key=remote)
        await drive.mkdir("/many/sub dir/deeper")
        entries = [e async for e in drive.walk("/many")]
    paths = [e.path for e in entries]
    assert len(paths) == len(set(paths)) == 27
    assert "/many/sub dir" in paths
    assert "/many/sub dir/deeper" in paths
    assert emu.requests.count("GET", LIST_ROUTE) >= 3 + 2


@pytest.mark.anyio
@pytest.mark.parametrize("folders", [3, 6])
async def test_br29_folders_that_fill_pages_hide_no_files(
    emu: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folders: int
) -> None:
    """When the folders left exactly fill a page, the server's token skips files that sort
    before the last folder (CE cursorPagination); the listing still returns every entry."""
    monkeypatch.setattr("transfer.drive._PAGE_SIZE", 3)
    src = tmp_path / "one"
    src.write_bytes(b"x")
    journal = MemoryJournal()
    async with connected(emu, tmp_path) as drive:
        for name in ("a.txt", "b.txt"):
            await drive.upload(src, f"/q/{name}", overwrite=False, journal=journal, key=name)
        for i in range(folders):
            await drive.mkdir(f"/q/m{i}")
        names = sorted(e.name for e in await drive.list("/q"))
    assert names == ["a.txt", "b.txt", *(f"m{i}" for i in range(folders))]


@pytest.mark.anyio
async def test_br29_repeated_page_token_is_listing_inconsistent(
    emu: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that repeats its next_page_token aborts the listing instead of looping."""
    async with connected(emu, tmp_path) as drive:
        entry = await drive.mkdir("/loop/a")

        async def same_page(uri: str, page_size: int, next_token: str = "") -> ListPage:
            return ListPage(entries=[entry], next_token="again", max_page_size=2000)

        monkeypatch.setattr(drive.client, "list_page", same_page)
        with pytest.raises(ListingInconsistent):
            await drive.list("/loop")


@pytest.mark.anyio
async def test_br29_empty_page_with_a_token_is_listing_inconsistent(
    emu: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty page that still carries a next token aborts after that one page."""
    calls: list[str] = []
    async with connected(emu, tmp_path) as drive:

        async def empty_page(uri: str, page_size: int, next_token: str = "") -> ListPage:
            calls.append(next_token)
            return ListPage(entries=[], next_token=f"t{len(calls)}", max_page_size=2000)

        monkeypatch.setattr(drive.client, "list_page", empty_page)
        with pytest.raises(ListingInconsistent):
            await drive.list("/")
    assert calls == [""]


@pytest.mark.anyio
async def test_s5_missing_paths(emu: EmulatorHandle, tmp_path: Path) -> None:
    """A missing walk root yields nothing, stat gives None, deleting missing paths is fine."""
    async with connected(emu, tmp_path) as drive:
        assert [e async for e in drive.walk("/nope")] == []
        assert await drive.stat("/nope/x") is None
        assert (await drive.stat("/")).is_dir  # type: ignore[union-attr]
        made = await drive.mkdir("/a/b c/d#e")
        assert made.path == "/a/b c/d#e"
        assert made.is_dir
        await drive.delete(["/a/b c", "/missing"], hard=True)
        assert await drive.stat("/a/b c") is None
        assert await drive.stat("/a") is not None


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0
        self.waits: list[float] = []
        self.requests_during_waits: list[int] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        target = self.now + seconds
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        self.now = max(self.now, target)


@pytest.mark.anyio
@pytest.mark.parametrize("as_date", [False, True])
async def test_br18_429_retry_after_is_waited_with_no_requests_meanwhile(
    emu: EmulatorHandle, tmp_path: Path, as_date: bool
) -> None:
    """429 + Retry-After (7 s, or an HTTP-date 10 s ahead) is waited on a fake clock by all."""
    clock = FakeClock()
    pacer = Pacer(PacerConfig(min_sleep_s=0.0), clock=clock, sleep=clock.sleep)
    seconds = 10 if as_date else 7
    async with connected(emu, tmp_path, pacer=pacer) as drive:
        await drive.mkdir("/rl")
        emu.requests.clear()
        emu.faults.fail(
            "GET", LIST_ROUTE, status=429, retry_after=seconds, retry_after_date=as_date, times=2
        )
        start = clock.now
        results: list[int] = []

        async def lister() -> None:
            results.append(len(await drive.list("/")))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(lister)
    assert len(results) == 4
    assert clock.now - start >= 2 * seconds - 1
    # Two 429s, then four successful listings: no request was sent while paused.
    assert emu.requests.count("GET", LIST_ROUTE) == 6


@pytest.mark.anyio
async def test_s6_4_old_servers_get_the_last_chunk_last(tmp_path: Path) -> None:
    """Before 4.18.0, with parallel chunks, the last index is sent after all the others."""
    async with running_emulator(
        tmp_path, chunk_size=CHUNK, chunk_concurrency=3, server_version="4.14.0"
    ) as emu:
        src = tmp_path / "old.bin"
        data = os.urandom(6 * CHUNK + 1)
        src.write_bytes(data)
        async with connected(emu, tmp_path) as drive:
            assert drive.server_version == "4.14.0"
            entry = await drive.upload(
                src, "/o/old.bin", overwrite=False, journal=MemoryJournal(), key="k"
            )
        indices = [int(i) for i in emu.requests.param_values("POST", CHUNK_ROUTE, "index")]
        assert entry.size == len(data)
        assert sorted(indices) == list(range(7))
        assert indices[-1] == 6


@pytest.mark.anyio
async def test_s6_8_overwrite_sends_a_new_version(emu: EmulatorHandle, tmp_path: Path) -> None:
    """overwrite=True replaces the content in place (entity_type version); False is ObjectExists."""
    src = tmp_path / "v.bin"
    src.write_bytes(b"one")
    async with connected(emu, tmp_path, transfer=TransferConfig(chunk_concurrency=2)) as drive:
        first = await drive.upload(
            src, "/v/v.bin", overwrite=False, journal=MemoryJournal(), key="a"
        )
        src.write_bytes(b"second")
        with pytest.raises(Exception, match="40004"):
            await drive.upload(src, "/v/v.bin", overwrite=False, journal=MemoryJournal(), key="b")
        second = await drive.upload(
            src, "/v/v.bin", overwrite=True, journal=MemoryJournal(), key="c"
        )
        out = tmp_path / "back"
        await drive.download(second, out)
    assert second.id == first.id
    assert second.size == 6
    assert out.read_bytes() == b"second"


@pytest.mark.anyio
@pytest.mark.parametrize("obfuscated", [False, True])
async def test_s9_5_thumbnail_saved_beside_the_image(tmp_path: Path, obfuscated: bool) -> None:
    """An image's thumbnail is saved as <name>.thumb.jpg (obfuscated URLs decoded)."""
    async with running_emulator(tmp_path, obfuscate_thumbs=obfuscated) as emu:
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, format="PNG")
        src = tmp_path / "pic.png"
        src.write_bytes(buf.getvalue())
        async with connected(emu, tmp_path) as drive:
            entry = await drive.upload(
                src, "/p/pic.png", overwrite=False, journal=MemoryJournal(), key="k"
            )
            image = tmp_path / "out" / "pic.png"
            await drive.download(entry, image)
            thumb = await drive.save_thumbnail(entry, image)
        assert thumb == tmp_path / "out" / "pic.png.thumb.jpg"
        assert thumb.read_bytes()[:2] == b"\xff\xd8"


@pytest.mark.anyio
async def test_s9_5_thumbnail_whose_name_fills_the_limit_is_saved(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A thumbnail name of exactly 255 bytes is written through a temporary name that fits."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buf, format="PNG")
    name = "P" * (255 - len(".png.thumb.jpg")) + ".png"
    src = tmp_path / "src.png"
    src.write_bytes(buf.getvalue())
    async with connected(emu, tmp_path) as drive:
        entry = await drive.upload(
            src, f"/p/{name}", overwrite=False, journal=MemoryJournal(), key="k"
        )
        image = tmp_path / "out" / name
        await drive.download(entry, image)
        thumb = await drive.save_thumbnail(entry, image)
    assert thumb is not None
    assert len(thumb.name.encode()) == 255
    assert sorted(p.name for p in image.parent.iterdir()) == sorted([name, thumb.name])


@pytest.mark.anyio
async def test_s5_11_download_option_saves_thumbnails_into_a_folder(tmp_path: Path) -> None:
    """With save_thumbnails and thumbnail_dir, each downloaded image gets <name>.thumb.jpg there."""
    async with running_emulator(tmp_path) as emu:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (0, 90, 200)).save(buf, format="JPEG")
        src = tmp_path / "a.jpg"
        src.write_bytes(buf.getvalue())
        thumbs = tmp_path / "thumbs"
        config = TransferConfig(save_thumbnails=True, thumbnail_dir=thumbs)
        async with connected(emu, tmp_path, transfer=config) as drive:
            entry = await drive.upload(
                src, "/i/a.jpg", overwrite=False, journal=MemoryJournal(), key="k"
            )
            await drive.download(entry, tmp_path / "got" / "a.jpg")
        assert (tmp_path / "got" / "a.jpg").read_bytes() == src.read_bytes()
        assert (thumbs / "a.jpg.thumb.jpg").read_bytes()[:2] == b"\xff\xd8"
