"""End to end: the `ferry` CLI as a subprocess against an in-process emulator on a real port.

Each test starts the CLI several times as a real process (about 1.5 s of interpreter start and
imports each on this machine), so these tests take 5-10 s apiece; chunks are 16 KiB so the
files stay small.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import DEVNULL, PIPE

import anyio
import anyio.abc
import pytest

from emulator.testing import EmulatorHandle, running_emulator

pytestmark = pytest.mark.anyio

EMAIL = "ferry@example.com"
PASSWORD = "s3cret-Pa55word-xyzzy"
CHUNK = 16 * 1024
CHUNK_ROUTE = "/api/v4/file/upload/{id}/{index}"


@asynccontextmanager
async def emulator(tmp_path: Path, chunk_concurrency: int = 1) -> AsyncIterator[EmulatorHandle]:
    async with running_emulator(
        tmp_path,
        users={EMAIL: PASSWORD},
        chunk_size=CHUNK,
        chunk_concurrency=chunk_concurrency,
    ) as emu:
        yield emu


def write_config(tmp_path: Path, url: str, jobs: str) -> Path:
    path = tmp_path / "ferry.toml"
    path.write_text(
        f"""
[remotes.emu]
url = "{url}"
email = "{EMAIL}"
password_env = "FERRY_E2E_PASSWORD"

[state]
path = "state"

{jobs}
"""
    )
    return path


UPLOAD = """
[[jobs]]
name = "up"
kind = "upload"
source = "src"
target = "emu:/backup"
exclude = ["__pycache__/**"]
transfers = 3
"""

DOWNLOAD = """
[[jobs]]
name = "down"
kind = "download"
source = "emu:/backup"
target = "restore"
"""

MIRROR = """
[[jobs]]
name = "mirror"
kind = "sync"
mode = "mirror"
source = "src"
target = "emu:/backup"
exclude = ["__pycache__/**"]
max_delete = 2
"""


def make_tree(root: Path) -> dict[str, bytes]:
    """Create a small tree with nested folders, odd names and an excluded folder."""
    files = {
        "a.txt": b"alpha\n",
        "empty.dat": b"",
        "100% & more+x.txt": b"percent",
        "Track # 7.bin": os.urandom(3 * CHUNK),
        "deep/er/Se\u0301ance.flac": os.urandom(CHUNK + 5),
        "deep/big.bin": os.urandom(5 * CHUNK + 1),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    return files


async def ferry(
    config: Path, *args: str, password: str = PASSWORD, verbose: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m jobs` with the password in the environment, never in argv."""
    env = {**os.environ, "FERRY_E2E_PASSWORD": password}
    flags = ["-v"] if verbose else []
    command = [sys.executable, "-m", "jobs", *flags, args[0], str(config), *args[1:]]
    return await anyio.run_process(command, env=env, check=False, cwd=config.parent)


async def wait_for_chunks(emu: EmulatorHandle, count: int) -> None:
    """Wait until the emulator has seen ``count`` chunk requests."""
    with anyio.fail_after(30):
        for _ in itertools.count():
            if emu.requests.count("POST", CHUNK_ROUTE) >= count:
                return
            await anyio.sleep(0.02)


async def read_both(proc: anyio.abc.Process) -> tuple[bytes, bytes]:
    """Read a process's stdout and stderr to their ends, side by side."""
    found: dict[str, bytes] = {}

    async def drain(name: str, stream: anyio.abc.ByteReceiveStream | None) -> None:
        assert stream is not None
        found[name] = b"".join([chunk async for chunk in stream])

    async with anyio.create_task_group() as tg:
        tg.start_soon(drain, "out", proc.stdout)
        tg.start_soon(drain, "err", proc.stderr)
    return found["out"], found["err"]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_upload_download_roundtrip_and_rerun_transfers_nothing(tmp_path: Path) -> None:
    """An upload then a download give back the tree byte for byte; re-runs move nothing."""
    files = make_tree(tmp_path / "src")
    async with emulator(tmp_path) as emu:
        config = write_config(tmp_path, emu.url, UPLOAD + DOWNLOAD)
        first = await ferry(config, "run", "--job", "up")
        assert first.returncode == 0, first.stderr.decode()
        assert emu.file(EMAIL, "/backup/__pycache__") is None
        chunks = emu.requests.count("POST", CHUNK_ROUTE)

        again = await ferry(config, "run", "--job", "up")
        assert again.returncode == 0, again.stderr.decode()
        assert emu.requests.count("POST", CHUNK_ROUTE) == chunks
        assert emu.requests.count("PUT", "/api/v4/file/upload") == len(files)
        assert b"0 file(s) / 0 B transferred, 6 unchanged" in again.stdout

        down = await ferry(config, "run", "--job", "down")
        assert down.returncode == 0, down.stderr.decode()
        restored = tree_bytes(tmp_path / "restore")
        assert restored == {k.replace("Se\u0301", "S\u00e9"): v for k, v in files.items()}

        down_again = await ferry(config, "run", "--job", "down")
        assert down_again.returncode == 0
        assert b"0 file(s) / 0 B transferred" in down_again.stdout


