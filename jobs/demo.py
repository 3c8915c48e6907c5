"""``make demo``: a real upload and download through the ``ferry`` CLI against the emulator.

Steps: start the emulator as a subprocess (data under ``.demo/``), write a config, upload the
Python standard library of this interpreter (its own exclude rules leave out ``site-packages``
and ``__pycache__``) plus a generated 300 MiB file, re-run the upload to show it moves nothing,
download everything into ``.demo/restore`` and compare it byte for byte with the sources. The
password goes to ``ferry`` through the environment only. Re-running the demo starts afresh,
keeping only the generated file.
"""

from __future__ import annotations

import filecmp
import json
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.filters import Filter
from jobs.plan import walk_local
from jobs.state import ScanRow

__all__ = ["main"]

DEMO_DIR = Path(".demo")
EMAIL = "demo@example.com"
BIG_SIZE = 300 * 1024 * 1024
EXCLUDES = ["site-packages/**", "__pycache__/**"]
_MIB = 1024 * 1024


def main() -> int:
    """Run the demo; return 0 when the restored tree verified."""
    root = DEMO_DIR.resolve()
    for stale in ("emulator", "state", "restore", "ferry.toml", "emulator.log"):
        path = root / stale
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    root.mkdir(exist_ok=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    big = _generated_file(root / "generated")
    password = secrets.token_urlsafe(18)
    print("ferry demo")
    with _emulator(root, password) as url:
        config = _write_config(root, url, stdlib, big.parent)
        print(f"  emulator   {url} (data in {root / 'emulator'})")
        print(f"  config     {config}")
        print(f"  sources    {stdlib} (without site-packages, __pycache__)")
        print(f"             {big} ({BIG_SIZE // _MIB} MiB)")
        env = {**os.environ, "FERRY_DEMO_PASSWORD": password}
        steps = [
            ("upload", ["--job", "stdlib-up", "--job", "generated-up"]),
            ("re-run (moves nothing)", ["--job", "stdlib-up", "--job", "generated-up"]),
            ("download", ["--job", "restore"]),
        ]
        for number, (title, args) in enumerate(steps, start=1):
            print(f"[{number}/4] {title}: ferry run {config.name} {' '.join(args)}", flush=True)
            code = _ferry(config, args, env)
            if code != 0:
                print(f"ferry exited {code}; see the log lines above", file=sys.stderr)
                return code
    print("[4/4] verify: byte-for-byte comparison of .demo/restore with the sources", flush=True)
    return _verify(stdlib, big, root / "restore")


def _generated_file(folder: Path) -> Path:
    """Create (once) a 300 MiB file of pseudo-random data."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "big-300MiB.bin"
    if path.exists() and path.stat().st_size == BIG_SIZE:
        return path
    block = os.urandom(_MIB)
    with path.open("wb") as out:
        for index in range(BIG_SIZE // _MIB):
            # Vary every block so no two chunks of the upload are equal.
            out.write(index.to_bytes(8, "big") + block[8:])
    return path


@contextmanager
def _emulator(root: Path, password: str) -> Iterator[str]:
    """Start ``python -m emulator serve`` on a free port and yield its URL."""
    log = (root / "emulator.log").open("wb")
    command = [
        sys.executable,
        "-m",
        "emulator",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data",
        str(root / "emulator"),
        "--user",
        f"{EMAIL}:{password}",
        "--chunk-size",
        str(8 * _MIB),
        "--chunk-concurrency",
        "4",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "http://" not in line:
            raise RuntimeError(f"the emulator did not start; see {root / 'emulator.log'}")
        yield line.strip().rpartition(" ")[2]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _write_config(root: Path, url: str, stdlib: Path, generated: Path) -> Path:
    path = root / "ferry.toml"
    excludes = json.dumps(EXCLUDES)
    path.write_text(
        f"""# Written by `make demo` (python -m jobs.demo).
[remotes.demo]
url = "{url}"
email = "{EMAIL}"
password_env = "FERRY_DEMO_PASSWORD"

[state]
path = "state"

[defaults]
transfers = 4
retries = 3

[[jobs]]
name = "stdlib-up"
kind = "upload"
source = {json.dumps(str(stdlib))}
target = "demo:/demo/stdlib"
exclude = {excludes}

[[jobs]]
name = "generated-up"
kind = "upload"
source = {json.dumps(str(generated))}
target = "demo:/demo/generated"

[[jobs]]
name = "restore"
kind = "download"
source = "demo:/demo"
target = "restore"
"""
    )
    return path


def _ferry(config: Path, args: list[str], env: dict[str, str]) -> int:
    """Run the real CLI; on a terminal it draws its own bars, else show its stats lines."""
    command = [sys.executable, "-m", "jobs", "run", str(config), *args, "--stats-interval", "2"]
    if sys.stderr.isatty():
        return subprocess.run(command, env=env, check=False).returncode
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        _show_log_line(line)
    return proc.wait()


def _show_log_line(line: str) -> None:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        print(line, end="", file=sys.stderr)
        return
    if event.get("event") == "stats_reported":
        done = event["bytes"] + event["resumed_bytes"]
        total = max(event["planned_bytes"], 1)
        print(
            f"    {event.get('job_id')}: {event['transfers']}/{event['files']} files,"
            f" {done / _MIB:.1f}/{total / _MIB:.1f} MiB ({100 * done / total:.0f}%),"
            f" {event['speed_bps'] / _MIB:.1f} MiB/s, {event['errors']} errors",
            flush=True,
        )
    elif event.get("level") in ("warning", "error"):
        print(f"    {event.get('level')}: {event.get('event')} {event.get('path', '')}", flush=True)


def _verify(stdlib: Path, big: Path, restore: Path) -> int:
    """Compare every file the jobs should have copied with its restored copy."""
    started = time.monotonic()
    filt = Filter.build([], EXCLUDES)
    expected: list[tuple[Path, Path]] = []
    for batch in walk_local(stdlib, filt):
        for item in batch:
            if isinstance(item, ScanRow) and not item.is_dir:
                expected.append((stdlib / item.path, restore / "stdlib" / item.key))
    expected.append((big, restore / "generated" / big.name))
    restored = sum(1 for p in restore.rglob("*") if p.is_file())
    bad = [
        str(dst) for src, dst in expected if not dst.is_file() or not filecmp.cmp(src, dst, False)
    ]
    total = sum(src.stat().st_size for src, _ in expected)
    if bad or restored != len(expected):
        print(
            f"NOT verified: {len(bad)} file(s) differ or are missing, e.g. {bad[:5]};"
            f" {restored} restored, {len(expected)} expected",
            file=sys.stderr,
        )
        return 1
    print(
        f"verified: {len(expected)} files, {total / _MIB:.1f} MiB restored byte for byte"
        f" ({time.monotonic() - started:.1f} s to compare)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
