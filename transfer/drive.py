"""Drive: one signed-in Cloudreve v4 drive as ``jobs`` sees it (list, stat, upload, download).

A :class:`Drive` is built by :meth:`Drive.connect`, an async context manager that opens the
client, signs in (or reuses cached tokens) and reads the server version. It never decides what
to copy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import structlog

from transfer.accounting import BandwidthLimiter
from transfer.api import Capacity, ListPage
from transfer.backend import RemoteEntry, UploadJournal
from transfer.client import DriveClient
from transfer.config import PacerConfig, RemoteConfig, TransferConfig
from transfer.download import Downloader
from transfer.errors import FerryError, ListingInconsistent, NotFound
from transfer.pacer import Pacer, RetryEvent
from transfer.thumbs import ThumbnailSaver, is_image
from transfer.upload import Uploader
from transfer.uris import ROOT_URI, join_remote, split_remote, to_uri

__all__ = ["Drive"]

log = structlog.get_logger()

_PAGE_SIZE = 1000
_DELETE_BATCH = 1000


def _log_retry(event: RetryEvent) -> None:
    error = event.error
    log.warning(
        "retry_scheduled",
        what=event.what,
        attempt=event.attempt,
        wait_s=round(event.wait_s, 3),
        error=type(error).__name__,
        api_code=getattr(error, "code", None),
        request_id=getattr(error, "request_id", None),
    )


class Drive:
    """One signed-in drive; build it with ``async with Drive.connect(...) as drive``."""

    def __init__(
        self,
        client: DriveClient,
        *,
        transfer: TransferConfig,
        server_version: str,
        up_limit: BandwidthLimiter | None = None,
        down_limit: BandwidthLimiter | None = None,
    ) -> None:
        self.client = client
        self.transfer = transfer
        self.server_version = server_version
        self.uploader = Uploader(client, transfer, limiter=up_limit, server_version=server_version)
        self.downloader = Downloader(client, limiter=down_limit)
        self.thumbnails = ThumbnailSaver(client)

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        remote: RemoteConfig,
        *,
        token_cache: Path,
        pacer: PacerConfig | Pacer = PacerConfig(),  # noqa: B008 - frozen, shared default
        transfer: TransferConfig = TransferConfig(),  # noqa: B008 - frozen, shared default
        up_limit: BandwidthLimiter | None = None,
        down_limit: BandwidthLimiter | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> AsyncIterator[Self]:
        """Open a drive: start the HTTP sessions, read the version, sign in.

        Args:
            remote: the drive and its credentials.
            token_cache: tokens file (mode 0600), reused and refreshed across runs.
            pacer: retry settings, or a ready :class:`Pacer` (tests inject fake clocks).
            transfer: chunk concurrency, NFC and per-file retry settings.
            up_limit: shared upload bandwidth limiter.
            down_limit: shared download bandwidth limiter.
            on_retry: called for every scheduled request retry (e.g. ``stats.record_retry``);
                a ``retry_scheduled`` warning is logged either way. A ready :class:`Pacer`
                keeps its own hook, and ``on_retry`` is not used with it.

        Raises:
            AuthError: sign-in failed.
            NetworkError: the server cannot be reached.
        """
        if isinstance(pacer, Pacer):
            shared = pacer
        else:

            def hook(event: RetryEvent) -> None:
                _log_retry(event)
                if on_retry is not None:
                    on_retry(event)

            shared = Pacer(pacer, on_retry=hook)
        async with DriveClient(remote, token_cache=token_cache, pacer=shared) as client:
            version = await client.ping()
            await client.ensure_signed_in()
            yield cls(
                client,
                transfer=transfer,
                server_version=version,
                up_limit=up_limit,
                down_limit=down_limit,
            )

    async def list(self, path: str) -> list[RemoteEntry]:
        """Return every entry of one folder (all pages, folders first).

        Raises:
            NotFound: the folder does not exist (or is a file).
            ListingInconsistent: the server repeated a page token or sent an empty page with one.
        """
        uri = to_uri(path)
        entries: list[RemoteEntry] = []
        seen_tokens: set[str] = set()
        page_size = _PAGE_SIZE
        token = ""
        while True:
            page = await self.client.list_page(uri, page_size, token)
            if page.max_page_size > 0:
                page_size = min(page_size, page.max_page_size)
            if _may_skip_files(page, page_size):
                # The server's cursor joins folders and files badly when the folders left exactly
                # fill a page: the token names the last folder and "files next", and the files
                # that sort before that folder are never listed. One item less per page makes the
                # folders overflow it, so the token stays among the folders.
                page = await self.client.list_page(uri, page_size - 1, token)
            entries.extend(page.entries)
            if not page.next_token:
                return entries
            if page.next_token in seen_tokens or not page.entries:
                raise ListingInconsistent(
                    f"listing of {path!r} repeated a page token or sent an empty page with one"
                )
            seen_tokens.add(page.next_token)
            token = page.next_token

    async def walk(self, root: str) -> AsyncIterator[RemoteEntry]:
        """Yield every entry below ``root`` recursively, folders included (parents first).

        A missing ``root`` yields nothing.

        Raises:
            ListingInconsistent: a folder's listing cannot be trusted.
        """
        pending = [join_remote(root)]
        first = True
        while pending:
            folder = pending.pop()
            try:
                entries = await self.list(folder)
            except NotFound:
                if first:
                    return
                raise
            first = False
            for entry in entries:
                yield entry
            pending.extend(entry.path for entry in reversed(entries) if entry.is_dir)

    async def stat(self, path: str) -> RemoteEntry | None:
        """Return the entry at ``path``, or None when it does not exist."""
        if not split_remote(path):
            return _root_entry()
        try:
            return await self.client.file_info(to_uri(path))
        except NotFound:
            return None

    async def mkdir(self, path: str) -> RemoteEntry:
        """Create a folder and its missing ancestors; an existing folder is returned as is.

        Raises:
            ObjectExists: a file holds the name.
        """
        if not split_remote(path):
            return _root_entry()
        return await self.client.create(to_uri(path), folder=True)

    async def delete(self, paths: Sequence[str], *, hard: bool = False) -> None:
        """Delete objects (to the trash unless ``hard``); missing paths are not an error."""
        uris = [to_uri(path) for path in paths]
        for start in range(0, len(uris), _DELETE_BATCH):
            batch = uris[start : start + _DELETE_BATCH]
            try:
                await self.client.delete(batch, hard=hard)
            except NotFound:
                # One item missing fails the batch; delete the rest one by one.
                for uri in batch:
                    try:
                        await self.client.delete([uri], hard=hard)
                    except NotFound:
                        log.debug("delete_skipped_missing", uri=uri)

    async def capacity(self) -> Capacity:
        """Return the account's total and used bytes."""
        return await self.client.capacity()

    async def upload(
        self,
        local: Path,
        remote_path: str,
        *,
        overwrite: bool,
        journal: UploadJournal,
        key: str,
        progress: Callable[[int], None] | None = None,
        resumed: Callable[[int], None] | None = None,
    ) -> RemoteEntry:
        """Upload one file, resuming the session journaled under ``key``.

        Retryable failures (network, 5xx, a lost session) run the file again up to
        ``transfer.file_retries`` times, each resuming from the journal. See
        :meth:`transfer.upload.Uploader.upload` for the errors.
        """
        for attempt in range(self.transfer.file_retries + 1):
            try:
                return await self.uploader.upload(
                    local,
                    remote_path,
                    overwrite=overwrite,
                    journal=journal,
                    key=key,
                    progress=progress,
                    resumed=resumed,
                )
            except FerryError as exc:
                if not exc.retryable or attempt >= self.transfer.file_retries:
                    raise
                log.warning("upload_retried", path=remote_path, attempt=attempt + 1, error=str(exc))
        raise AssertionError("unreachable")

    async def abandon_upload(self, journal: UploadJournal, key: str) -> bool:
        """Cancel the upload session journaled under ``key``; False when none was journaled.

        See :meth:`transfer.upload.Uploader.abandon`.
        """
        return await self.uploader.abandon(journal, key)

    async def download(
        self,
        entry: RemoteEntry,
        local: Path,
        *,
        progress: Callable[[int], None] | None = None,
        resumed: Callable[[int], None] | None = None,
        thumbnail_dir: Path | None = None,
    ) -> None:
        """Download one file to ``local`` via a ``.part`` file, resuming an earlier one.

        Retryable failures run the file again up to ``transfer.file_retries`` times. With
        ``transfer.save_thumbnails`` an image's thumbnail is saved too, into ``thumbnail_dir``
        when given (else ``transfer.thumbnail_dir``, else beside the image).
        """
        for attempt in range(self.transfer.file_retries + 1):
            try:
                await self.downloader.download(entry, local, progress=progress, resumed=resumed)
                break
            except FerryError as exc:
                if not exc.retryable or attempt >= self.transfer.file_retries:
                    raise
                log.warning("download_retried", path=entry.path, attempt=attempt + 1)
        if self.transfer.save_thumbnails and is_image(entry.name):
            await self._thumbnail_beside(entry, local, thumbnail_dir or self.transfer.thumbnail_dir)

    async def _thumbnail_beside(self, entry: RemoteEntry, local: Path, folder: Path | None) -> None:
        """Save a downloaded image's thumbnail; a failure is logged, the download stands."""
        try:
            await self.thumbnails.save(entry, local, folder)
        except FerryError as exc:
            log.warning("thumbnail_failed", path=entry.path, error=str(exc))

    async def save_thumbnail(
        self, entry: RemoteEntry, image: Path, folder: Path | None = None
    ) -> Path | None:
        """Save ``entry``'s thumbnail as ``<name>.thumb.jpg`` beside ``image`` or in ``folder``.

        Returns None when the server has no thumbnail for it.
        """
        return await self.thumbnails.save(entry, image, folder)

    async def sign_out(self) -> None:
        """Revoke this session's tokens on the server and delete the token cache."""
        await self.client.sign_out()


def _root_entry() -> RemoteEntry:
    return RemoteEntry(
        path="/",
        name="",
        is_dir=True,
        size=0,
        updated_at=datetime.fromtimestamp(0, UTC),
        id="",
        uri=ROOT_URI,
    )


def _may_skip_files(page: ListPage, page_size: int) -> bool:
    """True when ``page`` may hide files: a full page of folders only, with more to come.

    Cloudreve's cursor (CE ``inventory/file_utils.go`` ``cursorPagination``) ends such a page
    with a token that resumes after the last folder's sort key among the files only.
    """
    return (
        page_size > 1
        and bool(page.next_token)
        and len(page.entries) == page_size
        and all(entry.is_dir for entry in page.entries)
    )
