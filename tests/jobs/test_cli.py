"""The ``ferry`` commands without a server: status output, and how the process ends when its
output or its start-up is cut short.

Tests of the process start ``python -m jobs`` for real (about 1.5 s each); the others call
:func:`jobs.cli.main` in-process with runs made against an in-memory drive.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import psutil
import pytest
from structlog.testing import capture_logs

from jobs.cli import main
from jobs.config import load_config
from jobs.progress import LogReporter
from jobs.scheduler import DriveLike, DriveOptions, Interrupt, run_job
from jobs.spec import JobSpec
from jobs.state import StateDB
from tests.jobs.fakes import FakeDrive
from transfer import ServerError

CONFIG = """\
[remotes.home]
url = "http://127.0.0.1:9"
email = "me@example.com"
password_env = "FERRY_CLI_TEST_PASSWORD"

[state]
path = "state"

[[jobs]]
name = "photos"
kind = "upload"
source = "photos"
target = "home:/backup"
"""


def ferry_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ferry with its stdout a pipe whose reader has already gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "jobs", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            check=False,
            timeout=60,
        )
    finally:
        os.close(write)


@pytest.mark.parametrize("command", ["history", "status", "validate"])
def test_closed_stdout_exits_141_quietly(tmp_path: Path, command: str) -> None:
    """A reader that closed stdout early (``ferry history | head``) gets no error message."""
    config = tmp_path / "ferry.toml"
    config.write_text(CONFIG)
    done = ferry_into_closed_pipe(command, str(config))
    assert (done.returncode, done.stderr.decode()) == (141, "")


def run_once(config: Path, drive: FakeDrive) -> int:
    """Run the config's only job against ``drive`` and return its exit code."""
    job = load_config(config, config.parent).jobs[0]

    @asynccontextmanager
    async def connect(_: JobSpec, __: DriveOptions) -> AsyncIterator[DriveLike]:
        yield drive

    async def go() -> int:
        async with StateDB.open(config.parent / "state" / "state.db") as db:
            outcome = await run_job(db, job, connect, reporter=LogReporter(), interrupt=Interrupt())
        return outcome.exit_code

    with capture_logs():
        return anyio.run(go)


def test_status_describes_the_last_run_not_older_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a run with failed uploads, a run stopped by a missing source is what status shows."""
    config = tmp_path / "ferry.toml"
    config.write_text(CONFIG)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"a")
    drive = FakeDrive()
    drive.folders.add("/backup")
    drive.fail_paths["/backup/a.jpg"] = ServerError(500, -1, "boom")
    assert run_once(config, drive) == 1
    assert main(["status", str(config)]) == 0
    assert "failed x1: a.jpg: ServerError" in capsys.readouterr().out

    shutil.rmtree(tmp_path / "photos")
    assert run_once(config, drive) == 1
    assert main(["status", str(config)]) == 0
    out = capsys.readouterr().out
    assert "partial (exit 1), 0 transferred, 1 error(s) - 1 item(s) failed" in out
    assert f"! missing_source: {tmp_path / 'photos'} (does not exist)" in out
    assert "a.jpg" not in out


# Runs `python -m jobs` with one import made slow: finding croniter, which jobs.cli loads after
# anyio and structlog, announces itself on stdout and then takes 30 s.
SLOW_IMPORT = """
import runpy, sys, time

class SlowCroniter:
    def find_spec(self, name, path, target=None):
        if name == "croniter":
            print("importing", flush=True)
            time.sleep(30)
        return None

