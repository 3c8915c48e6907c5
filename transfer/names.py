"""Local and remote file names: normalisation and the safety checks for writing locally.

A remote name comes from a server we do not control. :func:`safe_local_name` guarantees that
writing it below a target folder can never land outside that folder.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from transfer.errors import UnsafeName

__all__ = ["MAX_NAME_BYTES", "local_path", "nfc", "safe_local_name"]

MAX_NAME_BYTES = 255
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)


def nfc(name: str) -> str:
    """Return ``name`` in Unicode NFC (the form new uploads use by default)."""
    return unicodedata.normalize("NFC", name)


def safe_local_name(name: str, *, windows: bool | None = None) -> str:
    """Return ``name`` unchanged when it is safe as one local path component.

    Names are never truncated or rewritten: an unsafe name is reported so the caller can fail
    that one item and carry on with the batch.

    Args:
        name: a single remote name (not a path).
        windows: apply the Windows rules too; defaults to the running OS.

    Raises:
        UnsafeName: the name is empty, ``.``/``..``, holds ``/``, ``\\`` or NUL, is longer than
            255 UTF-8 bytes, or is invalid on the target OS.
    """
    if windows is None:
        windows = os.name == "nt"
    reason = _unsafe_reason(name, windows)
    if reason:
        raise UnsafeName(name, reason)

    return name


def _unsafe_reason(name: str, windows: bool) -> str:
    if name in ("", ".", ".."):
        return "empty or relative name"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if "\x00" in name:
        return "contains NUL"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "not encodable as UTF-8"
    if size > MAX_NAME_BYTES:
        return f"{size} bytes long, the limit is {MAX_NAME_BYTES}"
    if windows:
        if any(ch in _WINDOWS_FORBIDDEN or ord(ch) < 32 for ch in name):
            return "contains a character Windows forbids"
        if name[-1] in ". ":
            return "ends with a dot or space"
        if name.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
            return "a reserved Windows device name"
    return ""


def local_path(root: Path, remote_relative: str, *, windows: bool | None = None) -> Path:
    """Map a ``/``-separated path below a remote folder to a path below ``root``.

    Every component goes through :func:`safe_local_name`, so the result never leaves ``root``.

    Raises:
        UnsafeName: a component is unsafe (the whole item should fail, not the batch).
    """
    parts = [part for part in remote_relative.split("/") if part]
    if not parts:
        raise UnsafeName(remote_relative, "empty relative path")
    return root.joinpath(*(safe_local_name(part, windows=windows) for part in parts))
