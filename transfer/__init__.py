"""Async Cloudreve v4 transfer engine: the public surface that ``jobs`` codes against."""

from __future__ import annotations

from transfer.backend import RemoteEntry, SavedUpload, UploadJournal
from transfer.config import PacerConfig, RemoteConfig, TransferConfig
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

__all__ = [
    "ApiError",
    "AuthError",
    "DownloadFailed",
    "FerryError",
    "IntegrityError",
    "ListingInconsistent",
    "LockConflict",
    "NetworkError",
    "NotFound",
    "ObjectExists",
    "PacerConfig",
    "QuotaExceeded",
    "RateLimited",
    "RemoteConfig",
    "RemoteEntry",
    "SavedUpload",
    "ServerError",
    "SessionExpired",
    "TransferConfig",
    "UnsafeName",
    "UnsupportedFeature",
    "UploadFailed",
    "UploadJournal",
]
