"""Building blocks shared by the storage emulations: blob files, part files, signatures, errors.

Words used across the drivers:

* **blob**: a finished object, one file on disk under ``<data_dir>/storage/<type>/``; its file
  name is the SHA-256 of the storage key, so no key can escape the directory.
* **part**: one uploaded piece of a multipart upload, kept as its own file until the upload is
  completed (concatenated into the blob) or aborted (deleted).
* **signed URL**: a URL whose query carries an expiry and an HMAC over the method, the path, the
  query and the headers the URL binds. A request that changes any of them gets the storage's
  ``SignatureDoesNotMatch``; one that arrives after the expiry gets ``AccessDenied``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

import anyio
from aiohttp import web

from emulator.policy import UploadHost

Clock = Callable[[], float]
"""Unix seconds; the emulator's clock, so tests can move it past URL expiries."""

READ_BLOCK = 1 << 20
"""Bytes read from a request body per step; memory per upload stays at about this size."""


def default_clock() -> float:
    """Return the wall-clock time in unix seconds."""
    return time.time()


class BodyIncomplete(Exception):
    """Raised when a request body ends before its declared ``Content-Length``."""

    def __init__(self, expected: int, received: int) -> None:
        super().__init__(f"body ended after {received} of {expected} bytes")
        self.expected = expected
        self.received = received


async def stream_body_to_file(request: web.Request, dst: Path, *, append: bool = False) -> str:
    """Write (or append) the request body to ``dst`` block by block; return its MD5 hex.

    Raises:
        BodyIncomplete: fewer bytes arrived than ``Content-Length`` declared; what did arrive
            is in the file.
    """
    expected = request.content_length or 0
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    async with await anyio.open_file(dst, "ab" if append else "wb") as out:
        while True:
            block = await request.content.read(READ_BLOCK)
            if not block:
                break
            digest.update(block)
            received += len(block)
            await out.write(block)
    if received != expected:
        raise BodyIncomplete(expected, received)

    return digest.hexdigest()


def xml_error(status: int, code: str, message: str, **extra: str) -> web.Response:
    """Return an S3-style ``<Error>`` document, as S3, COS, OSS and OBS answer failures."""
    fields = {"Code": code, "Message": message, **extra, "RequestId": uuid.uuid4().hex}
    body = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items())
    return web.Response(
        status=status,
        text=f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{body}</Error>',
        content_type="application/xml",
    )


class BlobDir:
    """Finished objects of one emulated storage, one file per key (content type beside it)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Return the file that holds (or would hold) ``key``."""
        return self.root / hashlib.sha256(key.encode()).hexdigest()

    def size(self, key: str) -> int | None:
        """Return the blob's size, or None when it does not exist."""
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def _type_path(self, key: str) -> Path:
        return self.path(key).with_suffix(".type")

    def mime(self, key: str) -> str:
        """Return the content type the blob was stored with."""
        try:
            return self._type_path(key).read_text() or "application/octet-stream"
        except FileNotFoundError:
            return "application/octet-stream"

    async def commit(self, key: str, src: Path, mime: str = "") -> None:
        """Move the finished file ``src`` into place as ``key`` (atomic on one file system)."""
        await anyio.Path(src).rename(self.path(key))
        await anyio.Path(self._type_path(key)).write_text(mime)

    async def put(self, key: str, src: Path) -> None:
        """Copy the local file ``src`` in as ``key``."""
        tmp = self.root / f".put-{uuid.uuid4().hex}"
        await anyio.to_thread.run_sync(shutil.copyfile, src, tmp)
        await self.commit(key, tmp)

    async def fetch(self, key: str, dst: Path) -> None:
        """Copy ``key`` into the local file ``dst``.

        Raises:
            FileNotFoundError: the blob does not exist.
        """
        await anyio.to_thread.run_sync(shutil.copyfile, self.path(key), dst)

    async def delete(self, key: str) -> None:
        """Remove ``key``; a missing blob is not an error."""
        await anyio.Path(self.path(key)).unlink(missing_ok=True)
        await anyio.Path(self._type_path(key)).unlink(missing_ok=True)


