"""Thumbnails (contract 5.11, 9.5)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from emulator import obfuscate
from emulator.testing import EmulatorHandle, running_emulator
from emulator.thumbs import ThumbUnavailable, make_thumbnail

OWNER = "admin@example.com"


def test_s5_11_thumbnail_fits_the_box_and_keeps_aspect(tmp_path: Path) -> None:
    """A 1600x800 PNG becomes a JPEG of at most 400x300 with a 2:1 aspect."""
    src, dst = tmp_path / "big.png", tmp_path / "t.jpg"
    Image.new("RGB", (1600, 800), (200, 10, 10)).save(src)

    make_thumbnail(src, dst, 400, 300)

    with Image.open(dst) as out:
        assert out.format == "JPEG"
        assert out.size == (400, 200)


def test_s5_11_non_image_is_unavailable(tmp_path: Path) -> None:
    """Bytes that are no image raise ThumbUnavailable and write nothing."""
    src, dst = tmp_path / "notes.txt", tmp_path / "t.jpg"
    src.write_bytes(b"just text, not pixels")

    with pytest.raises(ThumbUnavailable):
        make_thumbnail(src, dst, 400, 300)
    assert not dst.exists()


def test_s5_11_truncated_image_is_unavailable(tmp_path: Path) -> None:
    """A PNG cut in half cannot be decoded and raises ThumbUnavailable."""
    src, dst = tmp_path / "cut.png", tmp_path / "t.jpg"
    Image.new("RGB", (64, 64), (0, 0, 255)).save(src)
    src.write_bytes(src.read_bytes()[:60])

    with pytest.raises(ThumbUnavailable):
        make_thumbnail(src, dst, 400, 300)


# ---- through HTTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


class Caller:
    """A signed-in client of one emulator."""

    def __init__(self, emu: EmulatorHandle, session: aiohttp.ClientSession, token: str) -> None:
        self.emu = emu
        self.session = session
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        async with self.session.request(
            method, self.emu.api + path, headers=self.headers, **kwargs
        ) as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body

    async def put_file(self, uri: str, data: bytes) -> None:
        body = await self.call("PUT", "/file/content", params={"uri": uri}, data=data)
        assert body["code"] == 0, body

    async def thumb(self, uri: str) -> dict[str, Any]:
        return await self.call("GET", "/file/thumb", params={"uri": uri})


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "obfuscated"])
async def caller(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Caller]:
    """An emulator (with or without obfuscated thumbnail URLs) and its admin, signed in."""
    tmp = tmp_path_factory.mktemp("thumbs")
    async with (
        running_emulator(tmp, obfuscate_thumbs=request.param) as emu,
        aiohttp.ClientSession() as session,
    ):
        async with session.post(
            emu.api + "/session/token", json={"email": OWNER, "password": emu.users[OWNER]}
        ) as resp:
            token = (await resp.json())["data"]["token"]["access_token"]
        yield Caller(emu, session, token)


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def _plain_url(caller: Caller, data: dict[str, Any]) -> str:
    """The thumbnail URL, decoded first when the answer says it is obfuscated."""
    if caller.emu.state.config.obfuscate_thumbs:
        assert data["obfuscated"] is True
        return obfuscate.decode(data["url"], caller.emu.clock.now())
    assert "obfuscated" not in data
    return str(data["url"])


@pytest.mark.anyio
async def test_s5_11_image_thumbnail_is_served_and_cached(caller: Caller) -> None:
    """An image gets {url, expires}; the URL serves a scaled JPEG; the entity is reused."""
    await caller.put_file("cloudreve://my/pics/DSC 1.png", _png(1200, 900))

    first = await caller.thumb("cloudreve://my/pics/DSC%201.png")
    assert first["code"] == 0, first
    url = _plain_url(caller, first["data"])
    assert "/api/v4/file/content/" in url
    assert "/DSC%201.png.jpg?sign=" in url
    assert first["data"]["expires"]
    async with caller.session.get(url) as resp:
        assert resp.status == 200
        with Image.open(io.BytesIO(await resp.read())) as img:
            assert img.format == "JPEG"
            assert img.size == (400, 300)

    second = await caller.thumb("cloudreve://my/pics/DSC%201.png")
    assert second["code"] == 0
    entity = url.split("/file/content/")[1].split("/")[0]
    assert f"/file/content/{entity}/" in _plain_url(caller, second["data"])
    item = caller.emu.file(OWNER, "/pics/DSC 1.png")
    assert item is not None
    assert sum(e.type == 1 for e in caller.emu.store.entities(item.id)) == 1


@pytest.mark.anyio
async def test_s5_11_non_image_is_40077_and_disabled(caller: Caller) -> None:
    """A text file answers 40077 and gets thumb:disabled; the next call answers 40077 at once."""
    await caller.put_file("cloudreve://my/notes.txt", b"no pixels here")

    body = await caller.thumb("cloudreve://my/notes.txt")
    assert body["code"] == 40077
    info = await caller.call("GET", "/file/info", params={"uri": "cloudreve://my/notes.txt"})
    assert "thumb:disabled" in (info["data"]["metadata"] or {})
    again = await caller.thumb("cloudreve://my/notes.txt")
    assert again["code"] == 40077


@pytest.mark.anyio
async def test_s5_11_folder_and_missing_file(caller: Caller) -> None:
    """A folder answers 40077; a missing path answers 40016."""
    await caller.call("POST", "/file/create", json={"uri": "cloudreve://my/dir", "type": "folder"})

    assert (await caller.thumb("cloudreve://my/dir"))["code"] == 40077
    assert (await caller.thumb("cloudreve://my/nope.png"))["code"] == 40016


@pytest.mark.anyio
async def test_s5_11_thumbnail_of_an_s3_policy_file(caller: Caller) -> None:
    """An image stored by an s3 policy gets a thumbnail served from that storage."""
    if "s3" not in caller.emu.state.drivers:
        pytest.skip("no s3 driver in this emulator")
    caller.emu.use_policy(OWNER, "/s3pics", "s3")
    await caller.put_file("cloudreve://my/s3pics/wide.png", _png(800, 200))

    body = await caller.thumb("cloudreve://my/s3pics/wide.png")
    assert body["code"] == 0, body
    async with caller.session.get(_plain_url(caller, body["data"])) as resp:
        assert resp.status == 200
        with Image.open(io.BytesIO(await resp.read())) as img:
            assert img.size == (400, 100)
    item = caller.emu.file(OWNER, "/s3pics/wide.png")
    assert item is not None
    thumbs = [e for e in caller.emu.store.entities(item.id) if e.type == 1]
    assert [caller.emu.store.policy(e.policy_id).type for e in thumbs] == ["s3"]


@pytest.mark.anyio
async def test_s5_11_unfinished_upload_is_40077_without_disabling(caller: Caller) -> None:
    """A placeholder still uploading answers 40077 but is not tagged thumb:disabled."""
    session = await caller.call(
        "PUT", "/file/upload", json={"uri": "cloudreve://my/pending.png", "size": 100}
    )
    assert session["code"] == 0, session

    assert (await caller.thumb("cloudreve://my/pending.png"))["code"] == 40077
    item = caller.emu.file(OWNER, "/pending.png")
    assert item is not None
    assert "thumb:disabled" not in caller.emu.store.metadata(item.id)
