"""Thumbnails: the obfuscated-URL decoder of contract 9.5 and thumbnail paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from transfer.errors import ApiError, UnsafeName
from transfer.thumbs import (
    decode_obfuscated,
    decode_obfuscated_at,
    permutation,
    thumb_path,
    time_key,
)

# The "Obfuscated" example of the official apifox page for GET /file/thumb.
DOC_EXAMPLE = (
    "/3ppoD:|h0a5V1e1E1sacovtn71:Cle2/i44ttD5T7?//p1/t/1fpl3/toht0nl9iJmc0/a/9Sn03g73Cj1goj61-"
    "sc41=QBE27ygbvl0wUsABeN2l4Hku.N9weiuj%Eic3p551-.%Y"
)
DOC_KEY = 1749526
DOC_PREFIX = "http://localhost:5173/api/v4/file/content/1JecE/0/DSC01903.jpg.jpg?sign="


def _encode(url: str, key: int) -> str:
    plain = f"{key}|{url}"
    out = permutation(len(plain), key)
    chars = [""] * len(plain)
    for t, i in enumerate(out):
        chars[i] = plain[t]
    return "".join(chars)


def test_s9_5_doc_example_decodes() -> None:
    """The doc's example decodes under k = 1749526 to the content URL."""
    url = decode_obfuscated_at(DOC_EXAMPLE, DOC_KEY)
    assert url is not None
    assert url.startswith(DOC_PREFIX)
    assert _encode(url, DOC_KEY) == DOC_EXAMPLE


@pytest.mark.parametrize("offset", [0, -1, 1])
def test_s9_5_keys_k_minus_one_and_plus_one_are_tried(offset: int) -> None:
    """A URL encoded under k-1 or k+1 still decodes at time k."""
    now_s = DOC_KEY * 1000 + 500
    assert decode_obfuscated(_encode("http://x/y?sign=a%3D", DOC_KEY + offset), now_s) == (
        "http://x/y?sign=a%3D"
    )


def test_s9_5_other_keys_fail_cleanly() -> None:
    """A URL from a key two periods away raises a typed error."""
    with pytest.raises(ApiError, match="does not decode"):
        decode_obfuscated(_encode("http://x/y", DOC_KEY - 2), DOC_KEY * 1000)


def test_s9_5_key_uses_seconds_not_milliseconds() -> None:
    """time_key divides unix seconds by 1000."""
    assert time_key(1749526123.9) == DOC_KEY


def test_thumb_path_beside_or_in_folder(tmp_path: Path) -> None:
    """The thumbnail is <name>.thumb.jpg beside the image or in the given folder."""
    image = tmp_path / "a" / "p.png"
    assert thumb_path(image) == tmp_path / "a" / "p.png.thumb.jpg"
    assert thumb_path(image, tmp_path / "t") == tmp_path / "t" / "p.png.thumb.jpg"
    with pytest.raises(UnsafeName):
        thumb_path(tmp_path / ("x" * 250))
