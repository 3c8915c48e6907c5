"""Include/exclude globs and size/age filters applied to both sides of a job.

Glob syntax (rclone-like), matched against the ``/``-separated path relative to the job root:

* ``*`` matches any run of characters except ``/``; ``**`` matches across ``/``;
* ``?`` matches one character except ``/``; ``[abc]``/``[!a-z]`` match one character of a class;
* ``{a,b}`` matches either alternative;
* a pattern starting with ``/`` is anchored at the job root; any other pattern matches at any
  folder boundary, so ``__pycache__/**`` excludes every ``__pycache__`` folder and ``*.tmp``
  any file with that suffix anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Filter", "GlobError", "compile_glob"]


class GlobError(ValueError):
    """A glob pattern cannot be compiled; the message says where and why."""


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile one glob into a regular expression matched against a relative path.

    Raises:
        GlobError: the pattern is empty, has an unclosed ``[`` or ``{``, a nested ``{`` or a
            stray ``}``.
    """
    if not pattern.strip():
        raise GlobError("empty glob pattern")
    anchored = pattern.startswith("/")
    body = _translate(pattern.lstrip("/") if anchored else pattern, pattern)
    prefix = "^" if anchored else "(?:^|.*/)"

    return re.compile(prefix + body + "$", re.DOTALL)


def _translate(text: str, original: str) -> str:
    out: list[str] = []
    i = 0
    in_braces = False
    while i < len(text):
        char = text[i]
        if char == "*":
            if text.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = _class_end(text, i)
            if end < 0:
                raise GlobError(f"unclosed '[' at position {i} in glob {original!r}")
            inner = text[i + 1 : end]
            negate = inner.startswith("!")
            inner = inner[1:] if negate else inner
            out.append("[" + ("^/" if negate else "") + inner.replace("\\", "\\\\") + "]")
            i = end
        elif char == "{":
            if in_braces:
                raise GlobError(f"nested '{{' at position {i} in glob {original!r}")
            in_braces = True
            out.append("(?:")
        elif char == "}":
            if not in_braces:
                raise GlobError(f"unmatched '}}' at position {i} in glob {original!r}")
            in_braces = False
            out.append(")")
        elif char == "," and in_braces:
            out.append("|")
        elif char == "\\" and i + 1 < len(text):
            i += 1
            out.append(re.escape(text[i]))
        else:
            out.append(re.escape(char))
        i += 1
    if in_braces:
        raise GlobError(f"unclosed '{{' in glob {original!r}")

    return "".join(out)


def _class_end(text: str, start: int) -> int:
    """Return the index of the ``]`` closing the class opened at ``start``, or -1."""
    i = start + 1
    if i < len(text) and text[i] == "!":
        i += 1
    if i < len(text) and text[i] == "]":
        i += 1
    while i < len(text):
        if text[i] == "]":
            return i if i > start + 1 else -1
        i += 1

    return -1


@dataclass(frozen=True, slots=True)
class Filter:
    """Decides which relative paths and sizes a job looks at.

    A file is taken when it matches no exclude glob, matches an include glob (or there are
    none), and its size and age are inside the bounds. A folder is pruned when an exclude glob
    matches the folder itself or everything below it.
    """

    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()
    min_size: int | None = None
    max_size: int | None = None
    min_mtime_ns: int | None = None

    @classmethod
    def build(
        cls,
        include: Sequence[str],
        exclude: Sequence[str],
        *,
        min_size: int | None = None,
        max_size: int | None = None,
        min_mtime_ns: int | None = None,
    ) -> Filter:
        """Compile the globs of a job; raises :class:`GlobError` for a bad pattern."""
        return cls(
            tuple(compile_glob(p) for p in include),
            tuple(compile_glob(p) for p in exclude),
            min_size,
            max_size,
            min_mtime_ns,
        )

    def dir_excluded(self, rel: str) -> bool:
        """True when the folder at ``rel`` and everything below it are excluded."""
        return any(p.match(rel) or p.match(rel + "/") for p in self.exclude)

    def file_included(self, rel: str, size: int, mtime_ns: int | None) -> bool:
        """True when the file at ``rel`` passes the globs and the size and age bounds."""
        if any(p.match(rel) for p in self.exclude):
            return False
        if self.include and not any(p.match(rel) for p in self.include):
            return False
        if self.min_size is not None and size < self.min_size:
            return False
        if self.max_size is not None and size > self.max_size:
            return False
        return not (
            self.min_mtime_ns is not None and mtime_ns is not None and mtime_ns < self.min_mtime_ns
        )
