"""Building and parsing ``cloudreve://`` URIs (contract 4).

Each path segment is percent-encoded like JavaScript ``encodeURIComponent``: everything except
``A-Z a-z 0-9 - _ . ! ~ * ' ( )`` becomes ``%XX`` of its UTF-8 bytes, so ``#``, ``?``, ``%``,
``+``, ``&`` and space inside names survive the server's URL parsing. URLs the server hands out
(download links, presigned part URLs) are never built or re-encoded here: they are used verbatim.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from transfer.errors import UnsafeName

__all__ = ["ROOT_URI", "encode_segment", "join_remote", "parse_uri", "split_remote", "to_uri"]

ROOT_URI = "cloudreve://my"
_SAFE = "-_.!~*'()"
_PREFIX = "cloudreve://"


def encode_segment(name: str) -> str:
    """Percent-encode one name as ``encodeURIComponent`` does (space is ``%20``, never ``+``)."""
    return quote(name, safe=_SAFE, encoding="utf-8", errors="strict")


def split_remote(path: str) -> list[str]:
    """Split a drive path (``/a/b c``) into its names; empty segments are dropped.

    Raises:
        UnsafeName: a segment is ``.`` or ``..`` (the server would resolve it elsewhere).
    """
    names = [part for part in path.split("/") if part]
    for name in names:
        if name in (".", ".."):
            raise UnsafeName(name, f"path {path!r} has a relative segment")
    return names


def join_remote(*parts: str) -> str:
    """Join drive path parts into one absolute path: ``("/a", "b c") -> "/a/b c"``.

    A part may itself contain ``/`` separators; the result starts with ``/`` and has no
    trailing ``/`` except for the root.
    """
    names: list[str] = []
    for part in parts:
        names.extend(split_remote(part))
    return "/" + "/".join(names)


def to_uri(path: str) -> str:
    """Return the ``cloudreve://my`` URI of a drive path: ``/a b#1`` -> ``cloudreve://my/a%20b%231``."""
    names = split_remote(path)
    if not names:
        return ROOT_URI
    return ROOT_URI + "/" + "/".join(encode_segment(name) for name in names)


def parse_uri(uri: str) -> str:
    """Return the decoded drive path of a ``cloudreve://`` URI (``/`` for the root).

    The filesystem, any ``fs_id@`` prefix and any ``?search`` part are dropped; each segment is
    percent-decoded once, so ``%2520`` stays the literal text ``%20``.

    Raises:
        ValueError: ``uri`` is not a ``cloudreve://`` URI.
    """
    if not uri.lower().startswith(_PREFIX):
        raise ValueError(f"not a cloudreve:// uri: {uri!r}")
    rest = uri[len(_PREFIX) :]
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    _, _, raw_path = rest.partition("/")
    names = [
        unquote(part, encoding="utf-8", errors="strict") for part in raw_path.split("/") if part
    ]

    return "/" + "/".join(names)
