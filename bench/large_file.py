"""One file past 4 GiB through ``transfer.Drive``: offsets, chunk count, memory (case BR-22).

Starts ``python -m emulator serve`` in its own process (local policy, ``--chunk-mib`` chunks),
creates a sparse source file of ``--size`` bytes (4 GiB + 1 byte by default) with random blocks
at known offsets (the start, across 2 GiB, across 4 GiB, the last byte), uploads it with
``Drive.upload``, downloads it back with ``Drive.download`` and compares the SHA-256 of both files,
read in blocks.

It prints the size, the time and MiB/s of each direction, the ferry process's peak RSS in each
direction against its baseline just before the transfer (bounded memory means growth of a few
chunks, not of the file size), and the chunk requests the emulator saw against
``ceil(size / chunk)``. The emulator counts them through a fault rule that never fires (its
``seen`` counter), read back over the admin API.

The run needs about twice ``--size`` of free disk (the emulator's copy and the download); it
refuses to start without it, and removes its directory at the end, also on failure.

Run: ``.venv/bin/python -m bench.large_file [--size BYTES] [--chunk-mib N] [--dir PATH]``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import anyio
import psutil
import structlog

from bench.transfer_throughput import EMAIL, MIB, PASSWORD, _emulator, _NullJournal
from transfer import Drive, RemoteConfig

GIB = 1 << 30
DEFAULT_SIZE = 4 * GIB + 1
MARK_BLOCK = 64 << 10
"""Bytes of random data written at each known offset."""
HASH_BLOCK = 8 * MIB
CHUNK_ROUTE = "/api/v4/file/upload/{id}/{index}"
NEVER = 1 << 62
"""``nth`` of the counting rule: it sees every chunk request and fires on none."""


def mark_offsets(size: int) -> list[int]:
    """Offsets of the random blocks: start, middle, across 2 GiB and 4 GiB, the last byte."""
    half = MARK_BLOCK // 2
    wanted = {0, size // 2 - half, 2 * GIB - half, 4 * GIB - half, size - 1}
    return sorted(o for o in wanted if 0 <= o < size)


def make_sparse_source(path: Path, size: int) -> dict[int, int]:
    """Create a sparse file of ``size`` bytes with random marks; return ``{offset: length}``."""
    marks: dict[int, int] = {}
    with path.open("wb") as f:
        f.truncate(size)
        for offset in mark_offsets(size):
            data = os.urandom(min(MARK_BLOCK, size - offset))
            f.seek(offset)
            f.write(data)
            marks[offset] = len(data)

    return marks


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in blocks so memory stays flat."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)

    return digest.hexdigest()


class RssSampler:
    """Peak resident set size of this process per phase, sampled while a transfer runs."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.baseline = self._proc.memory_info().rss
        self.peaks: dict[str, int] = {}
        self._phase = ""
        self.maxrss = 0
        """The kernel's high-water mark (``ru_maxrss``) once the transfer is over."""

    def phase(self, name: str) -> None:
        """Attribute the following samples to ``name``."""
        self._phase = name
        self.peaks[name] = self._proc.memory_info().rss

    async def sample(self, done: anyio.Event) -> None:
        """Sample every 10 ms until ``done`` is set."""
        while not done.is_set():
            rss = self._proc.memory_info().rss
            self.peaks[self._phase] = max(self.peaks.get(self._phase, rss), rss)
            await anyio.sleep(0.01)
        self.maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


async def _admin(url: str) -> tuple[aiohttp.ClientSession, dict[str, str]]:
    http = aiohttp.ClientSession()
    login = {"email": EMAIL, "password": PASSWORD}
    async with http.post(f"{url}/api/v4/session/token", json=login) as resp:
        token = (await resp.json())["data"]["token"]["access_token"]

    return http, {"Authorization": f"Bearer {token}"}


async def add_chunk_counter(url: str) -> None:
    """Add a fault rule on the chunk route that never fires; its ``seen`` counts requests."""
    http, auth = await _admin(url)
    async with http:
        rule = {"method": "POST", "path": CHUNK_ROUTE, "nth": NEVER}
        async with http.post(f"{url}/api/v4/admin/faults", json=rule, headers=auth) as resp:
            body = await resp.json()
    if body["code"] != 0:
        raise SystemExit(f"could not add the counting rule: {body}")


