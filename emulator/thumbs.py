"""Thumbnails: ``GET /api/v4/file/thumb`` (contract 5.11, 9.5).

The first request for an image decodes its current version with Pillow, scales it to fit the
site's thumbnail size and stores the JPEG as a thumbnail entity (type 1) of the file, as the
server's thumbnail pipeline does. Later requests reuse that entity. The answer is a signed content
URL of the thumbnail named ``<file name>.jpg``.

A file that cannot have a thumbnail (a folder, a non-image, an undecodable image) answers 40077;
for files that failed to decode the server also sets ``thumb:disabled`` so clients skip them,
and every later request answers 40077 at once.

With the emulator's ``obfuscate_thumbs`` option the URL is encoded with
:mod:`emulator.obfuscate` and the answer carries ``obfuscated: true``, as Cloudreve Pro may.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio.to_thread
import structlog
from aiohttp import web
from PIL import Image, UnidentifiedImageError

from emulator import errors, obfuscate
from emulator.content import content_url
from emulator.core import State, ok, state, timestamp
from emulator.errors import ApiError
from emulator.files import resolve
from emulator.store import ENTITY_THUMBNAIL, LOCAL_STORAGE_TYPES, Entity, FileRow

__all__ = ["THUMB_DISABLED", "ThumbUnavailable", "make_thumbnail", "setup"]

log = structlog.get_logger("emulator.thumbs")
routes = web.RouteTableDef()

THUMB_DISABLED = "thumb:disabled"
THUMB_WIDTH = 400
THUMB_HEIGHT = 300
THUMB_QUALITY = 85
MAX_SOURCE_PIXELS = 64_000_000
"""Images larger than this are refused rather than decoded (a decompression-bomb guard)."""


class ThumbUnavailable(Exception):
    """Raised when a file cannot have a thumbnail; the message says why."""


def make_thumbnail(src: Path, dst: Path, width: int, height: int) -> None:
    """Write a JPEG of ``src`` scaled to fit ``width`` x ``height`` (aspect kept) to ``dst``.

    Raises:
        ThumbUnavailable: ``src`` is not a decodable image, or is too large to decode.
    """
    try:
        with Image.open(src) as img:
            if img.width * img.height > MAX_SOURCE_PIXELS:
                raise ThumbUnavailable(f"image of {img.width}x{img.height} pixels is too large")
            img.thumbnail((width, height))
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ThumbUnavailable(f"failed to decode image: {exc}") from exc
    rgb.save(dst, "JPEG", quality=THUMB_QUALITY)


def setup(app: web.Application) -> None:
    """Add the thumbnail route."""
    app.router.add_routes(routes)


@routes.get("/api/v4/file/thumb")
async def get_thumb(request: web.Request) -> web.Response:
    """``GET /file/thumb?uri=``: ``{url, expires}`` of the file's thumbnail (5.11)."""
    st = state(request)
    _, _, item = resolve(request, request.query.get("uri", ""))
    if item is None or item.is_folder or THUMB_DISABLED in st.store.metadata(item.id):
        raise _unavailable()
    thumb = _existing_thumb(st, item)
    if thumb is None:
        thumb = await _generate(st, item)
    ttl = st.config.url_ttl
    url = await _thumb_url(st, st.store.entity(thumb), f"{item.name}.jpg", ttl)
    body: dict[str, object] = {"url": url}
    if st.config.obfuscate_thumbs:
        body["url"] = obfuscate.encode(url, obfuscate.time_key(st.clock.now()))
        body["obfuscated"] = True
    body["expires"] = timestamp(st.clock.now() + ttl)
    return ok(body)


async def _thumb_url(st: State, entity: Entity, name: str, ttl_s: int) -> str:
    """A signed content URL for a local thumbnail, else the storage's own URL."""
    policy = st.store.policy(entity.policy_id)
    if policy.type in LOCAL_STORAGE_TYPES or policy.type not in st.drivers:
        return content_url(st, entity, name, download=False, ttl_s=ttl_s)
    return await st.drivers[policy.type].download_url(entity.storage_key, name, ttl_s, False)


def _unavailable() -> ApiError:
    return ApiError(errors.ENTITY_NOT_EXIST, "Entity not exist")


def _existing_thumb(st: State, item: FileRow) -> int | None:
    for ent in st.store.entities(item.id):
        if ent.type == ENTITY_THUMBNAIL:
            return ent.id
    return None


async def _generate(st: State, item: FileRow) -> int:
    """Build, store and record the thumbnail entity; disable thumbnails when it fails.

    An unfinished upload has no complete blob yet: it answers 40077 without disabling.
    """
    if item.primary_entity is None or st.store.entity(item.primary_entity).upload_session_id:
        raise _unavailable()
    work = st.config.data_dir / "thumb_temp"
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"{uuid.uuid4().hex}.src"
    dst = src.with_suffix(".jpg")
    try:
        source = await st.store.export_blob(item, src)
        try:
            await anyio.to_thread.run_sync(make_thumbnail, src, dst, THUMB_WIDTH, THUMB_HEIGHT)
        except ThumbUnavailable as exc:
            st.store.set_metadata(item.id, THUMB_DISABLED, "")
            log.info("thumb_disabled", file_id=item.id, reason=str(exc))
            raise _unavailable() from exc
        policy = st.store.policy(source.policy_id)
        key = st.store.new_storage_key(item.owner_id, f"{item.name}._thumb")
        await st.store.store_blob(policy, key, dst)
        ent = st.store.add_entity(
            item.id, dst.stat().st_size, key, policy.id, ENTITY_THUMBNAIL, owner_id=item.owner_id
        )
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
    return ent.id
