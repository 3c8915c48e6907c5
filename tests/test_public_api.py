"""Each package's public surface: ``__all__`` is sorted, complete and importable."""

from __future__ import annotations

import importlib
import inspect

import pytest

import transfer


def test_transfer_all_is_sorted_and_unique() -> None:
    """transfer.__all__ is sorted and has no duplicates."""
    assert list(transfer.__all__) == sorted(transfer.__all__)
    assert len(set(transfer.__all__)) == len(transfer.__all__)


def test_transfer_all_names_resolve() -> None:
    """Every name in transfer.__all__ exists in the package."""
    for name in transfer.__all__:
        assert hasattr(transfer, name), name


def test_transfer_all_is_complete() -> None:
    """Every public class or function the package namespace holds is listed in __all__."""
    public = {
        name
        for name, value in vars(transfer).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert public <= set(transfer.__all__)


@pytest.mark.parametrize(
    "name",
    [
        "Drive",
        "RemoteConfig",
        "PacerConfig",
        "TransferConfig",
        "safe_local_name",
        "join_remote",
        "BandwidthLimiter",
        "Stats",
        "StatsSnapshot",
        "TransferHandle",
        "RemoteEntry",
        "SavedUpload",
        "UploadJournal",
        "Capacity",
        "FerryError",
        "ApiError",
        "AuthError",
        "NotFound",
        "ObjectExists",
        "LockConflict",
        "QuotaExceeded",
        "RateLimited",
        "ServerError",
        "SessionExpired",
        "NetworkError",
        "ListingInconsistent",
        "UploadFailed",
        "DownloadFailed",
        "UnsafeName",
        "IntegrityError",
    ],
)
def test_agreed_surface_is_exported(name: str) -> None:
    """The surface jobs codes against (the engineers' contract) is in transfer.__all__."""
    assert name in transfer.__all__


@pytest.mark.parametrize(
    "module",
    ["transfer.errors", "transfer.config", "transfer.uris", "transfer.names", "transfer.pacer"],
)
def test_module_all_is_sorted(module: str) -> None:
    """Modules with an __all__ keep it sorted."""
    names = importlib.import_module(module).__all__
    assert list(names) == sorted(names)
