"""Qiniu policy: Qiniu's resumable upload v2 (multipart) with an upload token, served locally.

Cloudreve initiates the multipart upload and hands the client ``upload_urls[0]``
(``.../buckets/<bucket>/objects/<base64 key>/uploads/<upload id>``), an upload token as
``credential`` and the ``mime_type``. The client

* PUTs each part to ``{upload_urls[0]}/{index+1}`` with ``Authorization: UpToken <token>``; the
  answer is ``{"etag", "md5"}``;
* POSTs ``{"parts": [{"etag", "partNumber"}], "mimeType"}`` to ``upload_urls[0]`` with the same
  header; the storage then calls Cloudreve back and relays its answer (``579`` if the callback
  fails).

The token is Qiniu's ``<ak>:<base64url HMAC-SHA1>:<base64url policy>``; its policy binds the
scope ``<bucket>:<key>``, a ``deadline`` (emulator clock) and ``fsizeLimit`` (the declared size).
Errors are Qiniu's ``{"error": "..."}`` bodies with Qiniu's status codes (401 bad or expired
token, 403 key outside the scope, 612 unknown upload id, 413 over ``fsizeLimit``, 614 object
exists).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import mimetypes
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import structlog
from aiohttp import web

from emulator.policies._common import (
    BlobDir,
    BlobLinks,
    BodyIncomplete,
    Clock,
    LinkedDiskBlobs,
    MultipartStore,
    MultipartUpload,
    PartOrderError,
    Signer,
    UploadGone,
    scratch_dir,
)
from emulator.policy import CallbackFailed, SessionCredentials, UploadHost, UploadSessionInfo

log = structlog.get_logger()

MIN_PART = 1 << 20
"""Qiniu v2: every part but the last is at least 1 MiB."""
MAX_PART = 1 << 30
MAX_COMPLETE_BODY = 4 << 20


def qiniu_error(status: int, message: str) -> web.Response:
    """Return a Qiniu error body ``{"error": message}``."""
    return web.json_response({"error": message}, status=status)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


class QiniuDriver(LinkedDiskBlobs):
    """A :class:`~emulator.policy.PolicyDriver` for ``qiniu``."""

    type = "qiniu"
    DEFAULT_CHUNK: ClassVar[int] = 25 << 20

    def __init__(self, host: UploadHost, data_dir: Path, clock: Clock) -> None:
        self.bucket = "cloudreve-qiniu-emulated"
        self._host = host
        self._clock = clock
        root = scratch_dir(data_dir, self.type)
        self.blobs = BlobDir(root / "blobs")
        self.multipart = MultipartStore(root / "uploads")
        self._keys = Signer()
        self._links = BlobLinks(self.type, self.blobs, clock, lambda s, c, m: qiniu_error(s, m))

    def default_chunk_size(self) -> int:
        """Return 25 MiB, the Cloudreve default for Qiniu."""
        return self.DEFAULT_CHUNK

    def upload_token(self, policy: dict[str, Any]) -> str:
        """Return a Qiniu upload token for ``policy``."""
        encoded = _b64(json.dumps(policy, separators=(",", ":")).encode())
        mac = hmac.new(self._keys.secret, encoded.encode(), hashlib.sha1).digest()

        return f"{self._keys.access_key}:{_b64(mac)}:{encoded}"

    async def open_session(self, session: UploadSessionInfo) -> SessionCredentials:
        """Initiate the multipart upload and hand out its URL and an upload token."""
        mime = session.mime_type or mimetypes.guess_type(session.uri)[0] or ""
        upload_id = self.multipart.create(
            session.storage_key, session.session_id, session.size, session.expires, mime
        )
        token = self.upload_token(
            {
                "scope": f"{self.bucket}:{session.storage_key}",
                "deadline": session.expires,
                "fsizeLimit": session.size,
                "saveKey": session.storage_key,
                "forceSaveKey": True,
                "callbackBodyType": "application/json",
            }
        )
        url = (
            f"{self._host.site_url}/storage/qiniu/buckets/{self.bucket}/objects/"
            f"{_b64(session.storage_key.encode())}/uploads/{upload_id}"
        )

        return SessionCredentials(
            upload_id=upload_id, upload_urls=(url,), credential=token, mime_type=mime
        )

    async def abort_session(self, session: UploadSessionInfo) -> None:
        """Abort the multipart upload opened for ``session``."""
        upload = self.multipart.by_session(session.session_id)
        if upload is not None:
            await self.multipart.discard(upload.upload_id)

    async def verify_callback(self, session: UploadSessionInfo, request: web.Request) -> int:
        """Refuse: Qiniu calls the server back itself, a client callback is a forgery.

        Raises:
            CallbackFailed: always (-1).
        """
        raise CallbackFailed(-1, "Failed to verify callback request.")

    def routes(self) -> Iterable[web.AbstractRouteDef]:
        """Serve the upload API and download links under ``/storage/qiniu/``."""
        base = "/storage/qiniu/buckets/{bucket}/objects/{okey}/uploads/{upload_id}"
        return [
            web.put(base + "/{part}", self._put_part),
            web.post(base, self._complete),
            web.delete(base, self._abort),
            web.route("*", base, _method_not_allowed),
            web.route("*", base + "/{part}", _method_not_allowed),
            self._links.route(),
        ]

    # -- storage endpoint ---------------------------------------------------------------------

    def _authorize(self, request: web.Request) -> MultipartUpload | web.Response:
        """Check the UpToken against the addressed upload; return it or Qiniu's refusal."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        ak, _, rest = token.partition(":")
        signature, _, encoded = rest.partition(":")
        expected = hmac.new(self._keys.secret, encoded.encode(), hashlib.sha1).digest()
        if (
            scheme != "UpToken"
            or ak != self._keys.access_key
            or not hmac.compare_digest(signature, _b64(expected))
        ):
            return qiniu_error(401, "bad token")
        policy = json.loads(base64.urlsafe_b64decode(encoded))
        if self._clock() > int(policy["deadline"]):
            return qiniu_error(401, "token out of date")
        try:
            key = base64.urlsafe_b64decode(request.match_info["okey"]).decode()
        except ValueError:
            return qiniu_error(400, "invalid object key")
        if request.match_info["bucket"] != self.bucket or policy["scope"] != f"{self.bucket}:{key}":
            return qiniu_error(403, "key doesn't match with scope")
        upload = self.multipart.uploads.get(request.match_info["upload_id"])
        if upload is None or upload.key != key:
            return qiniu_error(612, "no such uploadId")

        return upload

    async def _put_part(self, request: web.Request) -> web.Response:
        upload = self._authorize(request)
        if isinstance(upload, web.Response):
            return upload
        raw = request.match_info["part"]
        if not raw.isdigit() or not 1 <= int(raw) <= 10000:
            return qiniu_error(400, "invalid partNumber")
        if request.content_length is None:
            return qiniu_error(411, "Content-Length required")
        if request.content_length > MAX_PART:
            return qiniu_error(413, "part is larger than 1 GiB")
        try:
            part = await self.multipart.put_part(upload, int(raw), request)
        except UploadGone:
            return qiniu_error(612, "no such uploadId")
        except BodyIncomplete as exc:
            return qiniu_error(400, str(exc))

        return web.json_response({"etag": part.etag, "md5": part.etag})

    async def _abort(self, request: web.Request) -> web.Response:
        upload = self._authorize(request)
        if isinstance(upload, web.Response):
            return upload
        await self.multipart.discard(upload.upload_id)
        return web.json_response({})

    async def _complete(self, request: web.Request) -> web.Response:
        upload = self._authorize(request)
        if isinstance(upload, web.Response):
            return upload
        listed = await _read_parts(request)
        if isinstance(listed, web.Response):
            return listed
        mime, pairs = listed
        try:
            parts = self.multipart.select(upload, pairs, MIN_PART)
        except PartOrderError as exc:
            return qiniu_error(400, exc.message)
        size = sum(p.size for p in parts)
        if size > upload.size:
            return qiniu_error(413, "file exceeds fsizeLimit")
        if self.blobs.size(upload.key) is not None:
            return qiniu_error(614, "file exists")

        assembled = await self.multipart.assemble(upload, parts)
        await self.blobs.commit(upload.key, assembled, mime or upload.mime)
        await self.multipart.remove_files(upload)
        try:
            # Cloudreve checks only the callback's signature, never the size: fsizeLimit caps
            # the object here, and the upload completes at its declared size.
            await self._host.complete_upload(upload.session_id, upload.size)
        except CallbackFailed as exc:
            log.warning("storage_callback_failed", policy=self.type, api_code=exc.code)
            return web.json_response({"error": f"callback failed: {exc.msg}"}, status=579)

        return web.json_response({"code": 0, "msg": ""})


async def _read_parts(request: web.Request) -> tuple[str, list[tuple[int, str]]] | web.Response:
    """Parse a complete body into (mime type, [(part number, etag)])."""
    body = await request.content.read(MAX_COMPLETE_BODY + 1)
    try:
        doc = json.loads(body)
        pairs = [(int(p["partNumber"]), str(p["etag"])) for p in doc["parts"]]
        mime = str(doc.get("mimeType") or "")
    except (ValueError, KeyError, TypeError):
        return qiniu_error(400, "invalid complete request body")

    return mime, pairs


async def _method_not_allowed(request: web.Request) -> web.Response:
    return qiniu_error(405, f"method {request.method} not allowed")
