"""Thumbnails: ``GET /file/thumb``, decoding of obfuscated URLs (contract 9.5), saving beside.

Pro servers may answer ``{url, obfuscated: true, expires}``; the URL is then a position
permutation of ``"<k>|<url>"`` keyed by ``k = floor(unix_seconds / 1000)``. The key changes about
every 16.7 minutes, so ``k``, ``k - 1`` and ``k + 1`` are tried in that order.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import structlog

from transfer.backend import RemoteEntry
from transfer.client import DriveClient
from transfer.download import part_path
from transfer.errors import ApiError, DownloadFailed, UnsupportedFeature
from transfer.names import safe_local_name

__all__ = [
    "ThumbnailSaver",
    "decode_obfuscated",
    "decode_obfuscated_at",
    "is_image",
    "permutation",
    "thumb_path",
    "time_key",
]

log = structlog.get_logger()

_THUMB_SUFFIX = ".thumb.jpg"
_IMAGE_SUFFIXES = frozenset(
    {"jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff", "heic", "heif", "avif"}
)
_CODE_NO_THUMB = 40077


def is_image(name: str) -> bool:
    """True when the name's extension is a common image type (thumbnails are worth asking)."""
    return name.rsplit(".", 1)[-1].lower() in _IMAGE_SUFFIXES if "." in name else False


def time_key(unix_seconds: float) -> int:
    """The obfuscation key for a time: ``floor(seconds / 1000)`` (seconds, not milliseconds)."""
    return int(unix_seconds // 1000)


def permutation(length: int, key: int) -> list[int]:
    """Return ``out`` with ``plain[t] = obfuscated[out[t]]`` for strings of ``length`` chars."""
    digits = [int(ch) for ch in reversed(str(key))] if key > 0 else [0]
    pool = list(range(length))
    out = [0] * length
    add = length % 2 == 0
    j = (length - 1) % len(digits)
    for t in range(length - 1, -1, -1):
        n = t + digits[j] * j if add else 2 * j * digits[j] - t
        n = abs(n) % len(pool)
        out[t] = pool[n]
        pool[n] = pool[-1]
        pool.pop()
        add = not add
        j = j - 1 if j > 0 else len(digits) - 1
    return out


def decode_obfuscated_at(text: str, key: int) -> str | None:
    """Decode ``text`` under one key; None when it does not read ``"<key>|<url>"``."""
    plain = "".join(text[i] for i in permutation(len(text), key))
    prefix, sep, url = plain.partition("|")
    if not sep or prefix != str(key):
        return None
    return url


def decode_obfuscated(text: str, unix_seconds: float) -> str:
    """Decode an obfuscated thumbnail URL, trying keys ``k``, ``k - 1`` and ``k + 1``.

    Raises:
        ApiError: no key decodes it.
    """
    key = time_key(unix_seconds)
    for candidate in (key, key - 1, key + 1):
        url = decode_obfuscated_at(text, candidate)
        if url is not None:
            return url
    raise ApiError(200, 0, "malformed response: obfuscated thumbnail url does not decode")


def thumb_path(image: Path, folder: Path | None = None) -> Path:
    """Where the thumbnail of ``image`` goes: ``<name>.thumb.jpg`` beside it or in ``folder``.

    Raises:
        UnsafeName: the thumbnail's name would be longer than a file name may be.
    """
    name = safe_local_name(image.name + _THUMB_SUFFIX)
    return (folder if folder is not None else image.parent) / name


class ThumbnailSaver:
    """Fetches thumbnails of drive images and stores them as JPEG files."""

    def __init__(self, client: DriveClient) -> None:
        self.client = client

    async def url(self, entry: RemoteEntry) -> str | None:
        """Return the thumbnail URL of ``entry``, or None when the server has none (40077)."""
        try:
            data = await self.client.thumb(entry.uri)
        except ApiError as exc:
            if exc.code == _CODE_NO_THUMB:
                return None
            raise
        url = data.get("url")
        if not isinstance(url, str) or not url:
            raise ApiError(200, 0, "malformed response: thumb without url")
        if data.get("obfuscated") is True:
            url = decode_obfuscated(url, self.client.server_time())
        return url

    async def save(
        self, entry: RemoteEntry, image: Path, folder: Path | None = None
    ) -> Path | None:
        """Save the thumbnail of ``entry`` (downloaded to ``image``); None when there is none.

        Raises:
            UnsupportedFeature: ``entry`` is a folder.
            DownloadFailed: the thumbnail could not be fetched.
        """
        if entry.is_dir:
            raise UnsupportedFeature("folders have no thumbnails")
        url = await self.url(entry)
        if url is None:
            return None
        target = thumb_path(image, folder)
        async with self.client.stream(url) as answer:
            if answer.status != 200:
                raise DownloadFailed(entry.path, 0, f"thumbnail answered HTTP {answer.status}")
            body = await answer.read()
        await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
        tmp = part_path(target)
        await anyio.Path(tmp).write_bytes(body)
        await anyio.to_thread.run_sync(os.replace, tmp, target)
        log.debug("thumbnail_saved", path=entry.path)
        return target
