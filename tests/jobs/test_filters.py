"""Glob compilation and the include/exclude/size/age filter."""

from __future__ import annotations

import pytest

from jobs.filters import Filter, GlobError, compile_glob


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("*.py", "a/b/c.py", True),
        ("*.py", "a/b/c.pyc", False),
        ("/top.txt", "top.txt", True),
        ("/top.txt", "x/top.txt", False),
        ("__pycache__/**", "lib/__pycache__/x.pyc", True),
        ("site-packages/**", "lib/site-packages/", True),
        ("a/*/c", "a/b/c", True),
        ("a/*/c", "a/b/x/c", False),
        ("a/**/c", "a/b/x/c", True),
        ("file?.txt", "file1.txt", True),
        ("[!a]*.txt", "b.txt", True),
        ("[!a]*.txt", "a.txt", False),
        ("*.{jpg,png}", "p/x.png", True),
        ("100%.txt", "100%.txt", True),
    ],
)
def test_glob_matches_like_rclone(pattern: str, path: str, hit: bool) -> None:
    """Unanchored globs match at any folder boundary; * stops at '/', ** does not."""
    assert bool(compile_glob(pattern).match(path)) is hit


@pytest.mark.parametrize("pattern", ["", "[abc", "{a,b", "a}", "{a,{b}}"])
def test_bad_globs_raise(pattern: str) -> None:
    """Empty patterns and unbalanced brackets or braces are refused."""
    with pytest.raises(GlobError):
        compile_glob(pattern)


def test_filter_prunes_excluded_folders_and_applies_bounds() -> None:
    """Excluded folders are pruned; include, size and age bounds apply to files."""
    filt = Filter.build(["*.txt"], ["tmp/**"], min_size=2, max_size=10, min_mtime_ns=100)
    assert filt.dir_excluded("a/tmp")
    assert not filt.dir_excluded("a/tmpx")
    assert filt.file_included("a/x.txt", 5, 200)
    assert not filt.file_included("a/x.bin", 5, 200)
    assert not filt.file_included("a/x.txt", 1, 200)
    assert not filt.file_included("a/x.txt", 11, 200)
    assert not filt.file_included("a/x.txt", 5, 50)