@dataclass(slots=True)
class Part:
    """One received part of a multipart upload."""

    number: int
    size: int
    etag: str
    """MD5 hex of the part, without quotes."""


@dataclass(slots=True)
class MultipartUpload:
    """A multipart upload in progress, its parts on disk."""

    upload_id: str
    key: str
    session_id: str
    size: int
    expires: int
    mime: str
    directory: Path
    parts: dict[int, Part] = field(default_factory=dict)

    def part_path(self, number: int) -> Path:
        """Return the file of part ``number``."""
        return self.directory / f"{number:05d}"


class UploadGone(Exception):
    """Raised when a part arrives for an upload that was completed or aborted meanwhile."""


class PartOrderError(Exception):
    """Raised when a complete request lists parts that cannot form the object.

    ``code`` is the S3-family error code (``InvalidPart``, ``InvalidPartOrder``,
    ``EntityTooSmall``, ``MalformedXML``).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MultipartStore:
    """Multipart uploads of one emulated storage, with their part files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.uploads: dict[str, MultipartUpload] = {}

    def create(self, key: str, session_id: str, size: int, expires: int, mime: str) -> str:
        """Start an upload for ``key`` and return its id."""
        upload_id = uuid.uuid4().hex
        directory = self.root / upload_id
        directory.mkdir()
        self.uploads[upload_id] = MultipartUpload(
            upload_id, key, session_id, size, expires, mime, directory
        )

        return upload_id

    def by_session(self, session_id: str) -> MultipartUpload | None:
        """Return the upload opened for ``session_id``, if any."""
        return next((u for u in self.uploads.values() if u.session_id == session_id), None)

    async def put_part(self, upload: MultipartUpload, number: int, request: web.Request) -> Part:
        """Store the request body as part ``number`` (replacing an earlier one) and return it.

        The body goes to a temporary file renamed into place, so that two uploads of one part
        number never interleave: the last one to finish wins, as on S3.

        Raises:
            BodyIncomplete: the body ended early; the part is not recorded.
            UploadGone: the upload was completed or aborted meanwhile.
        """
        tmp = upload.directory / f"{number:05d}.{uuid.uuid4().hex}"
        try:
            etag = await stream_body_to_file(request, tmp)
            await anyio.Path(tmp).rename(upload.part_path(number))
        except FileNotFoundError as exc:
            raise UploadGone(upload.upload_id) from exc
        except BodyIncomplete:
            await anyio.Path(tmp).unlink(missing_ok=True)
            raise
        if upload.upload_id not in self.uploads:
            raise UploadGone(upload.upload_id)
        part = Part(number, request.content_length or 0, etag)
        upload.parts[number] = part

        return part

    def select(
        self, upload: MultipartUpload, listed: Iterable[tuple[int, str]] | None, min_part: int
    ) -> list[Part]:
        """Check the parts a complete request lists and return them in order.

        ``listed`` holds (part number, ETag) pairs; None means "every uploaded part" (OSS
        ``x-oss-complete-all``). ETags compare without quotes, as S3 does.

        Raises:
            PartOrderError: a part is missing, has another ETag, is out of order, or a
                non-final part is smaller than ``min_part``.
        """
        if listed is None:
            listed = [(n, upload.parts[n].etag) for n in sorted(upload.parts)]
        chosen: list[Part] = []
        for number, etag in listed:
            part = upload.parts.get(number)
            if part is None or part.etag != etag.strip('"'):
                raise PartOrderError(
                    "InvalidPart",
                    "One or more of the specified parts could not be found. The part may not "
                    "have been uploaded, or the specified entity tag may not match the part's "
                    "entity tag.",
                )
            if chosen and number <= chosen[-1].number:
                raise PartOrderError(
                    "InvalidPartOrder", "The list of parts was not in ascending order."
                )
            chosen.append(part)
        if not chosen:
            raise PartOrderError("MalformedXML", "The XML you provided was not well-formed.")
        if any(p.size < min_part for p in chosen[:-1]):
            raise PartOrderError(
                "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size."
            )

        return chosen

    async def assemble(self, upload: MultipartUpload, parts: list[Part]) -> Path:
        """Close the upload to further requests and concatenate ``parts`` into one file.

        The caller moves the returned file away, then calls :meth:`remove_files`.
        """
        self.uploads.pop(upload.upload_id, None)
        out_path = upload.directory / "assembled"

        def _concat() -> None:
            with out_path.open("wb") as out:
                for part in parts:
                    with upload.part_path(part.number).open("rb") as src:
                        shutil.copyfileobj(src, out, READ_BLOCK)

        await anyio.to_thread.run_sync(_concat)

        return out_path

    async def discard(self, upload_id: str) -> None:
        """Forget an upload and delete its part files; an unknown id is not an error."""
        upload = self.uploads.pop(upload_id, None)
        if upload is not None:
            await self.remove_files(upload)

    async def remove_files(self, upload: MultipartUpload) -> None:
        """Delete an upload's directory and whatever part files are left in it."""
        await anyio.to_thread.run_sync(shutil.rmtree, upload.directory, True)


