"""Measure the emulator's memory during a large chunked upload.

Starts ``python -m emulator serve`` in its own process, samples that process's RSS (psutil)
while this process uploads a sparse file of ``--size`` bytes (2 GiB by default) through
``PUT /file/upload`` and ``POST /file/upload/{id}/{index}``, and prints the peak RSS against the
idle baseline measured in the same run. The emulator must stream chunks to disk, so the peak
should stay far below the file size (the target is under 200 MiB).

Run: ``.venv/bin/python -m bench.emulator_memory [--size BYTES] [--chunk-size BYTES]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import anyio
import psutil
from anyio.abc import Process

MIB = 1 << 20
EMAIL = "bench@example.com"
PASSWORD = "bench-password"


async def _start(data_dir: Path, chunk_size: int) -> tuple[Process, str]:
    cmd = [
        sys.executable, "-m", "emulator", "serve", "--port", "0", "--data", str(data_dir),
        "--user", f"{EMAIL}:{PASSWORD}", "--chunk-size", str(chunk_size),
        "--quota", str(1 << 42),
    ]  # fmt: skip
    proc = await anyio.open_process(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = b""
    with anyio.fail_after(60):
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive(1)
    if not line.startswith(b"emulator listening on "):
        proc.kill()
        raise RuntimeError(f"emulator did not start: {line!r}")
    return proc, line.decode().strip().rpartition(" ")[2]


async def _sample(pid: int, peak: list[int], done: anyio.Event) -> None:
    proc = psutil.Process(pid)
    while not done.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        await anyio.sleep(0.05)


async def _upload(url: str, src: Path, size: int) -> int:
    api = f"{url}/api/v4"
    async with aiohttp.ClientSession() as http:
        login = {"email": EMAIL, "password": PASSWORD}
        async with http.post(f"{api}/session/token", json=login) as r:
            token = (await r.json())["data"]["token"]["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        body = {"uri": "cloudreve://my/bench/big.bin", "size": size}
        async with http.put(f"{api}/file/upload", json=body, headers=auth) as r:
            sess = (await r.json())["data"]
        chunk = sess["chunk_size"] or size
        async with await anyio.open_file(src, "rb") as f:
            for index in range(max(1, -(-size // chunk))):
                data = await f.read(chunk)
                path = f"{api}/file/upload/{sess['session_id']}/{index}"
                async with http.post(path, data=data, headers=auth) as r:
                    answer = await r.json()
                    if answer["code"] != 0:
                        raise RuntimeError(f"chunk {index} failed: {answer}")
        info = {"uri": "cloudreve://my/bench/big.bin"}
        async with http.get(f"{api}/file/info", params=info, headers=auth) as r:
            return int((await r.json())["data"]["size"])


async def run(size: int, chunk_size: int) -> int:
    """Run the benchmark; return the process exit status."""
    with tempfile.TemporaryDirectory(prefix="emulator-mem-") as tmp:
        src = Path(tmp) / "sparse.bin"
        async with await anyio.open_file(src, "wb") as f:
            await f.truncate(size)
        proc, url = await _start(Path(tmp) / "data", chunk_size)
        async with proc:
            await anyio.sleep(0.5)
            baseline = psutil.Process(proc.pid).memory_info().rss
            peak = [baseline]
            done = anyio.Event()
            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_sample, proc.pid, peak, done)
                try:
                    stored = await _upload(url, src, size)
                finally:
                    done.set()
            elapsed = time.monotonic() - started
            proc.terminate()
            with anyio.fail_after(30):
                await proc.wait()
    growth = peak[0] - baseline
    print(
        f"upload: {size / MIB:.0f} MiB in {elapsed:.1f} s ({size / MIB / elapsed:.0f} MiB/s), "
        f"chunk {chunk_size / MIB:.0f} MiB, stored size {stored}"
    )
    print(
        f"emulator RSS: idle {baseline / MIB:.1f} MiB, peak {peak[0] / MIB:.1f} MiB, "
        f"growth {growth / MIB:.1f} MiB ({peak[0] / baseline:.2f}x idle)"
    )
    ok = stored == size and peak[0] < 200 * MIB
    print("result:", "OK (peak under 200 MiB)" if ok else "FAIL")
    return 0 if ok else 1


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2 << 30)
    parser.add_argument("--chunk-size", type=int, default=25 * MIB)
    args = parser.parse_args()
    sys.exit(anyio.run(run, args.size, args.chunk_size))


if __name__ == "__main__":
    main()
