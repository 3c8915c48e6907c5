"""S3 and KS3 policies, backed by a real S3 implementation: moto's threaded server.

moto serves the multipart upload itself (parts, ETags, ``InvalidPart``, ``EntityTooSmall``,
the final object). The emulator puts a proxy in front of it, under ``/storage/<type>/``, for three
reasons: moto accepts any signature and never expires a presigned URL (contract 11.1), and the
emulator's own fault injection must apply to part uploads. The proxy therefore

* answers ``403 SignatureDoesNotMatch`` unless method, path and query are exactly those of a URL
  this driver presigned (the signature covers them on real S3), and for KS3 unless part and
  complete requests carry ``Content-Type: application/octet-stream`` (KS3 signs it);
* answers ``403 AccessDenied`` / ``Request has expired`` once the URL's expiry (the session's
  ``expires``, or the download TTL) lies behind the emulator clock; ``X-Amz-Expires`` carries the
  same remaining lifetime for clients that read it;
* answers ``411 MissingContentLength`` to a part PUT without a length, as S3 does;
* forwards everything else to moto, streaming the body both ways.

Limit: moto assembles a completed multipart object in memory, so completing an object needs
about its size in free RAM; the emulator's own storages (cos, oss, obs, qiniu, onedrive, upyun)
stream to disk instead.

Workaround: moto fails a complete POST whose body is typed ``x-www-form-urlencoded`` (the
default of some HTTP clients) with HTTP 500, where S3 ignores the type; the proxy hands moto the
body as ``application/xml`` so that the S3 behaviour shows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

import aiohttp
import anyio
import boto3
import structlog
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer
from yarl import URL

from emulator.policies._common import (
    READ_BLOCK,
    Clock,
    chunk_lengths,
    scratch_dir,
    session_chunk_size,
    xml_error,
)
from emulator.policy import CallbackFailed, SessionCredentials, UploadHost, UploadSessionInfo

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = structlog.get_logger()

OCTET = "application/octet-stream"
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "trailer"}
    | {"proxy-authorization", "proxy-authenticate"}
)


class MotoS3:
    """A moto S3 server on a loopback port and a boto3 client for it, for one emulator run."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""
        self._client: S3Client | None = None

    @property
    def client(self) -> S3Client:
        """The boto3 client; only valid between :meth:`start` and :meth:`stop`."""
        if self._client is None:
            raise RuntimeError("moto S3 server is not running")
        return self._client

    async def start(self) -> None:
        """Start the server thread and create the client."""
        # moto's request handler logs every request line through werkzeug at INFO, and the
        # proxied request lines carry presigned signatures: keep them out of the logs.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        await anyio.to_thread.run_sync(self._server.start)
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self._client = await anyio.to_thread.run_sync(self._make_client)
        log.debug("moto_started", endpoint=self.endpoint)

    def _make_client(self) -> S3Client:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="emulator",
            aws_secret_access_key="emulator-secret",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    async def stop(self) -> None:
        """Stop the server, close its listening socket and join its thread."""
        if self._client is not None:
            self._client.close()
            self._client = None
        await anyio.to_thread.run_sync(self._server.stop)
        # Workaround: ThreadedMotoServer.stop() shuts the server down but never closes its
        # listening socket, which would leak (a ResourceWarning) until garbage collection.
        server = self._server._server
        if server is not None:
            server.server_close()
        log.debug("moto_stopped", endpoint=self.endpoint)

    async def call(self, fn: Any, /, **kwargs: Any) -> Any:
        """Run one blocking boto3 call in a worker thread."""
        return await anyio.to_thread.run_sync(partial(fn, **kwargs))