async def test_mirror_deletes_only_what_the_source_lacks_within_max_delete(tmp_path: Path) -> None:
    """A mirror run deletes remote extras after an error-free run, never more than max_delete."""
    make_tree(tmp_path / "src")
    async with emulator(tmp_path) as emu:
        config = write_config(tmp_path, emu.url, MIRROR)
        assert (await ferry(config, "run")).returncode == 0
        (tmp_path / "src" / "a.txt").unlink()
        plan = await ferry(config, "plan", "--job", "mirror")
        assert plan.returncode == 0
        assert b"a.txt -> /backup/a.txt [not_in_source]" in plan.stdout
        assert emu.file(EMAIL, "/backup/a.txt") is not None

        done = await ferry(config, "run")
        assert done.returncode == 0, done.stderr.decode()
        assert emu.file(EMAIL, "/backup/a.txt") is None
        assert b"1 deleted" in done.stdout

        for rel in ("Track # 7.bin", "empty.dat", "deep/big.bin"):
            (tmp_path / "src" / rel).unlink()
        refused = await ferry(config, "run")
        assert refused.returncode == 1
        assert emu.file(EMAIL, "/backup/empty.dat") is not None
        assert b"deletes_refused" in refused.stderr


@pytest.mark.parametrize("in_flight", [1, 3])
async def test_s6_6_sigkill_mid_upload_resumes_resending_at_most_chunks_in_flight(
    tmp_path: Path, in_flight: int
) -> None:
    """After kill -9 mid-upload the next run resumes; only chunks in flight are sent twice."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(40 * CHUNK + 123)
    (src / "big.bin").write_bytes(data)
    async with emulator(tmp_path, chunk_concurrency=in_flight) as emu:
        config = write_config(tmp_path, emu.url, UPLOAD)
        emu.faults.add(method="POST", path=CHUNK_ROUTE, nth=1, times=10_000, delay_s=0.05)
        env = {**os.environ, "FERRY_E2E_PASSWORD": PASSWORD}
        command = [sys.executable, "-m", "jobs", "run", str(config)]
        async with await anyio.open_process(
            command, env=env, stdout=DEVNULL, stderr=DEVNULL
        ) as proc:
            await wait_for_chunks(emu, 12)
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
        sent_before = emu.requests.count("POST", CHUNK_ROUTE)
        emu.faults.clear()

        resumed = await ferry(config, "run")
        assert resumed.returncode == 0, resumed.stderr.decode()
        assert b"killed" in (await ferry(config, "history")).stdout
        events = [json.loads(line) for line in resumed.stderr.splitlines()]
        assert any(e["event"] == "upload_resumed" and e["level"] == "info" for e in events)
        last = [e for e in events if e["event"] == "stats_reported"][-1]
        assert last["resumed_bytes"] > 0
        assert last["bytes"] + last["resumed_bytes"] >= last["total_bytes"] == len(data)
        assert last["eta_s"] == 0.0
        total = emu.requests.count("POST", CHUNK_ROUTE)
        chunks = 41
        assert sent_before < chunks
        # Each chunk once, plus at most the chunks that were in flight at the kill.
        assert chunks <= total <= chunks + in_flight
        (tmp_path / "dl").mkdir()
        download = await ferry(write_config(tmp_path / "dl", emu.url, DOWNLOAD), "run")
        assert download.returncode == 0, download.stderr.decode()
        assert tree_bytes(tmp_path / "dl" / "restore") == {"big.bin": data}


async def test_second_concurrent_run_of_a_job_exits_4(tmp_path: Path) -> None:
    """While a run holds the job lock, a second run of the same job exits 4 at once."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "slow.bin").write_bytes(os.urandom(6 * CHUNK))
    async with emulator(tmp_path) as emu:
        config = write_config(tmp_path, emu.url, UPLOAD)
        emu.faults.add(method="POST", path=CHUNK_ROUTE, nth=1, times=10_000, delay_s=0.5)
        env = {**os.environ, "FERRY_E2E_PASSWORD": PASSWORD}
        command = [sys.executable, "-m", "jobs", "run", str(config)]
        async with await anyio.open_process(
            command, env=env, stdout=DEVNULL, stderr=DEVNULL
        ) as first:
            await wait_for_chunks(emu, 2)
            second = await ferry(config, "run")
            assert second.returncode == 4, (second.stdout + second.stderr).decode()
            assert b"already running" in second.stderr
            emu.faults.clear()
            assert await first.wait() == 0


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_signal_saves_state_exits_128_plus_signal_and_next_run_resumes(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    """SIGTERM/SIGINT stop the run with exit 143/130, recorded and summed up on stdout, with a
    run_interrupted log line naming the job and run; the next run completes it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(30 * CHUNK))
    (src / "a.txt").write_bytes(b"small")
    async with emulator(tmp_path) as emu:
        config = write_config(tmp_path, emu.url, UPLOAD.replace("transfers = 3", "transfers = 1"))
        emu.faults.add(method="POST", path=CHUNK_ROUTE, nth=1, times=10_000, delay_s=0.05)
        env = {**os.environ, "FERRY_E2E_PASSWORD": PASSWORD}
        command = [sys.executable, "-m", "jobs", "run", str(config)]
        async with await anyio.open_process(command, env=env, stdout=PIPE, stderr=PIPE) as proc:
            await wait_for_chunks(emu, 5)
            proc.send_signal(signum)
            with anyio.fail_after(20):
                out, err = await read_both(proc)
                assert await proc.wait() == code
        emu.faults.clear()
        # a.txt went first (plan order) and big.bin was cut short.
        assert f"job up: interrupted (exit {code}), 1 file(s) / ".encode() in out, out
        logs = [json.loads(line) for line in err.splitlines()]
        [stopped] = [line for line in logs if line["event"] == "run_interrupted"]
        assert stopped["job_id"] == "up"
        assert isinstance(stopped["run_id"], int)
        history = await ferry(config, "history")
        assert b"interrupted" in history.stdout
        resumed = await ferry(config, "run")
        assert resumed.returncode == 0, resumed.stderr.decode()
        # a.txt's one chunk, big.bin's 30, and at most one re-sent.
        assert emu.requests.count("POST", CHUNK_ROUTE) <= 1 + 30 + 1
        assert b"job up: done (exit 0), 1 file(s) / " in resumed.stdout


async def test_exit_codes_for_auth_failure_and_transfer_limit(tmp_path: Path) -> None:
    """A wrong password exits 3; a max_transfer cap exits 5."""
    make_tree(tmp_path / "src")
    async with emulator(tmp_path) as emu:
        config = write_config(tmp_path, emu.url, UPLOAD)
        wrong = await ferry(config, "run", password="not-the-password")
        assert wrong.returncode == 3, wrong.stderr.decode()

        limited = write_config(tmp_path, emu.url, UPLOAD + 'max_transfer = "20KiB"\n')
        capped = await ferry(limited, "run")
        assert capped.returncode == 5, capped.stderr.decode()
        assert b"max_transfer reached" in capped.stdout


async def test_unreachable_server_exits_6_after_retries(tmp_path: Path) -> None:
    """A server that refuses connections is a fatal remote error (exit 6) once retries run out."""
    make_tree(tmp_path / "src")
    unreachable = await ferry(write_config(tmp_path, "http://127.0.0.1:9", UPLOAD), "run")
    assert unreachable.returncode == 6, unreachable.stderr.decode()
    assert b'"retries": 4' in unreachable.stderr


async def test_secrets_never_reach_output(tmp_path: Path) -> None:
    """Across validate, plan, run (verbose) and status the password is never printed."""
    make_tree(tmp_path / "src")
    async with emulator(tmp_path) as emu:
        config = write_config(tmp_path, emu.url, UPLOAD)
        outputs = [
            await ferry(config, "validate"),
            await ferry(config, "plan", "--job", "up"),
            await ferry(config, "run", verbose=True),
            await ferry(config, "status"),
            await ferry(config, "history"),
        ]
    for done in outputs:
        assert done.returncode == 0, done.stderr.decode()
        assert PASSWORD.encode() not in done.stdout + done.stderr
    assert b"event" in outputs[2].stderr


async def test_source_name_not_utf8_fails_alone_and_the_rest_transfers(tmp_path: Path) -> None:
    """A file named with non-UTF-8 bytes is reported escaped and skipped; the run exits 1."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.txt").write_bytes(b"good")
    (src / os.fsdecode(b"bad\xffutf8.txt")).write_bytes(b"x")
    async with emulator(tmp_path) as emu:
        config = write_config(tmp_path, emu.url, UPLOAD)
        plan = await ferry(config, "plan", "--job", "up")
        assert plan.returncode == 1, plan.stderr.decode()
        assert b"  fail           1 item(s)" in plan.stdout
        assert b"bad\\xffutf8.txt -> /backup/bad\\xffutf8.txt [undecodable_name: " in plan.stdout
        done = await ferry(config, "run")
        assert done.returncode == 1, done.stderr.decode()
        assert b"Traceback" not in done.stderr
        assert b"bad\\\\xffutf8.txt" in done.stderr
        assert emu.file(EMAIL, "/backup/good.txt") is not None
        history = await ferry(config, "history")
    assert history.stdout.split(b"\n")[1].split()[4:6] == [b"partial", b"1"]


