"""Emulated S3-family object storages with presigned multipart URLs: COS, OSS and OBS.

The three differ in what their presigned URLs bind, in what the complete request carries and in
who tells Cloudreve that the object is whole (:class:`Dialect`):

* ``cos``: part URLs bind ``Content-Type: application/octet-stream`` and the exact
  ``Content-Length``; the complete URL binds ``x-cos-forbid-overwrite: true`` (so a complete
  without it fails the signature); the client then calls ``GET /callback/cos/...`` itself.
* ``oss``: the complete POST has an empty body and binds ``x-oss-forbid-overwrite: true`` and
  ``x-oss-complete-all: yes`` (OSS takes every uploaded part); OSS calls the server back with
  the stored size, and answers ``203 CallbackFailed`` when the server refuses it.
* ``obs``: part URLs bind the type and length; the complete POST carries the XML part list with
  ``Content-Type: application/octet-stream`` (what the signed URL binds); OBS calls back. A
  client ``POST /callback/obs/...`` is accepted as well (contract 12.4). Cloudreve checks no
  size for OBS: either callback completes the upload at its declared size.

A request whose method, path, query or bound headers differ from what was signed gets
``403 SignatureDoesNotMatch``; one after the URL's expiry (emulator clock) gets
``403 AccessDenied``; everything answers in the storage's XML error format.
"""

from __future__ import annotations

import json
import mimetypes
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

import structlog
from aiohttp import web

from emulator.policies._common import (
    BlobDir,
    BodyIncomplete,
    Clock,
    DiskBlobs,
    MultipartStore,
    MultipartUpload,
    PartOrderError,
    Signer,
    UploadGone,
    chunk_lengths,
    multipart_etag,
    scratch_dir,
    serve_blob,
    session_chunk_size,
    xml_error,
)
from emulator.policy import CallbackFailed, SessionCredentials, UploadHost, UploadSessionInfo

log = structlog.get_logger()

OCTET = "application/octet-stream"
MAX_COMPLETE_BODY = 1 << 20
"""Largest complete-request XML accepted (10000 parts fit in well under this)."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one S3-family storage signs, requires and does on completion."""

    type: str
    min_part: int
    """Smallest size of a non-final part, checked on completion (``EntityTooSmall``)."""
    part_headers: tuple[str, ...]
    """Request headers the part URLs bind (lower case)."""
    complete_headers: Mapping[str, str]
    """Headers (lower case) and values the complete URL binds."""
    complete_all: bool
    """The complete POST has no body and means "all uploaded parts" (OSS)."""
    storage_callback: bool
    """The storage calls Cloudreve back on completion (OSS, OBS)."""
    client_callback: bool
    """A client callback is accepted (COS; OBS per contract 12.4)."""
    exists_code: str
    """Error code when ``forbid-overwrite`` meets an existing object."""
    checks_size: bool
    """Cloudreve compares the stored size with the declared one on completion (not for OBS)."""
    expires_param: str
    signature_param: str
    access_key_param: str


COS = Dialect(
    type="cos",
    min_part=1 << 20,
    part_headers=("content-length", "content-type"),
    complete_headers={"x-cos-forbid-overwrite": "true"},
    complete_all=False,
    storage_callback=False,
    client_callback=True,
    exists_code="PathConflict",
    checks_size=True,
    expires_param="q-sign-time",
    signature_param="q-signature",
    access_key_param="q-ak",
)
OSS = Dialect(
    type="oss",
    min_part=100 << 10,
    part_headers=("content-type",),
    complete_headers={
        "content-type": OCTET,
        "x-oss-complete-all": "yes",
        "x-oss-forbid-overwrite": "true",
    },
    complete_all=True,
    storage_callback=True,
    client_callback=False,
    exists_code="FileAlreadyExists",
    checks_size=True,
    expires_param="Expires",
    signature_param="Signature",
    access_key_param="OSSAccessKeyId",
)
OBS = Dialect(
    type="obs",
    min_part=100 << 10,
    part_headers=("content-length", "content-type"),
    complete_headers={"content-type": OCTET},
    complete_all=False,
    storage_callback=True,
    client_callback=True,
    exists_code="ObjectAlreadyExists",
    checks_size=False,
    expires_param="Expires",
    signature_param="Signature",
    access_key_param="AccessKeyId",
)


