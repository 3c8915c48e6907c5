"""Storage-policy drivers for every non-local policy type (see ``emulator.policy``).

``s3`` and ``ks3`` run on a real S3 implementation (moto's threaded server on a loopback port,
one bucket each, behind a presigning proxy); ``cos``, ``oss``, ``obs``, ``onedrive``, ``qiniu``
and ``upyun`` are emulated by the emulator's own routes on local disk. Every storage endpoint
lives under ``/storage/<type>/`` and answers in that storage's own error format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp

from emulator.policies._common import Clock, default_clock
from emulator.policies.objectstore import COS, OBS, OSS, ObjectStoreDriver
from emulator.policies.onedrive import OneDriveDriver
from emulator.policies.qiniu import QiniuDriver
from emulator.policies.s3 import MotoS3, S3Driver
from emulator.policies.upyun import UpyunDriver
from emulator.policy import PolicyDriver, UploadHost

__all__ = ("open_drivers",)


@asynccontextmanager
async def open_drivers(
    host: UploadHost, data_dir: Path, *, clock: Clock = default_clock
) -> AsyncIterator[dict[str, PolicyDriver]]:
    """Start the drivers (and any storage servers behind them) for the app's lifetime.

    Yields a mapping from policy type to driver. Types missing from it are refused by the core.
    On exit moto is stopped (its socket closed, its thread joined) and the proxy's HTTP client
    closed.

    Args:
        host: the emulator core, for the site URL and storage-side completion.
        data_dir: where the emulated storages keep blobs and parts.
        clock: unix seconds; presigned URLs and upload sessions expire against it.
    """
    async with AsyncExitStack() as stack:
        moto = MotoS3()
        await moto.start()
        stack.push_async_callback(moto.stop)
        # The proxy streams bodies of any size; only connecting may not hang.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        )

        s3_like = [S3Driver(t, moto, host, http, clock, data_dir) for t in ("s3", "ks3")]
        for driver in s3_like:
            await driver.create_bucket()
            stack.push_async_callback(driver.drop_bucket)
            stack.push_async_callback(driver.save_objects)

        drivers: list[PolicyDriver] = [
            *s3_like,
            *(ObjectStoreDriver(d, host, data_dir, clock) for d in (COS, OSS, OBS)),
            OneDriveDriver(host, data_dir, clock),
            QiniuDriver(host, data_dir, clock),
            UpyunDriver(host, data_dir, clock),
        ]
        yield {d.type: d for d in drivers}
