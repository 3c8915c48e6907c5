"""End to end: a download job that also saves the server's thumbnails of images."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.jobs.test_e2e import emulator, ferry, write_config

pytestmark = pytest.mark.anyio

JOBS = """
[[jobs]]
name = "up"
kind = "upload"
source = "src"
target = "emu:/photos"

[[jobs]]
name = "beside"
kind = "download"
source = "emu:/photos"
target = "beside"
thumbnails = true

[[jobs]]
name = "apart"
kind = "download"
source = "emu:/photos"
target = "apart"
thumbnails = "thumbs"
"""


def _png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def test_download_job_saves_thumbnails_beside_images_or_in_a_mirrored_folder(
    tmp_path: Path,
) -> None:
    """``thumbnails = true`` saves ``<name>.thumb.jpg`` beside images; a path mirrors the tree."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    (src / "a" / "IMG_1.png").write_bytes(_png((800, 600)))
    (src / "b" / "IMG_1.png").write_bytes(_png((640, 480)))
    (src / "notes.txt").write_bytes(b"not an image")
    async with emulator(tmp_path) as emu:
        config = write_config(tmp_path, emu.url, JOBS)
        for job in ("up", "beside", "apart"):
            done = await ferry(config, "run", "--job", job)
            assert done.returncode == 0, done.stderr.decode()

    beside = tmp_path / "beside"
    for folder in ("a", "b"):
        with Image.open(beside / folder / "IMG_1.png.thumb.jpg") as thumb:
            assert thumb.format == "JPEG"
            assert max(thumb.size) < 800
    assert not (beside / "notes.txt.thumb.jpg").exists()
    thumbs = tmp_path / "thumbs"
    assert sorted(p.relative_to(thumbs).as_posix() for p in thumbs.rglob("*.jpg")) == [
        "a/IMG_1.png.thumb.jpg",
        "b/IMG_1.png.thumb.jpg",
    ]
    assert not list((tmp_path / "apart").rglob("*.thumb.jpg"))
