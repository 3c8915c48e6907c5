"""DriveClient: one Cloudreve v4 remote, its HTTP sessions, its tokens, one method per endpoint.

The client owns two aiohttp sessions. ``api`` talks to ``<url>/api/v4`` and carries the
``Authorization`` header; ``storage`` fetches presigned URLs and content links and carries no
token and no cookies, so our credentials never reach a storage host. Every request goes through
the :class:`~transfer.pacer.Pacer`. aiohttp exceptions become :class:`NetworkError` in one place
(:meth:`DriveClient._exchange`); answers become typed values or errors in :mod:`transfer.api`.

Auth (contract 2): password sign-in, 2FA with a TOTP secret, a refresh before the access token
has less than ten minutes (or less than the expected chunk duration) left, and a refresh on the
anonymous symptoms (``401``, or ``40011`` on a chunk upload) followed by one replay. Refreshes
are single-flight: workers that saw the same stale token cause one refresh. A rejected refresh
token (``40020``) leads to a new sign-in with the stored password. Tokens are cached in a file
with mode 0600. The client knows nothing of local files, jobs or SQLite.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
import anyio
import pyotp
import structlog
from yarl import URL

from transfer.api import (
    CODE_2FA_REQUIRED,
    Capacity,
    EntityInfo,
    ListPage,
    Token,
    UploadSession,
    UrlBatch,
    decode_response,
    parse_capacity,
    parse_entities,
    parse_entry,
    parse_list_page,
    parse_token,
    parse_upload_session,
    parse_url_batch,
)
from transfer.backend import RemoteEntry
from transfer.config import RemoteConfig
from transfer.errors import (
    ApiError,
    AuthError,
    FerryError,
    NetworkError,
    SessionExpired,
)
from transfer.pacer import Pacer

__all__ = ["DriveClient", "HttpAnswer", "StreamAnswer", "network_errors"]

log = structlog.get_logger()

_REFRESH_MARGIN_S = 600.0
_CALLBACK_GET = frozenset({"s3", "ks3", "cos"})
_CONNECT_TIMEOUT_S = 30.0
_READ_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A complete HTTP answer: status, headers and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@contextmanager
def network_errors(method: str, url: str) -> Iterator[None]:
    """Convert aiohttp and socket failures into :class:`NetworkError` (the one place we do)."""
    try:
        yield
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise NetworkError(f"{type(exc).__name__}: {exc}", method, _strip_query(url)) from exc


class StreamAnswer:
    """An HTTP answer whose body is read in blocks; read errors become NetworkError."""

    def __init__(self, resp: aiohttp.ClientResponse, method: str, url: str) -> None:
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self._resp = resp
        self._method = method
        self._url = url

    async def blocks(self, size: int = 1 << 18) -> AsyncIterator[bytes]:
        """Yield the body in blocks of at most ``size`` bytes."""
        with network_errors(self._method, self._url):
            async for block in self._resp.content.iter_chunked(size):
                yield block

    async def read(self) -> bytes:
        """Read the whole (small) body."""
        parts = [block async for block in self.blocks()]
        return b"".join(parts)


def _strip_query(url: str) -> str:
    """The URL as it may appear in logs and errors: no query (signatures), no callback secret."""
    base = url.split("?", 1)[0]
    if "/callback/" in base:
        base = base.rsplit("/", 1)[0] + "/***"
    return base


class _ClientTotp(pyotp.TOTP):
    """TOTP that accepts any secret length: the server issued the secret, the client cannot
    choose a stronger one, so pyotp's 112-bit minimum for new secrets does not apply."""

    min_secret_length_bits = 0


def _normalise_totp_secret(secret: str) -> str:
    """Return ``secret`` as authenticator apps accept it: no spaces or dashes, upper case."""
    return "".join(secret.split()).replace("-", "").upper()