sys.meta_path.insert(0, SlowCroniter())
runpy.run_module("jobs", run_name="__main__", alter_sys=True)
"""


def test_sigint_while_modules_load_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """Ctrl-C while the modules are still importing exits 130 quietly."""
    config = tmp_path / "ferry.toml"
    config.write_text(CONFIG)
    with subprocess.Popen(
        [sys.executable, "-c", SLOW_IMPORT, "validate", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline() == b"importing\n"
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 130, err.decode()
    assert err == b""


def test_sigint_before_the_run_starts_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """Ctrl-C while password_command runs (before any run is recorded) exits 130 quietly."""
    config = tmp_path / "ferry.toml"
    config.write_text(
        CONFIG.replace(
            'password_env = "FERRY_CLI_TEST_PASSWORD"', 'password_command = ["sleep", "30"]'
        )
    )
    with subprocess.Popen(
        [sys.executable, "-m", "jobs", "run", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as proc:
        ferry = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        while not any(child.name() == "sleep" for child in ferry.children()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 130
    assert b"Traceback" not in err


def test_local_roots_not_utf8_are_shown_escaped_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config folder named with a non-UTF-8 byte: its paths print and store as ``\\xfe``."""
    folder = tmp_path / os.fsdecode(b"b\xfed")
    folder.mkdir()
    config = folder / "ferry.toml"
    config.write_text(CONFIG)
    assert run_once(config, FakeDrive()) == 1
    assert main(["status", str(config)]) == 0
    assert (
        f"! missing_source: {tmp_path}/b\\xfed/photos (does not exist)" in capsys.readouterr().out
    )
    done = subprocess.run(
        [sys.executable, "-m", "jobs", "validate", str(config)],
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"b\\xfed/photos -> home:/backup" in done.stdout


def use_drive(monkeypatch: pytest.MonkeyPatch, drive: FakeDrive) -> None:
    """Make in-process `ferry plan` / `ferry run` use ``drive`` instead of signing in."""

    @asynccontextmanager
    async def connect(_: object, __: JobSpec, ___: DriveOptions) -> AsyncIterator[DriveLike]:
        yield drive

    monkeypatch.setenv("FERRY_CLI_TEST_PASSWORD", "not-used")
    monkeypatch.setattr("jobs.cli._Connector.__call__", connect)


def test_history_records_the_exit_code_a_plan_returned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `ferry plan` that exits 1 (missing source) is stored as a dry run with exit 1."""
    config = tmp_path / "ferry.toml"
    config.write_text(CONFIG)
    drive = FakeDrive()
    drive.folders.add("/backup")
    use_drive(monkeypatch, drive)
    assert main(["plan", str(config), "--job", "photos"]) == 1
    (tmp_path / "photos").mkdir()
    assert main(["plan", str(config), "--job", "photos"]) == 0
    capsys.readouterr()
    assert main(["history", str(config)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(row[4], row[5]) for row in rows] == [("dry_run", "0"), ("dry_run", "1")]


def test_due_runs_only_scheduled_jobs_and_says_when_none_is_due(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--due skips a job without a schedule; with nothing due it prints one line and exits 0."""
    config = tmp_path / "ferry.toml"
    config.write_text(
        CONFIG
        + 'schedule = "0 3 * * *"\n\n[[jobs]]\nname = "adhoc"\nkind = "upload"\n'
        + 'source = "photos"\ntarget = "home:/adhoc"\n'
    )
    (tmp_path / "photos").mkdir()
    drive = FakeDrive()
    drive.folders.update({"/backup", "/adhoc"})
    use_drive(monkeypatch, drive)
    assert main(["run", str(config), "--due"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("job photos: done (exit 0)"), out
    assert "adhoc" not in out

    assert main(["run", str(config), "--due"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1, out
    assert out[0].startswith("no job is due: photos next at "), out
    assert out[0].endswith(" (0 3 * * *); adhoc has no schedule"), out


def test_plan_more_line_counts_hidden_lines_not_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deleted folder of 100 files is one plan line: "... and N more" counts hidden lines."""
    config = tmp_path / "ferry.toml"
    config.write_text(CONFIG.replace('kind = "upload"', 'kind = "sync"\nmode = "mirror"'))
    (tmp_path / "photos").mkdir()
    drive = FakeDrive()
    for index in range(100):
        drive.put(f"/backup/d1/f{index}", b"x")
    drive.put("/backup/d2/f", b"x")
    drive.put("/backup/d3/f", b"x")
    use_drive(monkeypatch, drive)
    assert main(["plan", str(config), "--job", "photos"]) == 0
    out = capsys.readouterr().out
    assert "  delete       102 item(s)" in out, out
    assert "d1 -> /backup/d1 [not_in_source: folder, 100 file(s)]" in out
    assert "... and" not in out

    assert main(["plan", str(config), "--job", "photos", "--limit", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = lines[lines.index(next(line for line in lines if "delete" in line)) :][:3]
    assert [line.strip() for line in shown[1:]] == [
        "d1 -> /backup/d1 [not_in_source: folder, 100 file(s)]",
        "... and 2 more",
    ], lines


def photos_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str = CONFIG) -> Path:
    """Write ``text`` as the config, with an empty ``photos`` source and a drive holding
    ``/backup`` that the commands use; return the config's path."""
    config = tmp_path / "ferry.toml"
    config.write_text(text)
    (tmp_path / "photos").mkdir()
    drive = FakeDrive()
    drive.folders.add("/backup")
    use_drive(monkeypatch, drive)
    return config


def test_status_says_when_due_as_run_due_decides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduled job that never ran is "due now" in status, as `run --due` runs it at once."""
    config = photos_job(tmp_path, monkeypatch, CONFIG + 'schedule = "0 3 * * *"\n')
    assert main(["status", str(config)]) == 0
    assert capsys.readouterr().out == "photos: never run; due now (0 3 * * *)\n"

    assert main(["run", str(config), "--due"]) == 0
    capsys.readouterr()
    assert main(["status", str(config)]) == 0
    status = capsys.readouterr().out.splitlines()[0]
    assert main(["run", str(config), "--due"]) == 0
    not_due = capsys.readouterr().out.strip()
    # Both name the same next slot: the first 03:00 after the run.
    slot = not_due.removeprefix("no job is due: photos next at ").removesuffix(" (0 3 * * *)")
    assert slot.endswith(" 03:00"), not_due
    assert status.endswith(f"; next due {slot} (0 3 * * *)"), status


def test_a_job_named_twice_runs_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--job photos --job photos` runs the job once."""
    config = photos_job(tmp_path, monkeypatch)
    assert main(["run", str(config), "--job", "photos", "--job", "photos"]) == 0
    assert capsys.readouterr().out.count("job photos: done") == 1


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "ten"])
def test_stats_interval_must_be_a_positive_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """A stats interval of 0 or less is a usage error (exit 2), not a busy loop or a crash."""
    config = tmp_path / "ferry.toml"
    config.write_text(CONFIG)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(config), "--stats-interval", value])
    assert exit_info.value.code == 2
    assert "--stats-interval" in capsys.readouterr().err


def test_plan_prints_a_name_with_control_characters_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newline, a tab or an escape in a file name is printed escaped, one item per line."""
    config = photos_job(tmp_path, monkeypatch)
    (tmp_path / "photos" / "new\nline\t\x1b[31m.txt").write_bytes(b"x")
    assert main(["plan", str(config), "--job", "photos"]) == 0
    out = capsys.readouterr().out
    assert "    new\\nline\\t\\x1b[31m.txt -> /backup/new\\nline\\t\\x1b[31m.txt\n" in out, out
    assert "\x1b" not in out
