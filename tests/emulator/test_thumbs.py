"""Thumbnails (contract 5.11, 9.5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from emulator.thumbs import ThumbUnavailable, make_thumbnail


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
