"""Local name safety (BR-33/34) and NFC normalisation (BR-04)."""

from __future__ import annotations

from pathlib import Path

import pytest

from transfer.errors import UnsafeName
from transfer.names import local_path, nfc, safe_local_name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "..\\x", "a\\b", "nul\x00", "文" * 90 + ".txt"]
)
def test_unsafe_names_are_refused(name: str) -> None:
    """Names that could escape the folder or exceed 255 UTF-8 bytes raise UnsafeName."""
    with pytest.raises(UnsafeName) as info:
        safe_local_name(name, windows=False)
    assert info.value.name == name


@pytest.mark.parametrize("name", ["a:b.txt", "q?.txt", "CON.txt", "trail.", 'x"y'])
def test_windows_rules_apply_when_asked(name: str) -> None:
    """Characters and device names Windows forbids are refused for a Windows target."""
    assert safe_local_name(name, windows=False) == name
    with pytest.raises(UnsafeName):
        safe_local_name(name, windows=True)


def test_ordinary_names_pass_unchanged() -> None:
    """Spaces, %, #, emoji and 255-byte names are returned as they are."""
    for name in ["Track # 7.zip", "100%.txt", "📷 photo.jpg", "a" * 255]:
        assert safe_local_name(name, windows=False) == name


def test_nfc_composes_macos_names() -> None:
    """An NFD name is composed to NFC."""
    assert nfc("Se\u0301ance.flac") == "S\u00e9ance.flac"


def test_local_path_maps_components_safely(tmp_path: Path) -> None:
    """local_path joins checked components below root and refuses escapes."""
    assert local_path(tmp_path, "/a b/c#d.txt") == tmp_path / "a b" / "c#d.txt"
    with pytest.raises(UnsafeName):
        local_path(tmp_path, "a/../../etc/passwd")
    with pytest.raises(UnsafeName):
        local_path(tmp_path, "")
