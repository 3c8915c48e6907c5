"""The registry of chunk writers: storage-policy type -> :class:`~transfer.backend.ChunkWriter`.

``local`` (and every policy with ``relay: true``) and ``remote`` are built in; the storage-direct
types live in ``transfer.policies.<type>`` and are imported on first use. A type whose module is
absent raises :class:`~transfer.errors.UnsupportedFeature`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from transfer.backend import ChunkWriter, WriterContext
from transfer.errors import UnsupportedFeature

__all__ = ["WRITERS", "make_writer", "writer_factory"]

WRITERS: dict[str, tuple[str, str]] = {
    "local": ("transfer.policies.local", "LocalWriter"),
    "remote": ("transfer.policies.remote", "RemoteWriter"),
    "s3": ("transfer.policies.s3", "S3Writer"),
    "ks3": ("transfer.policies.ks3", "Ks3Writer"),
    "cos": ("transfer.policies.cos", "CosWriter"),
    "oss": ("transfer.policies.oss", "OssWriter"),
    "obs": ("transfer.policies.obs", "ObsWriter"),
    "onedrive": ("transfer.policies.onedrive", "OneDriveWriter"),
    "qiniu": ("transfer.policies.qiniu", "QiniuWriter"),
    "upyun": ("transfer.policies.upyun", "UpyunWriter"),
}


def writer_factory(policy_type: str) -> Callable[[WriterContext], ChunkWriter]:
    """Return the writer class for ``policy_type``.

    Raises:
        UnsupportedFeature: the type is unknown, or its module or class is not installed.
    """
    try:
        module_name, class_name = WRITERS[policy_type]
    except KeyError:
        raise UnsupportedFeature(f"storage policy type {policy_type!r} is unknown") from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise UnsupportedFeature(f"no chunk writer for policy type {policy_type!r}") from exc
    factory = getattr(module, class_name, None)
    if factory is None:
        raise UnsupportedFeature(f"{module_name} has no {class_name}")

    return cast(Callable[[WriterContext], ChunkWriter], factory)


def make_writer(ctx: WriterContext) -> ChunkWriter:
    """Build the writer for the policy of ``ctx.session``."""
    return writer_factory(ctx.session.policy_type)(ctx)