@dataclass(frozen=True, slots=True)
class _SignedRequest:
    """The parts of an incoming request a signature covers."""

    method: str
    path: str
    params: dict[str, str]
    signature: str
    expires: int
    headers: dict[str, str] = field(default_factory=dict)


class ObjectStoreDriver(DiskBlobs):
    """A :class:`~emulator.policy.PolicyDriver` for COS, OSS or OBS, served by the emulator."""

    DEFAULT_CHUNK: ClassVar[int] = 25 << 20

    def __init__(self, dialect: Dialect, host: UploadHost, data_dir: Path, clock: Clock) -> None:
        self.type = dialect.type
        self.dialect = dialect
        self.bucket = f"cloudreve-{dialect.type}-emulated"
        self._host = host
        self._clock = clock
        root = scratch_dir(data_dir, dialect.type)
        self.blobs = BlobDir(root / "blobs")
        self.multipart = MultipartStore(root / "uploads")
        self._signer = Signer()

    def default_chunk_size(self) -> int:
        """Return 25 MiB, the Cloudreve default for COS, OSS and OBS."""
        return self.DEFAULT_CHUNK

    # -- credentials --------------------------------------------------------------------------

    def _object_path(self, key: str) -> str:
        return f"/storage/{self.type}/{self.bucket}/{key}"

    def _presign(
        self, method: str, key: str, params: dict[str, str], headers: Mapping[str, str], exp: int
    ) -> str:
        """Return a signed URL for ``method`` on ``key`` binding ``params`` and ``headers``."""
        d = self.dialect
        params = dict(params)
        url_params = ";".join(sorted(k.lower() for k in params))
        params[d.access_key_param] = self._signer.access_key
        if d.type == "cos":
            now = int(self._clock())
            params["q-url-param-list"] = url_params
            params["q-sign-algorithm"] = "sha1"
            params["q-sign-time"] = params["q-key-time"] = f"{now};{exp}"
            params["q-header-list"] = ";".join(sorted(headers))
        else:
            params[d.expires_param] = str(exp)
        params[d.signature_param] = self._signer.sign(
            method, self._object_path(key), params, headers
        )
        base = self._host.site_url + quote(self._object_path(key))

        return f"{base}?{urlencode(params)}"

    async def open_session(self, session: UploadSessionInfo) -> SessionCredentials:
        """Start a multipart upload and sign one URL per chunk plus the complete URL."""
        mime = session.mime_type or mimetypes.guess_type(session.uri)[0] or OCTET
        upload_id = self.multipart.create(
            session.storage_key, session.session_id, session.size, session.expires, mime
        )
        chunk = session_chunk_size(session.chunk_size, self.DEFAULT_CHUNK)
        urls = []
        for index, length in enumerate(chunk_lengths(session.size, chunk)):
            bound = {"content-type": OCTET, "content-length": str(length)}
            headers = {h: bound[h] for h in self.dialect.part_headers}
            params = {"partNumber": str(index + 1), "uploadId": upload_id}
            urls.append(self._presign("PUT", session.storage_key, params, headers, session.expires))
        complete = self._presign(
            "POST",
            session.storage_key,
            {"uploadId": upload_id},
            self.dialect.complete_headers,
            session.expires,
        )

        return SessionCredentials(
            upload_id=upload_id, upload_urls=tuple(urls), complete_url=complete
        )

    async def abort_session(self, session: UploadSessionInfo) -> None:
        """Abort the multipart upload opened for the session; its parts are deleted."""
        upload = self.multipart.by_session(session.session_id)
        if upload is not None:
            await self.multipart.discard(upload.upload_id)

    async def verify_callback(self, session: UploadSessionInfo, request: web.Request) -> int:
        """Return the stored object's size for a client callback.

        OBS is the exception: Cloudreve's OBS driver does not look at the object, so a callback
        there completes the upload at its declared size whatever was stored.

        Raises:
            CallbackFailed: the object is not complete yet (-1), or this storage calls back
                itself and the request did not come from it (-1).
        """
        if not self.dialect.client_callback:
            raise CallbackFailed(-1, "Failed to verify callback request.")
        size = self.blobs.size(session.storage_key)
        if not self.dialect.checks_size:
            # Cloudreve's OBS driver checks nothing on completion: a callback completes the
            # file at its declared size whatever was stored, even nothing.
            if size != session.size:
                log.warning("storage_callback_unchecked", policy=self.type, stored_bytes=size)
            return session.size
        if size is not None:
            return size
        raise CallbackFailed(-1, "failed to get uploaded file size: NoSuchKey")

    async def download_url(self, storage_key: str, name: str, ttl_s: int, download: bool) -> str:
        """Return a presigned GET URL for the blob, valid for ``ttl_s`` seconds."""
        kind = "attachment" if download else "inline"
        params = {
            "response-content-disposition": f"{kind}; filename*=UTF-8''{quote(name, safe='')}"
        }
        exp = int(self._clock()) + ttl_s

        return self._presign("GET", storage_key, params, {}, exp)

    def routes(self) -> Iterable[web.AbstractRouteDef]:
        """Serve the bucket under ``/storage/<type>/<bucket>/<key>``."""
        return [web.route("*", f"/storage/{self.type}/{{bucket}}/{{key:.+}}", self._handle)]

    # -- storage endpoint ---------------------------------------------------------------------

    def _read_signed(self, request: web.Request) -> _SignedRequest | web.Response:
        d = self.dialect
        params = dict(request.query)
        signature = params.pop(d.signature_param, "")
        if not signature:
            return xml_error(403, "AccessDenied", "Anonymous access is forbidden.")
        raw_exp = params.get(d.expires_param, "")
        raw_exp = raw_exp.rpartition(";")[2]
        if not raw_exp.isdigit():
            return xml_error(403, "AccessDenied", "Invalid expiry in the request.")
        if "partNumber" in params:
            names: Iterable[str] = d.part_headers
        elif "uploadId" in params:
            names = d.complete_headers
        else:
            names = ()
        headers = {h: request.headers.get(h, "") for h in names}
        if request.content_length is not None and "content-length" in headers:
            headers["content-length"] = str(request.content_length)

        return _SignedRequest(
            request.method, request.path, params, signature, int(raw_exp), headers
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["bucket"] != self.bucket:
            return xml_error(404, "NoSuchBucket", "The specified bucket does not exist.")
        signed = self._read_signed(request)
        if isinstance(signed, web.Response):
            return signed
        if not self._signer.check(
            signed.signature, signed.method, signed.path, signed.params, signed.headers
        ):
            return xml_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        if self._clock() > signed.expires:
            return xml_error(403, "AccessDenied", "Request has expired")

        key = request.match_info["key"]
        query = request.query
        if request.method == "PUT" and "partNumber" in query and "uploadId" in query:
            return await self._upload_part(request, key)
        if request.method == "POST" and "uploadId" in query:
            return await self._complete(request, key)
        if request.method in ("GET", "HEAD") and "uploadId" not in query:
            return self._get_object(request, key)

        return xml_error(405, "MethodNotAllowed", "The specified method is not allowed.")

    def _upload_of(self, request: web.Request, key: str) -> MultipartUpload | None:
        upload = self.multipart.uploads.get(request.query["uploadId"])
        if upload is None or upload.key != key:
            return None

        return upload

    async def _upload_part(self, request: web.Request, key: str) -> web.StreamResponse:
        upload = self._upload_of(request, key)
        if upload is None:
            return xml_error(404, "NoSuchUpload", "The specified upload does not exist.")
        raw = request.query["partNumber"]
        if not raw.isdigit() or not 1 <= int(raw) <= 10000:
            return xml_error(400, "InvalidArgument", "Part number must be between 1 and 10000.")
        if request.content_length is None:
            return xml_error(411, "MissingContentLength", "You must provide the Content-Length.")
        try:
            part = await self.multipart.put_part(upload, int(raw), request)
        except UploadGone:
            return xml_error(404, "NoSuchUpload", "The specified upload does not exist.")
        except BodyIncomplete as exc:
            return xml_error(400, "IncompleteBody", str(exc))
        log.debug("storage_part_stored", policy=self.type, part=part.number, size_bytes=part.size)

        return web.Response(status=200, headers={"ETag": f'"{part.etag}"'})

    async def _complete(self, request: web.Request, key: str) -> web.StreamResponse:
        upload = self._upload_of(request, key)
        if upload is None:
            return xml_error(404, "NoSuchUpload", "The specified upload does not exist.")
        listed = await self._listed_parts(request)
        if isinstance(listed, web.Response):
            return listed
        try:
            parts = self.multipart.select(upload, listed, self.dialect.min_part)
        except PartOrderError as exc:
            return xml_error(400, exc.code, exc.message)
        forbid = any(h.endswith("forbid-overwrite") for h in self.dialect.complete_headers)
        if forbid and self.blobs.size(key) is not None:
            return xml_error(409, self.dialect.exists_code, "The object already exists.")

        assembled = await self.multipart.assemble(upload, parts)
        await self.blobs.commit(key, assembled, upload.mime)
        await self.multipart.remove_files(upload)
        size = sum(p.size for p in parts)
        etag = multipart_etag(parts)
        log.debug("storage_upload_completed", policy=self.type, size_bytes=size)
        if self.dialect.storage_callback:
            return await self._call_back(upload, size, etag)

        return self._complete_result(key, etag)

    async def _listed_parts(
        self, request: web.Request
    ) -> list[tuple[int, str]] | web.Response | None:
        """Return the (number, ETag) pairs of the complete body, None for "all parts"."""
        body = await request.content.read(MAX_COMPLETE_BODY + 1)
        if len(body) > MAX_COMPLETE_BODY:
            return xml_error(400, "EntityTooLarge", "The complete request body is too large.")
        if self.dialect.complete_all:
            if body.strip():
                return xml_error(
                    400,
                    "InvalidArgument",
                    "Should not speficy both complete-all header and http body.",
                )
            return None
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return xml_error(400, "MalformedXML", "The XML you provided was not well-formed.")
        listed: list[tuple[int, str]] = []
        for part in (el for el in root.iter() if el.tag.rpartition("}")[2] == "Part"):
            fields = {child.tag.rpartition("}")[2]: (child.text or "") for child in part}
            number = fields.get("PartNumber", "").strip()
            if not number.isdigit():
                return xml_error(400, "MalformedXML", "The XML you provided was not well-formed.")
            listed.append((int(number), fields.get("ETag", "").strip()))

        return listed

    async def _call_back(self, upload: MultipartUpload, size: int, etag: str) -> web.Response:
        """Tell the server the object is whole, as OSS and OBS do, and relay its answer.

        OSS reports the stored size, which Cloudreve checks; OBS's callback is not checked,
        so the upload completes at its declared size.
        """
        reported = size if self.dialect.checks_size else upload.size
        try:
            await self._host.complete_upload(upload.session_id, reported)
        except CallbackFailed as exc:
            log.warning("storage_callback_failed", policy=self.type, api_code=exc.code)
            # The object stays stored; the storage reports the failed callback to the client.
            return xml_error(203, "CallbackFailed", f"Response body is not valid: {exc.msg}")

        return web.Response(
            text=json.dumps({"code": 0, "msg": ""}),
            content_type="application/json",
            headers={"ETag": etag},
        )

    def _complete_result(self, key: str, etag: str) -> web.Response:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<CompleteMultipartUploadResult>'
            f"<Location>{self._host.site_url}{quote(self._object_path(key))}</Location>"
            f"<Bucket>{self.bucket}</Bucket><Key>{escape(key)}</Key><ETag>{etag}</ETag>"
            "</CompleteMultipartUploadResult>"
        )

        return web.Response(text=body, content_type="application/xml")

    def _get_object(self, request: web.Request, key: str) -> web.StreamResponse:
        disposition = request.query.get("response-content-disposition", "")
        try:
            response = serve_blob(request, self.blobs, key, "", False)
        except FileNotFoundError:
            return xml_error(404, "NoSuchKey", "The specified key does not exist.")
        if disposition:
            response.headers["Content-Disposition"] = disposition

        return response
