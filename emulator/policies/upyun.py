"""Upyun policy: Upyun's form API (one multipart/form-data POST), served locally.

Cloudreve hands the client ``upload_urls[0]`` (``.../storage/upyun/<bucket>``), a base64 JSON
``upload_policy`` (bucket, ``save-key``, ``expiration``, ``notify-url``, ``content-length-range``)
and a ``credential``
``UPYUN <operator>:<base64 HMAC-SHA1(md5(secret), "POST&/<bucket>&<policy>")>``.
The client sends one form with the fields ``policy``, ``authorization``, optionally
``content-type``, and ``file`` LAST: Upyun reads the form in order and refuses a form whose
``file`` field is not the last one or comes before the policy and signature.

Upyun notifies the server asynchronously (``notify-url``): the uploader gets ``200`` for a stored
file even when the notification fails. Errors are Upyun's ``{"code", "message", "id"}`` bodies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import mimetypes
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import anyio
import structlog
from aiohttp import BodyPartReader, web

from emulator.policies._common import (
    READ_BLOCK,
    BlobDir,
    BlobLinks,
    Clock,
    LinkedDiskBlobs,
    Signer,
    scratch_dir,
)
from emulator.policy import CallbackFailed, SessionCredentials, UploadHost, UploadSessionInfo

log = structlog.get_logger()

MAX_FIELD = 64 << 10
"""Largest non-file form field read (policy, signature, type)."""


def upyun_error(status: int, code: int, message: str) -> web.Response:
    """Return an Upyun error body."""
    return web.json_response(
        {"code": code, "message": message, "id": uuid.uuid4().hex}, status=status
    )


class _FormRefused(Exception):
    """Raised while reading the form; carries Upyun's answer."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