async def chunk_requests_seen(url: str) -> int:
    """Return how many chunk requests the counting rule saw."""
    http, auth = await _admin(url)
    async with http, http.get(f"{url}/api/v4/admin/faults", headers=auth) as resp:
        rules = (await resp.json())["data"]

    return sum(int(r["seen"]) for r in rules if r["path"] == CHUNK_ROUTE)


async def transfer(url: str, work: Path, src: Path, dst: Path) -> tuple[float, float, RssSampler]:
    """Upload ``src``, download it to ``dst``; return both times and the RSS sampler."""
    remote = RemoteConfig(url=url, email=EMAIL, password=PASSWORD)
    async with Drive.connect(remote, token_cache=work / "tokens.json") as drive:
        sampler = RssSampler()
        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler.sample, done)
            sampler.phase("upload")
            started = time.perf_counter()
            entry = await drive.upload(
                src, "/bench/large.bin", overwrite=False, journal=_NullJournal(), key="large"
            )
            upload_s = time.perf_counter() - started
            sampler.phase("download")
            started = time.perf_counter()
            await drive.download(entry, dst)
            download_s = time.perf_counter() - started
            done.set()

    return upload_s, download_s, sampler


def _check_room(where: Path, size: int) -> None:
    free = shutil.disk_usage(where).free
    need = 2 * size + GIB
    if free < need:
        raise SystemExit(
            f"{where}: {free / GIB:.1f} GiB free, the run needs {need / GIB:.1f} GiB "
            "(the emulator's copy and the download); pass --dir elsewhere"
        )


def _report(size: int, chunk: int, times: tuple[float, float], rss: RssSampler) -> None:
    mib = size / MIB
    up, down = times
    print(f"large_file: {size} bytes ({size / GIB:.3f} GiB), chunk {chunk} bytes")
    print(f"  upload   {up:8.2f} s {mib / up:8.1f} MiB/s")
    print(f"  download {down:8.2f} s {mib / down:8.1f} MiB/s")
    print(f"  ferry RSS baseline before the transfer: {rss.baseline / MIB:.1f} MiB")
    for name, peak in rss.peaks.items():
        growth = peak - rss.baseline
        print(
            f"    {name:8s} sampled peak {peak / MIB:.1f} MiB "
            f"(+{growth / MIB:.1f} MiB = {growth / chunk:.2f} x chunk)"
        )
    growth = rss.maxrss - rss.baseline
    print(
        f"    ru_maxrss after the transfer {rss.maxrss / MIB:.1f} MiB "
        f"(+{growth / MIB:.1f} MiB = {growth / chunk:.2f} x chunk)"
    )


def run(size: int, chunk_mib: int, parent: Path) -> int:
    """Run the benchmark under a new directory in ``parent``; return the exit status."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    chunk = chunk_mib * MIB
    _check_room(parent, size)
    with tempfile.TemporaryDirectory(prefix="ferry-large-", dir=parent) as tmp:
        work = Path(tmp)
        src, dst = work / "source.bin", work / "download.bin"
        marks = make_sparse_source(src, size)
        allocated = src.stat().st_blocks * 512
        print(f"source: {size} bytes, {allocated} allocated, random blocks at {sorted(marks)}")
        with _emulator(work / "data", chunk_mib, 1) as url:
            anyio.run(add_chunk_counter, url)
            upload_s, download_s, rss = anyio.run(transfer, url, work, src, dst)
            seen = anyio.run(chunk_requests_seen, url)
        started = time.perf_counter()
        src_hash, dst_hash = sha256_of(src), sha256_of(dst)
        hash_s = time.perf_counter() - started
        dst_size = dst.stat().st_size

    _report(size, chunk, (upload_s, download_s), rss)
    expected = -(-size // chunk)
    print(f"  chunk requests: {seen} seen, {expected} expected (ceil(size / chunk))")
    print(f"  sha256 source   {src_hash}")
    print(f"  sha256 download {dst_hash} ({dst_size} bytes; {hash_s:.1f} s for both)")
    ok = src_hash == dst_hash and dst_size == size and seen == expected
    print("  result:", "OK" if ok else "FAIL")

    return 0 if ok else 1


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="bytes (>= 1)")
    parser.add_argument("--chunk-mib", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    if args.size < 1 or args.chunk_mib < 1:
        parser.error("--size and --chunk-mib must be at least 1")
    sys.exit(run(args.size, args.chunk_mib, args.dir))


if __name__ == "__main__":
    main()
