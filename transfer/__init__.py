"""Async Cloudreve v4 transfer engine: the public surface that ``jobs`` codes against.

``jobs`` imports from here, never from a module inside the package. Additions beyond the agreed
surface: ``Drive.connect`` also takes ``on_retry`` (a hook per scheduled retry) and accepts a
ready ``Pacer`` as ``pacer``; ``Drive.save_thumbnail`` saves an image's thumbnail beside it.
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
    UnsafeName,
    UnsupportedFeature,
    UploadFailed,
)
from transfer.names import nfc, safe_local_name
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
    "Stats",
    "StatsSnapshot",
    "TransferConfig",
    "TransferHandle",
    "UnsafeName",
    "UnsupportedFeature",
    "UploadFailed",
    "UploadJournal",
    "join_remote",
    "nfc",
    "safe_local_name",
]