async def test_plan_and_run_into_a_closed_stdout_exit_141_quietly(tmp_path: Path) -> None:
    """plan and run whose stdout reader has gone end quietly; the run is still recorded."""
    make_tree(tmp_path / "src")
    async with emulator(tmp_path) as emu:
        config = write_config(tmp_path, emu.url, UPLOAD)
        env = {**os.environ, "FERRY_E2E_PASSWORD": PASSWORD}
        for args in (["plan", str(config), "--job", "up"], ["run", str(config)]):
            read, write = os.pipe()
            os.close(read)
            try:
                done = await anyio.run_process(
                    [sys.executable, "-m", "jobs", *args], env=env, stdout=write, check=False
                )
            finally:
                os.close(write)
            assert done.returncode == 141, done.stderr.decode()
            assert b"Traceback" not in done.stderr
            assert b"Broken pipe" not in done.stderr
        assert emu.file(EMAIL, "/backup/a.txt") is not None
        history = await ferry(config, "history")
    assert history.stdout.split(b"\n")[1].split()[4:6] == [b"done", b"0"]


async def test_run_summary_counts_a_bad_root_as_the_failure_it_reports(tmp_path: Path) -> None:
    """A missing source or a target that is a file: "1 failed" and "1 item(s) failed" agree."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"a")
    jobs = """
