"""Contract 4: cloudreve:// URIs and drive paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transfer.errors import UnsafeName
from transfer.uris import encode_segment, join_remote, parse_uri, to_uri

_names = st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s and s not in (".", ".."))


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("a b#1.txt", "a%20b%231.txt"),
        ("100%.txt", "100%25.txt"),
        ("a%20b.txt", "a%2520b.txt"),
        ("x&y+z?.txt", "x%26y%2Bz%3F.txt"),
        ("keep-_.!~*'()", "keep-_.!~*'()"),
        ("é", "%C3%A9"),
    ],
)
def test_s4_segment_is_encoded_like_encode_uri_component(name: str, encoded: str) -> None:
    """Each reserved character is percent-encoded exactly once; unreserved ones stay."""
    assert encode_segment(name) == encoded


def test_s4_uri_of_root_and_nested_path() -> None:
    """The root is cloudreve://my; nested names are joined with single slashes."""
    assert to_uri("/") == "cloudreve://my"
    assert to_uri("") == "cloudreve://my"
    assert to_uri("/a b/Track # 7.zip") == "cloudreve://my/a%20b/Track%20%23%207.zip"


def test_s4_parse_drops_search_and_fs_id() -> None:
    """Parsing keeps only the decoded path, dropping user info and a search query."""
    assert parse_uri("cloudreve://my/a%20b/c%2Bd?name=x") == "/a b/c+d"
    assert parse_uri("cloudreve://uid@my") == "/"
    assert parse_uri("CLOUDREVE://my/x") == "/x"


def test_s4_parse_rejects_other_schemes() -> None:
    """A URI that is not cloudreve:// is a clear ValueError."""
    with pytest.raises(ValueError, match="cloudreve"):
        parse_uri("https://example.com/a")


def test_s4_relative_segments_are_rejected() -> None:
    """'.' and '..' segments raise UnsafeName instead of being resolved by the server."""
    with pytest.raises(UnsafeName):
        to_uri("/a/../b")


def test_join_remote_normalises_slashes() -> None:
    """join_remote makes one absolute path from parts with or without slashes."""
    assert join_remote("/a", "b c") == "/a/b c"
    assert join_remote("a/", "/b/", "c") == "/a/b/c"
    assert join_remote() == "/"


@given(st.lists(_names, min_size=1, max_size=4))
def test_s4_any_unicode_name_round_trips(names: list[str]) -> None:
    """Any names (emoji, %, #, ?, +, &, spaces, NFD) survive to_uri then parse_uri unchanged."""
    path = "/" + "/".join(names)
    uri = to_uri(path)
    assert "#" not in uri
    assert "?" not in uri
    assert " " not in uri
    assert parse_uri(uri) == path