class UpyunDriver(LinkedDiskBlobs):
    """A :class:`~emulator.policy.PolicyDriver` for ``upyun``."""

    type = "upyun"
    DEFAULT_CHUNK: ClassVar[int] = 0
    """The form API takes the whole file in one request."""

    def __init__(self, host: UploadHost, data_dir: Path, clock: Clock) -> None:
        self.bucket = "cloudreve-upyun-emulated"
        self._host = host
        self._clock = clock
        root = scratch_dir(data_dir, self.type)
        self.blobs = BlobDir(root / "blobs")
        self._incoming = root / "incoming"
        self._incoming.mkdir(exist_ok=True)
        self._operator = Signer()
        self._sessions: dict[str, str] = {}
        """save-key -> session id."""
        self._links = BlobLinks(
            self.type, self.blobs, clock, lambda s, c, m: upyun_error(s, s * 100000 + 1, m)
        )

    def default_chunk_size(self) -> int:
        """Return 0: Upyun's form API sends the whole file at once."""
        return self.DEFAULT_CHUNK

    def sign(self, policy: str) -> str:
        """Return the form ``authorization`` value for the base64 ``policy``."""
        password = hashlib.md5(self._operator.secret, usedforsecurity=False).hexdigest()
        message = f"POST&/{self.bucket}&{policy}".encode()
        mac = hmac.new(password.encode(), message, hashlib.sha1).digest()

        return f"UPYUN {self._operator.access_key}:{base64.b64encode(mac).decode()}"

    async def open_session(self, session: UploadSessionInfo) -> SessionCredentials:
        """Build the form policy and its signature."""
        mime = session.mime_type or mimetypes.guess_type(session.uri)[0] or ""
        policy = {
            "bucket": self.bucket,
            "save-key": session.storage_key,
            "expiration": session.expires,
            "notify-url": (
                f"{self._host.site_url}/api/v4/callback/upyun/"
                f"{session.session_id}/{session.callback_secret}"
            ),
            "content-length": session.size,
            "content-length-range": f"0,{session.size}",
        }
        encoded = base64.b64encode(json.dumps(policy).encode()).decode()
        self._sessions[session.storage_key] = session.session_id

        return SessionCredentials(
            upload_urls=(f"{self._host.site_url}/storage/upyun/{self.bucket}",),
            credential=self.sign(encoded),
            upload_policy=encoded,
            mime_type=mime,
        )

    async def abort_session(self, session: UploadSessionInfo) -> None:
        """Forget the session: a later form upload for it is no longer announced."""
        self._sessions.pop(session.storage_key, None)

    async def verify_callback(self, session: UploadSessionInfo, request: web.Request) -> int:
        """Refuse: Upyun notifies the server itself, a client callback is a forgery.

        Raises:
            CallbackFailed: always (-1).
        """
        raise CallbackFailed(-1, "Failed to verify callback request.")

    def routes(self) -> Iterable[web.AbstractRouteDef]:
        """Serve the form API and download links under ``/storage/upyun/``."""
        return [
            web.post("/storage/upyun/{bucket}", self._form),
            web.route("*", "/storage/upyun/{bucket}", _method_not_allowed),
            self._links.route(),
        ]

    # -- storage endpoint ---------------------------------------------------------------------

    def _policy(self, fields: dict[str, str]) -> dict[str, Any]:
        """Verify the signature and the policy's bucket and expiry; return the policy.

        Raises:
            _FormRefused: the form lacks them, the signature is wrong or the policy expired.
        """
        policy, signature = fields.get("policy"), fields.get("authorization")
        if policy is None or signature is None:
            raise _FormRefused(upyun_error(401, 40100002, "need policy and authorization"))
        if not hmac.compare_digest(signature, self.sign(policy)):
            raise _FormRefused(upyun_error(401, 40100005, "signature error"))
        doc: dict[str, Any] = json.loads(base64.b64decode(policy))
        if doc.get("bucket") != self.bucket:
            raise _FormRefused(upyun_error(403, 40300003, "bucket not match"))
        if self._clock() > int(doc["expiration"]):
            raise _FormRefused(upyun_error(403, 40300011, "policy has expired"))

        return doc

    async def _save_file(self, part: BodyPartReader, limit: int) -> Path:
        """Stream the ``file`` field to disk, refusing more than ``limit`` bytes."""
        dst = self._incoming / uuid.uuid4().hex
        received = 0
        async with await anyio.open_file(dst, "wb") as out:
            while block := await part.read_chunk(READ_BLOCK):
                received += len(block)
                if received > limit:
                    await out.aclose()
                    await anyio.Path(dst).unlink()
                    raise _FormRefused(upyun_error(400, 40000027, "file size too large"))
                await out.write(block)

        return dst

    async def _read_form(self, request: web.Request) -> tuple[dict[str, Any], str, Path]:
        """Read the form in order; return (policy, content type, received file)."""
        if not request.content_type.startswith("multipart/form-data"):
            raise _FormRefused(upyun_error(400, 40000001, "need multipart/form-data"))
        reader = await request.multipart()
        fields: dict[str, str] = {}
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise _FormRefused(upyun_error(400, 40000001, "nested forms are not accepted"))
            if part.name != "file":
                fields[part.name or ""] = await _read_field(part)
                continue
            policy = self._policy(fields)
            low, _, high = str(policy.get("content-length-range", "0,")).partition(",")
            limit = int(high) if high else 1 << 62
            saved = await self._save_file(part, limit)
            if await reader.next() is not None:
                await anyio.Path(saved).unlink()
                raise _FormRefused(upyun_error(400, 40000008, "file must be the last form field"))
            if (await anyio.Path(saved).stat()).st_size < int(low or 0):
                await anyio.Path(saved).unlink()
                raise _FormRefused(upyun_error(400, 40000026, "file size too small"))
            return policy, fields.get("content-type", ""), saved

        raise _FormRefused(upyun_error(400, 40000004, "form lacks the file field"))

    async def _form(self, request: web.Request) -> web.Response:
        if request.match_info["bucket"] != self.bucket:
            return upyun_error(404, 40400001, "bucket not found")
        try:
            policy, mime, saved = await self._read_form(request)
        except _FormRefused as refused:
            return refused.response
        key = str(policy["save-key"])
        size = (await anyio.Path(saved).stat()).st_size
        await self.blobs.commit(key, saved, mime)
        await self._notify(key, int(policy["content-length"]))

        return web.json_response(
            {
                "code": 200,
                "message": "ok",
                "url": "/" + key,
                "time": int(time.time()),
                "file_size": size,
                "mimetype": self.blobs.mime(key),
            }
        )

    async def _notify(self, key: str, declared: int) -> None:
        """Tell the server about the stored file, as Upyun's ``notify-url`` does.

        Cloudreve checks only the notification's signature, never the size: the policy allows
        any size up to the declared one, and the upload completes at the declared size.
        """
        session_id = self._sessions.pop(key, None)
        if session_id is None:
            log.warning("storage_notify_skipped", policy=self.type, reason="no live session")
            return
        try:
            await self._host.complete_upload(session_id, declared)
        except CallbackFailed as exc:
            # Upyun's notification is asynchronous: the uploader is not told it failed.
            log.warning("storage_callback_failed", policy=self.type, api_code=exc.code)


async def _read_field(part: BodyPartReader) -> str:
    """Read a small form field.

    ``BodyPartReader.read`` is not used: it enforces the app's ``client_max_size``, which the
    emulator sets to 0 because bodies stream.
    """
    data = bytearray()
    while block := await part.read_chunk(MAX_FIELD):
        data += block
        if len(data) > MAX_FIELD:
            raise _FormRefused(upyun_error(400, 40000001, f"form field {part.name} is too large"))

    return data.decode(errors="replace")


async def _method_not_allowed(request: web.Request) -> web.Response:
    return upyun_error(405, 40500001, f"method {request.method} not allowed")