[[jobs]]
name = "nosrc"
kind = "upload"
source = "missing"
target = "emu:/backup"

[[jobs]]
name = "filetarget"
kind = "upload"
source = "src"
target = "emu:/backup/a.txt"
"""
    async with emulator(tmp_path) as emu:
        config = write_config(tmp_path, emu.url, UPLOAD + jobs)
        assert (await ferry(config, "run", "--job", "up")).returncode == 0
        for name in ("nosrc", "filetarget"):
            done = await ferry(config, "run", "--job", name)
            assert done.returncode == 1, done.stderr.decode()
            assert b" 1 failed, " in done.stdout
            assert done.stdout.rstrip().endswith(b" - 1 item(s) failed")


async def test_names_the_drive_refuses_are_failed_by_the_plan_not_sent(tmp_path: Path) -> None:
    """A name with ':' shows as a failed plan item and is never uploaded; the rest is, exit 1."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a:b.txt").write_bytes(b"colon")
    (src / "fine.txt").write_bytes(b"fine")
    async with emulator(tmp_path) as emu:
        config = write_config(tmp_path, emu.url, UPLOAD)
        plan = await ferry(config, "plan", "--job", "up")
        assert plan.returncode == 1, plan.stderr.decode()
        assert b"a:b.txt -> /backup/a:b.txt [invalid_remote_name: 'a:b.txt' contains ':']" in (
            plan.stdout
        )
        done = await ferry(config, "run")
        assert done.returncode == 1, done.stderr.decode()
        assert b" 1 failed, " in done.stdout
        assert emu.requests.count("PUT", "/api/v4/file/upload") == 1
        assert emu.file(EMAIL, "/backup/fine.txt") is not None