@dataclass(frozen=True, slots=True)
class _Issued:
    """What a presigned URL signed: the proxy accepts only this exact request."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    content_type: str = ""
    """The Content-Type the URL binds; empty when it binds none."""


class S3Driver:
    """A :class:`~emulator.policy.PolicyDriver` for ``s3`` or ``ks3`` over moto."""

    DEFAULT_CHUNK: ClassVar[int] = 25 << 20

    def __init__(
        self,
        policy_type: str,
        moto: MotoS3,
        host: UploadHost,
        http: aiohttp.ClientSession,
        clock: Clock,
        data_dir: Path,
    ) -> None:
        self.type = policy_type
        self.bucket = f"cloudreve-{policy_type}-{secrets.token_hex(4)}"
        # Cloudreve's KS3 driver presigns with ContentType application/octet-stream, which KS3
        # signs: its part and complete requests must carry exactly that type. S3's URLs do not.
        self._binds_type = policy_type == "ks3"
        self._moto = moto
        self._host = host
        self._http = http
        self._clock = clock
        self._prefix = f"/storage/{policy_type}"
        self._issued: dict[str, _Issued] = {}
        self._issued_expiry: dict[str, float] = {}
        self._uploads: dict[str, tuple[str, str]] = {}
        """session id -> (key, upload id)."""
        self._live: set[str] = set()
        """Upload ids neither completed nor aborted; moto answers HTTP 500 for the others."""
        self._saved = scratch_dir(data_dir, policy_type) / "objects"
        """Where the objects rest while no emulator runs (moto keeps them in memory only)."""

    async def create_bucket(self) -> None:
        """Create this driver's bucket in moto and load the objects a previous run saved."""
        client = self._moto.client
        await self._moto.call(client.create_bucket, Bucket=self.bucket)
        index = anyio.Path(self._saved / "index.json")
        if not await index.is_file():
            return
        saved: dict[str, dict[str, str]] = json.loads(await index.read_text())
        for key, entry in saved.items():
            await self._moto.call(
                client.upload_file,
                Filename=str(self._saved / entry["file"]),
                Bucket=self.bucket,
                Key=key,
                ExtraArgs={"ContentType": entry["type"]},
            )
        log.debug("storage_objects_restored", policy=self.type, count=len(saved))

    async def save_objects(self) -> None:
        """Copy every object to disk, so a later run on the same data directory has them."""
        client = self._moto.client
        paginator = client.get_paginator("list_objects_v2")
        pages = await anyio.to_thread.run_sync(lambda: list(paginator.paginate(Bucket=self.bucket)))
        await anyio.Path(self._saved).mkdir(exist_ok=True)
        index: dict[str, dict[str, str]] = {}
        for obj in (o for page in pages for o in page.get("Contents", [])):
            key = obj["Key"]
            name = hashlib.sha256(key.encode()).hexdigest()
            await self.fetch_blob(key, self._saved / name)
            head = await self._moto.call(client.head_object, Bucket=self.bucket, Key=key)
            index[key] = {"file": name, "type": str(head.get("ContentType", ""))}
        kept = {"index.json"} | {e["file"] for e in index.values()}
        async for stale in anyio.Path(self._saved).iterdir():
            if stale.name not in kept:
                await stale.unlink()
        await anyio.Path(self._saved / "index.json").write_text(json.dumps(index))

    async def drop_bucket(self) -> None:
        """Abort open uploads, delete every object and the bucket (moto keeps state per process)."""
        client = self._moto.client
        listing = await self._moto.call(client.list_multipart_uploads, Bucket=self.bucket)
        for upload in listing.get("Uploads", []):
            await self._moto.call(
                client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=upload["Key"],
                UploadId=upload["UploadId"],
            )
        paginator = client.get_paginator("list_objects_v2")
        pages = await anyio.to_thread.run_sync(lambda: list(paginator.paginate(Bucket=self.bucket)))
        for page in pages:
            for obj in page.get("Contents", []):
                await self._moto.call(client.delete_object, Bucket=self.bucket, Key=obj["Key"])
        await self._moto.call(client.delete_bucket, Bucket=self.bucket)

    def default_chunk_size(self) -> int:
        """Return 25 MiB, the Cloudreve default for S3 and KS3."""
        return self.DEFAULT_CHUNK

    # -- presigning ---------------------------------------------------------------------------

    def _presign(self, operation: str, params: dict[str, Any], ttl_s: int) -> str:
        """Presign ``operation`` with boto3 and return the proxy URL for it (any thread)."""
        raw = self._moto.client.generate_presigned_url(
            operation, Params={"Bucket": self.bucket, **params}, ExpiresIn=max(1, ttl_s)
        )
        parts = urlsplit(raw)

        return f"{self._host.site_url}{self._prefix}{parts.path}?{parts.query}"

    def _register(self, method: str, raw_url: str, expires_at: float) -> str:
        """Remember what a presigned URL signed and when it expires on the emulator clock.

        botocore dates the URL by the wall clock while the emulator clock may run ahead, so the
        expiry is kept here rather than read back from ``X-Amz-Date``. Called on the event loop
        only: the proxy reads the same tables there.
        """
        url = URL(raw_url, encoded=True)
        signature = url.query["X-Amz-Signature"]
        bound = OCTET if self._binds_type and method in ("PUT", "POST") else ""
        self._issued[signature] = _Issued(method, url.path, tuple(sorted(url.query.items())), bound)
        self._issued_expiry[signature] = expires_at

        return raw_url

    def _presign_session(self, session: UploadSessionInfo, upload_id: str) -> SessionCredentials:
        ttl = int(session.expires - self._clock())
        chunk = session_chunk_size(session.chunk_size, self.DEFAULT_CHUNK)
        common = {"Key": session.storage_key, "UploadId": upload_id}
        urls = tuple(
            self._presign("upload_part", {**common, "PartNumber": index + 1}, ttl)
            for index in range(len(chunk_lengths(session.size, chunk)))
        )
        complete = self._presign("complete_multipart_upload", common, ttl)

        return SessionCredentials(upload_id=upload_id, upload_urls=urls, complete_url=complete)

    def _forget_expired(self) -> None:
        """Drop presigned URLs that expired a day ago; they are refused as unknown from then on."""
        horizon = self._clock() - 86400
        for signature in [s for s, at in self._issued_expiry.items() if at < horizon]:
            del self._issued[signature], self._issued_expiry[signature]

    async def open_session(self, session: UploadSessionInfo) -> SessionCredentials:
        """Create the multipart upload and presign one part URL per chunk and the complete URL."""
        self._forget_expired()
        mime = session.mime_type or mimetypes.guess_type(session.uri)[0] or "binary/octet-stream"
        created = await self._moto.call(
            self._moto.client.create_multipart_upload,
            Bucket=self.bucket,
            Key=session.storage_key,
            ContentType=mime,
        )
        upload_id = str(created["UploadId"])
        self._uploads[session.session_id] = (session.storage_key, upload_id)
        self._live.add(upload_id)

        creds = await anyio.to_thread.run_sync(self._presign_session, session, upload_id)
        for url in creds.upload_urls:
            self._register("PUT", url, session.expires)
        self._register("POST", creds.complete_url, session.expires)

        return creds

    async def abort_session(self, session: UploadSessionInfo) -> None:
        """Abort the session's multipart upload; one already gone is not an error."""
        entry = self._uploads.pop(session.session_id, None)
        if entry is None:
            return
        key, upload_id = entry
        self._live.discard(upload_id)
        try:
            await self._moto.call(
                self._moto.client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
            )
        except ClientError as exc:
            if _error_code(exc) != "NoSuchUpload":
                raise

    async def verify_callback(self, session: UploadSessionInfo, request: web.Request) -> int:
        """HEAD the object and return its size.

        Raises:
            CallbackFailed: the object does not exist (the upload was not completed).
        """
        try:
            head = await self._moto.call(
                self._moto.client.head_object, Bucket=self.bucket, Key=session.storage_key
            )
        except ClientError as exc:
            raise CallbackFailed(
                -1, f"failed to get uploaded file size: {_error_code(exc)}"
            ) from exc
        self._uploads.pop(session.session_id, None)

        return int(head["ContentLength"])

    async def download_url(self, storage_key: str, name: str, ttl_s: int, download: bool) -> str:
        """Presign a GET of the object (through the proxy) valid for ``ttl_s`` seconds."""
        kind = "attachment" if download else "inline"
        params = {
            "Key": storage_key,
            "ResponseContentDisposition": f"{kind}; filename*=UTF-8''{quote(name, safe='')}",
        }

        url = await anyio.to_thread.run_sync(self._presign, "get_object", params, ttl_s)

        return self._register("GET", url, self._clock() + ttl_s)

    async def put_blob(self, storage_key: str, src: Path) -> None:
        """Upload a local file as the object ``storage_key``."""
        await self._moto.call(
            self._moto.client.upload_file, Filename=str(src), Bucket=self.bucket, Key=storage_key
        )

    async def fetch_blob(self, storage_key: str, dst: Path) -> None:
        """Download the object into ``dst``.

        Raises:
            FileNotFoundError: the object does not exist.
        """
        try:
            await self._moto.call(
                self._moto.client.download_file,
                Bucket=self.bucket,
                Key=storage_key,
                Filename=str(dst),
            )
        except ClientError as exc:
            raise FileNotFoundError(storage_key) from exc

    async def delete_blob(self, storage_key: str) -> None:
        """Delete the object; S3 treats a missing key as deleted."""
        await self._moto.call(self._moto.client.delete_object, Bucket=self.bucket, Key=storage_key)

    def routes(self) -> Iterable[web.AbstractRouteDef]:
        """Serve the presigning proxy under ``/storage/<type>/``."""
        return [web.route("*", self._prefix + "/{tail:.*}", self._proxy)]

    # -- proxy --------------------------------------------------------------------------------

    def _refuse(self, request: web.Request) -> web.Response | None:
        """Return the S3 error for a request moto must not see, or None to forward it."""
        signature = request.query.get("X-Amz-Signature", "")
        if not signature:
            return xml_error(403, "AccessDenied", "Access Denied")
        issued = self._issued.get(signature)
        sent_type = (
            request.headers.get("Content-Type", "") if issued and issued.content_type else ""
        )
        if issued is None or issued != _Issued(
            request.method, request.path, tuple(sorted(request.query.items())), sent_type
        ):
            return xml_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
            )
        expires_at = self._issued_expiry[signature]
        if self._clock() > expires_at:
            return xml_error(
                403,
                "AccessDenied",
                "Request has expired",
                Expires=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at)),
                ServerTime=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock())),
            )
        upload_id = request.query.get("uploadId")
        if upload_id is not None and upload_id not in self._live:
            return xml_error(
                404,
                "NoSuchUpload",
                "The specified upload does not exist. The upload ID may be invalid, or the "
                "upload may have been aborted or completed.",
                UploadId=upload_id,
            )
        if request.method == "PUT" and request.content_length is None:
            return xml_error(
                411, "MissingContentLength", "You must provide the Content-Length HTTP header."
            )

        return None

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refuse(request)
        if refusal is not None:
            return refusal
        target = URL(self._moto.endpoint + request.raw_path[len(self._prefix) :], encoded=True)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if request.method == "POST" and "uploadId" in request.query:
            headers["Content-Type"] = "application/xml"
        body = request.content.iter_chunked(READ_BLOCK) if request.body_exists else None
        async with self._http.request(
            request.method, target, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            if request.method == "POST" and upstream.status == 200:
                self._live.discard(request.query.get("uploadId", ""))
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            if request.method != "HEAD":
                async for block in upstream.content.iter_chunked(READ_BLOCK):
                    await response.write(block)
            await response.write_eof()

        return response


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))