def multipart_etag(parts: Iterable[Part]) -> str:
    """Return the S3 multipart ETag: MD5 of the part digests, dash, part count (quoted)."""
    parts = list(parts)
    digest = hashlib.md5(usedforsecurity=False)
    for part in parts:
        digest.update(bytes.fromhex(part.etag))

    return f'"{digest.hexdigest()}-{len(parts)}"'


class Signer:
    """HMAC signatures for the URLs and tokens an emulated storage hands out.

    Each storage gets its own random secret, so a URL signed for one storage or one emulator
    run never verifies on another.
    """

    def __init__(self) -> None:
        self.access_key = "AK" + secrets.token_hex(8).upper()
        self.secret = secrets.token_bytes(32)

    def sign(
        self, method: str, path: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> str:
        """Return the base64 HMAC-SHA1 over the method, path, params and bound headers."""
        lines = [method.upper(), path]
        lines += [f"{k}={params[k]}" for k in sorted(params)]
        lines += [f"{k.lower()}:{headers[k].strip()}" for k in sorted(headers, key=str.lower)]
        mac = hmac.new(self.secret, "\n".join(lines).encode(), hashlib.sha1)

        return base64.b64encode(mac.digest()).decode()

    def check(
        self,
        signature: str,
        method: str,
        path: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
    ) -> bool:
        """Return whether ``signature`` is what :meth:`sign` gives for this request."""
        return hmac.compare_digest(signature, self.sign(method, path, params, headers))


def scratch_dir(data_dir: Path, policy_type: str) -> Path:
    """Return (creating it) the directory an emulated storage keeps its files in."""
    path = data_dir / "storage" / policy_type
    path.mkdir(parents=True, exist_ok=True)

    return path


def chunk_lengths(size: int, chunk_size: int) -> list[int]:
    """Return the length of every chunk of a ``size``-byte file (an empty file is one chunk)."""
    if size == 0 or chunk_size <= 0:
        return [size]
    full, rest = divmod(size, chunk_size)

    return [chunk_size] * full + ([rest] if rest else [])


def session_chunk_size(chunk_size: int, default: int) -> int:
    """Return the session's chunk size, or the driver default when the policy leaves it at 0."""
    return chunk_size if chunk_size > 0 else default


def content_disposition(name: str, download: bool) -> str:
    """Return a ``Content-Disposition`` value with an RFC 5987 UTF-8 file name."""
    kind = "attachment" if download else "inline"

    return f"{kind}; filename*=UTF-8''{quote(name, safe='')}"


def serve_blob(
    request: web.Request, blobs: BlobDir, key: str, name: str, download: bool
) -> web.StreamResponse:
    """Answer a GET (with Range support) or HEAD for a blob.

    Raises:
        FileNotFoundError: the blob does not exist; callers turn it into the storage's 404.
    """
    path = blobs.path(key)
    if not path.is_file():
        raise FileNotFoundError(key)
    headers = {"Content-Type": blobs.mime(key)}
    if name:
        headers["Content-Disposition"] = content_disposition(name, download)

    return web.FileResponse(path, chunk_size=READ_BLOCK, headers=headers)


Deny = Callable[[int, str, str], web.Response]
"""Builds a storage's error answer from (HTTP status, error code, message)."""


class BlobLinks:
    """Signed, expiring download links for blobs: ``/storage/<type>/content/<key>?e&sign``.

    Used by the storages whose real download links are opaque tokens (OneDrive's pre-authenticated
    ``downloadUrl``, Qiniu's private-bucket token, Upyun's ``_upt``).
    """

    def __init__(self, policy_type: str, blobs: BlobDir, clock: Clock, deny: Deny) -> None:
        self._prefix = f"/storage/{policy_type}/content/"
        self._blobs = blobs
        self._clock = clock
        self._deny = deny
        self._signer = Signer()

    def url(self, site_url: str, key: str, name: str, ttl_s: int, download: bool) -> str:
        """Return a link to ``key`` valid for ``ttl_s`` seconds of the emulator clock."""
        path = self._prefix + base64.urlsafe_b64encode(key.encode()).decode()
        params = {"e": str(int(self._clock()) + ttl_s), "name": name, "dl": str(int(download))}
        params["sign"] = self._signer.sign("GET", path, params, {})

        return f"{site_url}{path}?{urlencode(params)}"

    def route(self) -> web.RouteDef:
        """The GET/HEAD route that serves the links."""
        return web.get(self._prefix + "{token}", self._serve)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        signature = params.pop("sign", "")
        if not self._signer.check(signature, "GET", request.path, params, {}):
            return self._deny(403, "AccessDenied", "Invalid signature.")
        if not params.get("e", "").isdigit() or self._clock() > int(params["e"]):
            return self._deny(403, "AccessDenied", "The link has expired.")
        key = base64.urlsafe_b64decode(request.match_info["token"]).decode()
        try:
            return serve_blob(
                request, self._blobs, key, params.get("name", ""), params["dl"] == "1"
            )
        except FileNotFoundError:
            return self._deny(404, "NotFound", "The item does not exist.")


class DiskBlobs:
    """Server-side blob access for a driver whose blobs live in a :class:`BlobDir`.

    Subclasses set ``blobs`` in their constructor.
    """

    blobs: BlobDir

    async def put_blob(self, storage_key: str, src: Path) -> None:
        """Store a local file as ``storage_key``."""
        await self.blobs.put(storage_key, src)

    async def fetch_blob(self, storage_key: str, dst: Path) -> None:
        """Copy ``storage_key`` to ``dst``; FileNotFoundError when missing."""
        await self.blobs.fetch(storage_key, dst)

    async def delete_blob(self, storage_key: str) -> None:
        """Delete ``storage_key``; a missing blob is not an error."""
        await self.blobs.delete(storage_key)


class LinkedDiskBlobs(DiskBlobs):
    """:class:`DiskBlobs` whose download URLs are signed :class:`BlobLinks` on the emulator.

    Subclasses also set ``_links`` and ``_host`` (an object with a ``site_url``).
    """

    _links: BlobLinks
    _host: UploadHost

    async def download_url(self, storage_key: str, name: str, ttl_s: int, download: bool) -> str:
        """Return a signed download link valid for ``ttl_s`` seconds of the emulator clock."""
        return self._links.url(self._host.site_url, storage_key, name, ttl_s, download)