async def test_onedrive_empty_file_is_not_re_sent_on_every_run(tmp_path: Path) -> None:
    """OneDrive empty files go through PUT /file/content, which keeps no mtime: a re-run of
    the same tree must still find them unchanged."""
    root = tmp_path / "src"
    root.mkdir()
    (root / "empty.dat").write_bytes(b"")
    (root / "a.txt").write_bytes(b"alpha")
    old = 1_600_000_000
    for path in root.iterdir():
        os.utime(path, (old, old))
    async with running_emulator(tmp_path, users={EMAIL: PASSWORD}, policy="onedrive") as emu:
        config = write_config(tmp_path, emu.url, UPLOAD)
        first = await ferry(config, "run", "--job", "up")
        assert first.returncode == 0, first.stderr.decode()
        assert emu.requests.count("PUT", "/api/v4/file/content") == 1
        again = await ferry(config, "run", "--job", "up")
        assert again.returncode == 0, again.stderr.decode()
        assert b"0 file(s) / 0 B transferred, 2 unchanged" in again.stdout
        assert emu.requests.count("PUT", "/api/v4/file/content") == 1


async def test_tls_is_verified_by_default_and_ca_bundle_trusts_a_private_ca(
    tmp_path: Path,
) -> None:
    """A self-signed server is refused (exit 6, nothing sent) until ca_bundle names its CA."""
    from tests.jobs.tls import self_signed, tls_front

    cert, key = self_signed(tmp_path / "certs")
    make_tree(tmp_path / "src")
    async with emulator(tmp_path) as emu, tls_front(emu.url, cert, key) as url:
        plain = write_config(tmp_path, url, UPLOAD)
        refused = await ferry(plain, "run")
        assert refused.returncode == 6, refused.stderr.decode()
        assert b"certificate verify failed" in refused.stderr.lower()
        assert emu.requests.count("POST", CHUNK_ROUTE) == 0

        trusted = plain.read_text().replace(
            'password_env = "FERRY_E2E_PASSWORD"',
            'password_env = "FERRY_E2E_PASSWORD"\nca_bundle = "certs/cert.pem"',
        )
        plain.write_text(trusted)
        done = await ferry(plain, "run")
        assert done.returncode == 0, done.stderr.decode()
        assert emu.file(EMAIL, "/backup/a.txt") is not None


async def test_plan_log_lines_carry_the_job_and_run_ids(tmp_path: Path) -> None:
    """`ferry plan` binds job_id and run_id like a run: its warnings name both."""
    make_tree(tmp_path / "src")
    (tmp_path / "src" / "link").symlink_to("a.txt")
    async with emulator(tmp_path) as emu:
        done = await ferry(write_config(tmp_path, emu.url, UPLOAD), "plan", "--job", "up")
    assert done.returncode == 0, done.stderr.decode()
    [line] = [json.loads(s) for s in done.stderr.splitlines() if b"symlink_skipped" in s]
    assert (line["job_id"], line["path"]) == ("up", "link")
    assert isinstance(line["run_id"], int)


async def test_secrets_from_a_command_and_totp_never_reach_output(tmp_path: Path) -> None:
    """A password_command password and a TOTP secret are never printed, even on failures."""
    import pyotp

    secret = pyotp.random_base32()
    (tmp_path / "pw.py").write_text(f"print({PASSWORD!r})\n")
    make_tree(tmp_path / "src")
    async with running_emulator(
        tmp_path, users={EMAIL: PASSWORD}, chunk_size=CHUNK, totp_secrets={EMAIL: secret}
    ) as emu:
        config = write_config(tmp_path, emu.url, UPLOAD)
        config.write_text(
            config.read_text().replace(
                'password_env = "FERRY_E2E_PASSWORD"',
                f'password_command = [{sys.executable!r}, "pw.py"]\n'
                'totp_secret_env = "FERRY_E2E_TOTP"',
            )
        )
        env = {**os.environ, "FERRY_E2E_TOTP": secret}
        runs = []
        for totp in (secret, pyotp.random_base32()):
            env["FERRY_E2E_TOTP"] = totp
            # Without cached tokens every run signs in, so the wrong secret is used.
            shutil.rmtree(tmp_path / "state" / "tokens", ignore_errors=True)
            command = [sys.executable, "-m", "jobs", "-v", "run", str(config)]
            runs.append(await anyio.run_process(command, env=env, check=False, cwd=tmp_path))
    assert [done.returncode for done in runs] == [0, 3], runs[1].stderr.decode()
    for done in runs:
        output = done.stdout + done.stderr
        assert PASSWORD.encode() not in output
        assert secret.encode() not in output