class DriveClient:
    """The API of one Cloudreve v4 remote; use as ``async with DriveClient(...) as client``.

    Args:
        remote: where the drive is and how to sign in.
        token_cache: file that keeps the tokens between runs (created with mode 0600).
        pacer: shared pacing and retry policy for every request of this remote.
        clock: local unix time; server time is derived from it and the ``Date`` headers seen.
    """

    def __init__(
        self,
        remote: RemoteConfig,
        *,
        token_cache: Path,
        pacer: Pacer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.remote = remote
        self.pacer = pacer
        self.token_cache = token_cache
        self._clock = clock
        self._auth_pacer = pacer.sibling()
        self._api: aiohttp.ClientSession | None = None
        self._storage: aiohttp.ClientSession | None = None
        self._token: Token | None = None
        self._token_received = 0.0
        self._generation = 0
        self._auth_lock = anyio.Lock()
        self._auth_failure: tuple[int, AuthError] | None = None
        self._renew_failures = 0
        self._renew_error: FerryError | None = None
        self._skew_s = 0.0
        self._skew_from_token = False
        self.expected_call_s = 0.0
        self.refreshes = 0
        self.sign_ins = 0

    async def __aenter__(self) -> Self:
        self._api = aiohttp.ClientSession(
            connector=self._connector(),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=self._timeout(),
        )
        self._storage = aiohttp.ClientSession(
            connector=self._connector(),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=self._timeout(),
        )
        self._token = self._load_cached_token()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            for session in (self._api, self._storage):
                if session is not None:
                    await session.close()
        self._api = self._storage = None

    def _connector(self) -> aiohttp.TCPConnector:
        ssl_arg: ssl.SSLContext | bool = True
        if not self.remote.verify_tls:
            ssl_arg = False
        elif self.remote.ca_bundle is not None:
            ssl_arg = ssl.create_default_context(cafile=str(self.remote.ca_bundle))
        return aiohttp.TCPConnector(limit=max(16, self.pacer.config.max_open * 2), ssl=ssl_arg)

    @staticmethod
    def _timeout() -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None, sock_connect=_CONNECT_TIMEOUT_S, sock_read=_READ_TIMEOUT_S
        )

    @property
    def storage_http(self) -> aiohttp.ClientSession:
        """The session for storage hosts and content links: no token, no cookies."""
        if self._storage is None:
            raise RuntimeError("DriveClient used outside 'async with'")
        return self._storage

    def server_time(self) -> float:
        """Unix seconds on the server's clock, as far as the ``Date`` headers tell."""
        return self._clock() + self._skew_s

    # -- transport ---------------------------------------------------------------------------

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: object = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """Send one request and read the whole answer; aiohttp failures become NetworkError."""
        started = time.monotonic()
        # A BytesIO shares the chunk's buffer and keeps aiohttp from warning about (and writing
        # in one go) bodies above 1 MiB; a new one per exchange, so a retry re-sends it whole.
        body_in = io.BytesIO(data) if data is not None else None
        with network_errors(method, url):
            target = URL(url, encoded=True) if session is self._storage else url
            async with session.request(
                method,
                target,
                params=params,
                json=json_body,
                data=body_in,
                headers=headers,
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                answer = HttpAnswer(resp.status, resp.headers, body)
        self._observe_date(answer.headers)
        log.debug(
            "request_completed",
            method=method,
            path=_strip_query(url).split("/api/v4", 1)[-1] if session is self._api else "",
            status=answer.status,
            elapsed_s=round(time.monotonic() - started, 3),
        )
        return answer

    def _observe_date(self, headers: Mapping[str, str]) -> None:
        value = headers.get("Date")
        if not value:
            return
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if self._skew_from_token:
            return
        # The header has one-second resolution; only a skew beyond that is real.
        skew = when.timestamp() + 0.5 - self._clock()
        self._skew_s = skew if abs(skew) > 2 else 0.0

    def _api_url(self, path: str) -> str:
        return self.remote.api_base + path

    async def _api_once(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: object = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> object:
        """One API exchange decoded into ``data`` or a typed error."""
        if self._api is None:
            raise RuntimeError("DriveClient used outside 'async with'")
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        url = self._api_url(path)
        answer = await self._exchange(
            self._api,
            method,
            url,
            params=params,
            json_body=json_body,
            data=data,
            headers=all_headers,
        )
        return decode_response(
            answer.status, answer.headers, answer.body, method, _strip_query(url)
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: object = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        chunk: bool = False,
        what: str = "",
    ) -> object:
        """Call an API route through the pacer and return the envelope's ``data``.

        With ``auth``, the access token is refreshed first when it is about to expire, and once
        more (followed by one replay) on an anonymous symptom: ``401``, or ``40011`` when
        ``chunk`` is set. A second symptom raises :class:`AuthError` (or :class:`SessionExpired`
        for a chunk).
        """

        async def attempt() -> object:
            if not auth:
                return await self._api_once(
                    method, path, params=params, json_body=json_body, data=data, headers=headers
                )
            return await self._authed(method, path, params, json_body, data, headers, chunk)

        return await self.pacer.call(attempt, what=what or f"{method} {path}")

    async def _authed(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        json_body: object,
        data: bytes | None,
        headers: Mapping[str, str] | None,
        chunk: bool,
    ) -> object:
        send = functools.partial(
            self._api_once,
            method,
            path,
            params=params,
            json_body=json_body,
            data=data,
            headers=headers,
        )
        token, generation = await self._valid_token()
        try:
            return await send(token=token)
        except ApiError as exc:
            if not self._auth_symptom(exc, chunk):
                raise
            log.debug("token_rejected", method=method, api_code=exc.code, request_id=exc.request_id)
            await self._renew(generation)
        token, _ = await self._valid_token()
        try:
            return await send(token=token)
        except ApiError as exc:
            if self._auth_symptom(exc, chunk) and not chunk:
                message = "still anonymous after a token refresh"
                raise AuthError(
                    exc.status, exc.code, message, exc.request_id, exc.method, exc.url
                ) from exc
            raise

    @staticmethod
    def _auth_symptom(exc: ApiError, chunk: bool) -> bool:
        if exc.code == 401 or (exc.status == 401 and not isinstance(exc, SessionExpired)):
            return True
        return chunk and isinstance(exc, SessionExpired)

    # -- tokens ------------------------------------------------------------------------------

    async def ensure_signed_in(self) -> None:
        """Sign in (or refresh) now unless a cached token is still good.

        Raises:
            AuthError: sign-in failed.
        """
        await self._valid_token()

    async def _valid_token(self) -> tuple[str, int]:
        """Return a usable access token and its generation, refreshing it when it runs short."""
        token = self._token
        if token is None or self._needs_refresh(token):
            await self._renew(self._generation)
            token = self._token
        if token is None:
            raise AuthError(200, 0, "no token after sign-in")
        return token.access_token, self._generation

    def _needs_refresh(self, token: Token) -> bool:
        remaining = token.access_expires.timestamp() - self.server_time()
        lifetime = token.access_expires.timestamp() - self._token_received
        margin = min(max(_REFRESH_MARGIN_S, self.expected_call_s), lifetime / 2)
        return remaining < margin

    async def _renew(self, seen_generation: int) -> None:
        """Refresh or sign in again, unless another worker did since ``seen_generation``.

        Workers that waited while a renewal failed fail with its error instead of repeating
        it, so a refresh route that keeps failing costs one renewal (with its own retries) per
        round of callers, not one per caller.
        """
        failures = self._renew_failures
        async with self._auth_lock:
            if self._generation != seen_generation and self._token is not None:
                return
            if self._auth_failure is not None and self._auth_failure[0] == seen_generation:
                # Workers queued behind a failed sign-in fail with it instead of retrying it.
                raise self._auth_failure[1]
            if self._renew_failures != failures and self._renew_error is not None:
                raise self._renew_error
            try:
                await self._renew_locked(seen_generation)
            except FerryError as exc:
                self._renew_failures += 1
                self._renew_error = exc
                raise

    async def _renew_locked(self, seen_generation: int) -> None:
        """Refresh the token, or sign in when there is none or the refresh is rejected."""
        token = self._token
        new: Token | None = None
        if token is not None and token.refresh_expires.timestamp() > self.server_time():
            try:
                new = await self._refresh(token)
            except AuthError as exc:
                log.info("token_refresh_rejected", api_code=exc.code, request_id=exc.request_id)
        if new is None:
            try:
                new = await self._sign_in()
            except AuthError as exc:
                self._auth_failure = (seen_generation, exc)
                raise
        self._set_token(new)

    def _set_token(self, token: Token) -> None:
        issued = _jwt_issued_at(token.access_token)
        if issued is not None:
            # The token's issue time is the server's clock; it beats the Date header, which a
            # proxy may rewrite and which has one-second resolution.
            self._skew_s = issued - self._clock()
            self._skew_from_token = True
        self._token = token
        self._token_received = self.server_time()
        self._generation += 1
        self._save_cached_token(token)

    async def _refresh(self, token: Token) -> Token:
        # No Authorization header here: the route checks scopes of any token it is given.
        self.refreshes += 1
        data = await self._auth_pacer.call(
            lambda: self._api_once(
                "POST", "/session/token/refresh", json_body={"refresh_token": token.refresh_token}
            ),
            what="token refresh",
        )
        log.debug("token_refreshed")
        return parse_token(data)

    async def _sign_in(self) -> Token:
        """Sign in with the password, answering a 2FA challenge with the TOTP secret."""
        self.sign_ins += 1
        body = {"email": self.remote.email, "password": self.remote.password}
        try:
            data = await self._auth_pacer.call(
                lambda: self._api_once("POST", "/session/token", json_body=body), what="sign in"
            )
        except ApiError as exc:
            if exc.code != CODE_2FA_REQUIRED:
                raise _as_auth_error(exc) from exc
            data = await self._two_factor(exc)
        log.info("session_signed_in", email=self.remote.email)
        return parse_token(data)

    async def _two_factor(self, challenge: ApiError) -> object:
        if not self.remote.totp_secret:
            raise AuthError(
                challenge.status,
                challenge.code,
                "2FA required but no totp_secret is configured",
                challenge.request_id,
                challenge.method,
                challenge.url,
            ) from challenge
        session_id = challenge.data if isinstance(challenge.data, str) else ""
        try:
            otp = _ClientTotp(_normalise_totp_secret(self.remote.totp_secret)).at(self._clock())
        except (ValueError, binascii.Error) as exc:
            # The message names the problem, never the secret.
            raise AuthError(
                challenge.status,
                challenge.code,
                "the configured TOTP secret is not valid base32",
                challenge.request_id,
                challenge.method,
                challenge.url,
            ) from exc
        try:
            return await self._auth_pacer.call(
                lambda: self._api_once(
                    "POST", "/session/token/2fa", json_body={"otp": otp, "session_id": session_id}
                ),
                what="sign in 2fa",
            )
        except ApiError as exc:
            raise _as_auth_error(exc) from exc

    async def sign_out(self) -> None:
        """Revoke the refresh-token family on the server and forget the cached tokens."""
        token = self._token
        self._token = None
        self.token_cache.unlink(missing_ok=True)
        if token is None:
            return
        await self.pacer.call(
            lambda: self._api_once(
                "DELETE", "/session/token", json_body={"refresh_token": token.refresh_token}
            ),
            what="sign out",
        )
        log.info("session_signed_out", email=self.remote.email)

    def _load_cached_token(self) -> Token | None:
        try:
            raw = json.loads(self.token_cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(raw, dict):
            return None
        if raw.get("url") != self.remote.url or raw.get("email") != self.remote.email:
            return None
        try:
            token = parse_token(raw.get("token"))
        except ApiError:
            return None
        self._token_received = float(raw.get("received", 0.0))
        return token

    def _save_cached_token(self, token: Token) -> None:
        record = {
            "url": self.remote.url,
            "email": self.remote.email,
            "received": self._token_received,
            "token": {
                "access_token": token.access_token,
                "refresh_token": token.refresh_token,
                "access_expires": token.access_expires.isoformat(),
                "refresh_expires": token.refresh_expires.isoformat(),
            },
        }
        self.token_cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.token_cache.with_name(self.token_cache.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(record, fh)
        os.replace(tmp, self.token_cache)

    # -- endpoints ---------------------------------------------------------------------------

    async def ping(self) -> str:
        """Return the server version from ``GET /site/ping``."""
        data = await self.call("GET", "/site/ping", auth=False)
        return data if isinstance(data, str) else ""

    async def list_page(self, uri: str, page_size: int, next_token: str = "") -> ListPage:
        """Return one page of a folder listing (``GET /file``)."""
        params = {"uri": uri, "page_size": str(page_size)}
        if next_token:
            params["next_page_token"] = next_token
        return parse_list_page(await self.call("GET", "/file", params=params, what="list"))

    async def file_info(self, uri: str, *, extended: bool = False) -> RemoteEntry:
        """Return one file or folder (``GET /file/info``); :class:`NotFound` when missing."""
        params = {"uri": uri}
        if extended:
            params["extended"] = "true"
        return parse_entry(await self.call("GET", "/file/info", params=params, what="file info"))

    async def entities(self, uri: str) -> list[EntityInfo]:
        """Return the blobs of a file (versions, thumbnails) from its extended info."""
        params = {"uri": uri, "extended": "true"}
        return parse_entities(await self.call("GET", "/file/info", params=params, what="info"))

    async def create(self, uri: str, *, folder: bool) -> RemoteEntry:
        """Create a file or folder with its ancestors; an existing one of that type is returned."""
        body = {"uri": uri, "type": "folder" if folder else "file"}
        return parse_entry(await self.call("POST", "/file/create", json_body=body, what="create"))

    async def delete(self, uris: list[str], *, hard: bool) -> None:
        """Delete objects (``DELETE /file``); soft delete moves them to the trash."""
        body: dict[str, object] = {"uris": uris}
        if hard:
            body["skip_soft_delete"] = True
        await self.call("DELETE", "/file", json_body=body, what="delete")

    async def capacity(self) -> Capacity:
        """Return the account's ``total`` and ``used`` bytes."""
        return parse_capacity(await self.call("GET", "/user/capacity", what="capacity"))

    async def create_upload_session(
        self,
        uri: str,
        size: int,
        *,
        last_modified_ms: int,
        overwrite: bool,
        mime_type: str = "",
    ) -> UploadSession:
        """Open an upload session (``PUT /file/upload``); ``overwrite`` adds a new version."""
        body: dict[str, object] = {"uri": uri, "size": size, "last_modified": last_modified_ms}
        if overwrite:
            body["entity_type"] = "version"
        if mime_type:
            body["mime_type"] = mime_type
        data = await self.call("PUT", "/file/upload", json_body=body, what="upload session")
        return parse_upload_session(data, size)

    async def delete_upload_session(self, session_id: str, uri: str) -> None:
        """Cancel an upload session and its placeholder (``DELETE /file/upload``)."""
        body = {"id": session_id, "uri": uri}
        await self.call("DELETE", "/file/upload", json_body=body, what="cancel upload")

    async def upload_chunk(self, session_id: str, index: int, data: bytes) -> None:
        """Send one chunk to Cloudreve (local and relay policies, contract 6.4).

        ``40011`` first triggers a token refresh and one replay; a second ``40011`` raises
        :class:`SessionExpired`.
        """
        await self.call(
            "POST",
            f"/file/upload/{session_id}/{index}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            chunk=True,
            what=f"chunk {index}",
        )

    async def unlock(self, tokens: list[str]) -> None:
        """Force-release locks by token (``DELETE /file/lock``)."""
        await self.call("DELETE", "/file/lock", json_body={"tokens": tokens}, what="unlock")

    async def file_urls(self, uris: list[str], *, no_cache: bool = False) -> UrlBatch:
        """Return download URLs for files (``POST /file/url``), in request order."""
        body: dict[str, object] = {"uris": uris, "download": True}
        if no_cache:
            body["no_cache"] = True
        return parse_url_batch(await self.call("POST", "/file/url", json_body=body, what="url"))

    async def thumb(self, uri: str) -> Mapping[str, object]:
        """Return the raw ``GET /file/thumb`` answer (``url``, ``expires``, ``obfuscated``)."""
        data = await self.call("GET", "/file/thumb", params={"uri": uri}, what="thumb")
        if not isinstance(data, dict):
            raise ApiError(200, 0, "malformed response: thumb is not an object")
        return data

    async def upload_callback(self, policy_type: str, session_id: str, secret: str) -> None:
        """Call the client callback of a storage-direct upload (GET for s3/ks3/cos, else POST)."""
        method = "GET" if policy_type in _CALLBACK_GET else "POST"
        path = f"/callback/{policy_type}/{session_id}/{secret}"
        # The secret is part of the path; the pacer's label keeps it out of logs.
        await self.call(method, path, auth=False, what=f"callback {policy_type}")

    async def fetch(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> HttpAnswer:
        """One exchange with a storage host or content link, without any token (no pacer)."""
        return await self._exchange(self.storage_http, method, url, headers=headers, data=data)

    async def storage_call(
        self, method: str, url: str, *, headers: Mapping[str, str], data: bytes, what: str
    ) -> object:
        """Send one request to a storage URL that answers with a Cloudreve envelope (a slave).

        Goes through the pacer, carries no token, and returns the envelope's ``data``.
        """

        async def attempt() -> object:
            answer = await self._exchange(
                self.storage_http, method, url, headers=headers, data=data
            )
            return decode_response(
                answer.status, answer.headers, answer.body, method, _strip_query(url)
            )

        return await self.pacer.call(attempt, what=what)

    @asynccontextmanager
    async def stream(
        self, url: str, *, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[StreamAnswer]:
        """GET a storage URL or content link verbatim, without any token, for block reading."""
        with network_errors("GET", url):
            resp = await self.storage_http.get(URL(url, encoded=True), headers=headers)
        try:
            yield StreamAnswer(resp, "GET", _strip_query(url))
        finally:
            resp.release()

    def now_utc(self) -> datetime:
        """Server-adjusted current time as an aware datetime."""
        return datetime.fromtimestamp(self.server_time(), UTC)


def _jwt_issued_at(token: str) -> float | None:
    """The ``iat`` (or ``nbf``) claim of a JWT, read without verifying it; None if absent."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(payload, dict):
        return None
    for claim in ("iat", "nbf"):
        value = payload.get(claim)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _as_auth_error(exc: ApiError) -> FerryError:
    if isinstance(exc, AuthError) or exc.retryable:
        return exc
    return AuthError(exc.status, exc.code, exc.message, exc.request_id, exc.method, exc.url)
