"""Upload and download throughput of ferry's parallel workers against a sequential baseline.

Starts ``python -m emulator serve`` in its own process (so its CPU is not ours), writes a tree of
``--files`` random files of ``--file-mib`` MiB each, then moves it through ``transfer.Drive``
twice in the same run:

* baseline: one file at a time and one chunk at a time, the way a single-file client works;
* ferry: ``--transfers`` files in parallel and ``--chunks`` chunks in parallel within a file.

Every request gets ``--rtt-ms`` of delay through the emulator's fault injection, standing in for
the round trip of a real link: on bare loopback both ends are CPU-bound in one machine and
parallelism has no latency to hide.

It prints seconds, MiB/s and the ratio ferry / baseline for upload and for download, and checks
that every downloaded file is byte-identical. The machine's noise cancels out of the ratio, not
out of the absolute figures.

Run: ``.venv/bin/python -m bench.transfer_throughput [--files N] [--file-mib M]``.
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anyio
import structlog

from transfer import Drive, RemoteConfig, SavedUpload, TransferConfig

MIB = 1 << 20
EMAIL = "bench@example.com"
PASSWORD = "bench-password-1"


class _NullJournal:
    """A journal that keeps nothing: the benchmark never resumes."""

    async def load(self, key: str) -> SavedUpload | None:
        return None

    async def session_opened(self, key: str, session: SavedUpload) -> None:
        return None

    async def chunk_acked(self, key: str, index: int, etag: str) -> None:
        return None

    async def session_closed(self, key: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    transfers: int
    chunks: int


@contextmanager
def _emulator(data: Path, chunk_mib: int, chunk_concurrency: int) -> Iterator[str]:
    cmd = [
        sys.executable, "-m", "emulator", "serve", "--port", "0", "--data", str(data),
        "--user", f"{EMAIL}:{PASSWORD}", "--chunk-size", str(chunk_mib * MIB),
        "--chunk-concurrency", str(chunk_concurrency), "--quota", str(1 << 42),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("emulator listening on "):
            raise RuntimeError(f"emulator did not start: {line!r}")
        yield line.strip().rpartition(" ")[2]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _make_tree(root: Path, files: int, file_mib: int) -> int:
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"file-{i:03d}.bin").write_bytes(os.urandom(file_mib * MIB))
    return files * file_mib * MIB


async def _run(drive: Drive, mode: Mode, paths: list[Path], dst: Path) -> tuple[float, float]:
    """Upload ``paths`` under ``/bench/<mode>`` then download them into ``dst``; return times."""
    journal = _NullJournal()
    limit = anyio.CapacityLimiter(mode.transfers)

    async def up(path: Path) -> None:
        async with limit:
            await drive.upload(
                path, f"/bench/{mode.name}/{path.name}", overwrite=False, journal=journal,
                key=f"{mode.name}/{path.name}",
            )  # fmt: skip

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for path in paths:
            tg.start_soon(up, path)
    upload_s = time.perf_counter() - started

    entries = [e for e in await drive.list(f"/bench/{mode.name}") if not e.is_dir]

    async def down(entry_index: int) -> None:
        entry = entries[entry_index]
        async with limit:
            await drive.download(entry, dst / entry.name)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(len(entries)):
            tg.start_soon(down, i)
    download_s = time.perf_counter() - started

    return upload_s, download_s


async def _add_latency(url: str, rtt_ms: int) -> None:
    """Delay every request by ``rtt_ms`` through the emulator's admin fault API (a WAN link)."""
    if rtt_ms <= 0:
        return
    api = f"{url}/api/v4"
    async with aiohttp.ClientSession() as http:
        login = {"email": EMAIL, "password": PASSWORD}
        async with http.post(f"{api}/session/token", json=login) as resp:
            token = (await resp.json())["data"]["token"]["access_token"]
        rule = {"method": "*", "path": "*", "nth": 1, "times": 1 << 40, "delay_s": rtt_ms / 1000}
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(f"{api}/admin/faults", json=rule, headers=headers) as resp:
            body = await resp.json()
            if body["code"] != 0:
                raise SystemExit(f"could not add latency: {body}")


async def _measure(url: str, mode: Mode, work: Path, paths: list[Path]) -> tuple[float, float]:
    remote = RemoteConfig(url=url, email=EMAIL, password=PASSWORD)
    transfer = TransferConfig(chunk_concurrency=mode.chunks)
    tokens = work / f"tokens-{mode.name}.json"
    async with Drive.connect(remote, token_cache=tokens, transfer=transfer) as drive:
        return await _run(drive, mode, paths, work / mode.name)


def _bench(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        work = Path(tmp)
        total = _make_tree(work / "src", args.files, args.file_mib)
        paths = sorted((work / "src").iterdir())
        modes = [Mode("baseline", 1, 1), Mode("ferry", args.transfers, args.chunks)]
        results: dict[str, tuple[float, float]] = {}
        with _emulator(work / "data", args.chunk_mib, args.chunks) as url:
            anyio.run(_add_latency, url, args.rtt_ms)
            for mode in modes:
                (work / mode.name).mkdir()
                results[mode.name] = anyio.run(_measure, url, mode, work, paths)
                for path in paths:
                    if not filecmp.cmp(path, work / mode.name / path.name, shallow=False):
                        raise SystemExit(f"{mode.name}: {path.name} differs after the round trip")

    mib = total / MIB
    print(
        f"transfer_throughput: {args.files} files x {args.file_mib} MiB, chunk {args.chunk_mib} MiB"
    )
    for name, (up, down) in results.items():
        print(f"  {name:9s} upload {up:7.2f} s {mib / up:8.1f} MiB/s   "
              f"download {down:7.2f} s {mib / down:8.1f} MiB/s")  # fmt: skip
    base_up, base_down = results["baseline"]
    fast_up, fast_down = results["ferry"]
    print(f"  ratio ferry/baseline: upload x{base_up / fast_up:.2f}, "
          f"download x{base_down / fast_down:.2f} (higher is faster)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--file-mib", type=int, default=24)
    parser.add_argument("--chunk-mib", type=int, default=4)
    parser.add_argument("--transfers", type=int, default=4)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--rtt-ms", type=int, default=40, help="delay added to every request")
    _bench(parser.parse_args(argv))


if __name__ == "__main__":
    main()
