"""Async Cloudreve v4 transfer engine: the public surface that ``jobs`` codes against.

``jobs`` imports from here, never from a module inside the package. Additions beyond the agreed
surface (the agreed calls all work as specified):

* ``Drive.connect`` also takes ``on_retry`` (called per scheduled retry, e.g.
  ``stats.record_retry``) and accepts a ready ``Pacer`` as ``pacer`` (tests inject clocks);
* ``Drive.abandon_upload(journal, key)`` cancels a journaled session of a file that will not be
  uploaded any more (its placeholder and lock go at once);
* ``Drive.save_thumbnail`` saves an image's thumbnail as ``<name>.thumb.jpg``;
  ``TransferConfig.save_thumbnails`` / ``thumbnail_dir`` do it for every downloaded image;
* ``local_path(root, relative)`` maps a remote relative path below a local root through
  ``safe_local_name``; ``nfc`` normalises names; ``Pacer`` and ``RetryEvent`` are exported.
"""

from __future__ import annotations

from transfer.accounting import BandwidthLimiter, Stats, StatsSnapshot, TransferHandle
from transfer.api import Capacity
from transfer.backend import RemoteEntry, SavedUpload, UploadJournal
from transfer.config import PacerConfig, RemoteConfig, TransferConfig
from transfer.drive import Drive
from transfer.errors import (
    ApiError,
    AuthError,
    DownloadFailed,
    FerryError,
    IntegrityError,
    ListingInconsistent,
    LockConflict,
    NetworkError,
    NotFound,
    ObjectExists,
    QuotaExceeded,
    RateLimited,
    ServerError,
    SessionExpired,
    SourceChanged,
    UnsafeName,
    UnsupportedFeature,
    UploadFailed,
)
from transfer.names import local_path, nfc, safe_local_name
from transfer.pacer import Pacer, RetryEvent
from transfer.uris import join_remote

__all__ = [
    "ApiError",
    "AuthError",
    "BandwidthLimiter",
    "Capacity",
    "DownloadFailed",
    "Drive",
    "FerryError",
    "IntegrityError",
    "ListingInconsistent",
    "LockConflict",
    "NetworkError",
    "NotFound",
    "ObjectExists",
    "Pacer",
    "PacerConfig",
    "QuotaExceeded",
    "RateLimited",
    "RemoteConfig",
    "RemoteEntry",
    "RetryEvent",
    "SavedUpload",
    "ServerError",
    "SessionExpired",
    "SourceChanged",
    "Stats",
    "StatsSnapshot",
    "TransferConfig",
    "TransferHandle",
    "UnsafeName",
    "UnsupportedFeature",
    "UploadFailed",
    "UploadJournal",
    "join_remote",
    "local_path",
    "nfc",
    "safe_local_name",
]
