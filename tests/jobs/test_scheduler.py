"""The scheduler against an in-memory drive: outcomes, limits, deletes and state records."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from jobs.errors import JobLocked
from jobs.progress import LogReporter
from jobs.scheduler import (
    DriveLike,
    DriveOptions,
    Interrupt,
    RunOutcome,
    job_lock,
    run_job,
    worst_exit,
)
from jobs.spec import JobSpec
from jobs.state import StateDB
from tests.jobs.fakes import FakeDrive
from transfer import AuthError, QuotaExceeded, ServerError

pytestmark = pytest.mark.anyio


def make_src(root: Path, count: int, size: int = 10) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"f{i:03d}.bin").write_bytes(bytes([i % 256]) * size)


def job(tmp_path: Path, **keys: object) -> JobSpec:
    base = {"name": "j", "kind": "sync", "source": str(tmp_path / "src"), "target": "r:/t"}
    return JobSpec.model_validate({**base, **keys})


async def run(tmp_path: Path, spec: JobSpec, drive: FakeDrive) -> RunOutcome:
    @asynccontextmanager
    async def connect(_: JobSpec, __: DriveOptions) -> AsyncIterator[DriveLike]:
        yield drive

    async with StateDB.open(tmp_path / "state.db") as db:
        return await run_job(
            db, spec, connect, reporter=LogReporter(), interrupt=Interrupt(), stats_interval_s=0.05
        )


async def test_run_uploads_everything_then_nothing_and_records_runs(tmp_path: Path) -> None:
    """A first run copies every file (exit 0), the second copies none; both are recorded."""
    make_src(tmp_path / "src", 5)
    drive = FakeDrive()
    with capture_logs() as logs:
        first = await run(tmp_path, job(tmp_path), drive)
    assert (first.exit_code, first.snapshot.transfers) == (0, 5)
    assert {e["event"] for e in logs} >= {"job_started", "transfer_finished", "job_finished"}
    stats = [e for e in logs if e["event"] == "stats_reported"]
    assert stats[-1]["planned_bytes"] == 50
    assert stats[-1]["bytes"] == 50
    assert stats[-1]["files"] == 5
    second = await run(tmp_path, job(tmp_path), drive)
    assert (second.exit_code, second.snapshot.transfers, second.planned["skip"][0]) == (0, 0, 5)
    async with StateDB.open(tmp_path / "state.db") as db:
        runs = await db.runs("j")
        assert [(r.status, r.transfers) for r in runs] == [("done", 0), ("done", 5)]
        assert await db.item_counts("j") == {"done": 5}


async def test_failed_item_exits_1_records_it_and_blocks_mirror_deletes(tmp_path: Path) -> None:
    """One failing upload gives exit 1, a failed item in state, and no mirror delete."""
    make_src(tmp_path / "src", 3)
    drive = FakeDrive()
    drive.put("/t/extra.bin", b"x")
    drive.fail_paths["/t/f001.bin"] = ServerError(500, -1, "boom")
    outcome = await run(tmp_path, job(tmp_path, mode="mirror"), drive)
    assert outcome.exit_code == 1
    assert drive.deleted == []
    async with StateDB.open(tmp_path / "state.db") as db:
        failed = await db.failed_items("j")
    assert [(key, attempts) for key, attempts, _ in failed] == [("f001.bin", 1)]

    del drive.fail_paths["/t/f001.bin"]
    again = await run(tmp_path, job(tmp_path, mode="mirror"), drive)
    assert (again.exit_code, again.snapshot.transfers, again.deletes) == (0, 1, 1)
    assert drive.deleted == ["/t/extra.bin"]


async def test_mirror_refuses_all_deletes_above_max_delete(tmp_path: Path) -> None:
    """More planned deletes than max_delete: none is done and the run exits 1."""
    make_src(tmp_path / "src", 1)
    drive = FakeDrive()
    for i in range(3):
        drive.put(f"/t/old{i}.bin", b"x")
    outcome = await run(tmp_path, job(tmp_path, mode="mirror", max_delete=2), drive)
    assert outcome.exit_code == 1
    assert drive.deleted == []


async def test_mirror_counts_the_files_of_a_deleted_folder_against_max_delete(
    tmp_path: Path,
) -> None:
    """A target-only folder of 5 files is 5 deletes: max_delete = 2 refuses it, 5 allows it."""
    make_src(tmp_path / "src", 1)
    drive = FakeDrive()
    for i in range(5):
        drive.put(f"/t/old/f{i}.bin", b"x")
    refused = await run(tmp_path, job(tmp_path, mode="mirror", max_delete=2), drive)
    assert (refused.exit_code, refused.deletes, refused.planned["delete"]) == (1, 0, (5, 5))
    assert drive.deleted == []
    allowed = await run(tmp_path, job(tmp_path, mode="mirror", max_delete=5), drive)
    assert (allowed.exit_code, allowed.deletes) == (0, 5)
    assert drive.deleted == ["/t/old"]


async def test_download_mirror_counts_the_files_of_a_local_folder_against_max_delete(
    tmp_path: Path,
) -> None:
    """A local folder the remote source lacks counts each of its files against max_delete."""
    drive = FakeDrive()
    drive.put("/t/a.txt", b"a", 1_700_000_000.0)
    dst = tmp_path / "dst"
    (dst / "big").mkdir(parents=True)
    for i in range(4):
        (dst / "big" / f"{i}.txt").write_bytes(b"x")
    base = {"name": "d", "kind": "sync", "mode": "mirror", "source": "r:/t", "target": str(dst)}
    refused = await run(tmp_path, JobSpec.model_validate({**base, "max_delete": 3}), drive)
    assert (refused.exit_code, refused.deletes) == (1, 0)
    assert len(list((dst / "big").iterdir())) == 4
    allowed = await run(tmp_path, JobSpec.model_validate({**base, "max_delete": 4}), drive)
    assert (allowed.exit_code, allowed.deletes) == (0, 4)
    assert not (dst / "big").exists()


async def test_download_mirror_keeps_excluded_files_links_and_their_folders(
    tmp_path: Path,
) -> None:
    """Excluded files and skipped links survive a mirror, with the folders that hold them."""
    drive = FakeDrive()
    drive.put("/t/a.txt", b"a", 1_700_000_000.0)
    dst = tmp_path / "dst"
    (dst / "foo" / "sub").mkdir(parents=True)
    (dst / "foo" / "a.keep").write_bytes(b"keep")
    (dst / "foo" / "b.txt").write_bytes(b"b")
    (dst / "foo" / "sub" / "c.txt").write_bytes(b"c")
    (dst / "links").mkdir()
    (dst / "links" / "l").symlink_to(dst / "foo" / "b.txt")
    spec = JobSpec.model_validate(
        {
            "name": "d",
            "kind": "sync",
            "mode": "mirror",
            "source": "r:/t",
            "target": str(dst),
            "exclude": ["*.keep"],
        }
    )
    outcome = await run(tmp_path, spec, drive)
    assert (outcome.exit_code, outcome.deletes) == (0, 2)
    left = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*"))
    assert left == ["a.txt", "foo", "foo/a.keep", "links", "links/l"]


async def test_max_transfer_stops_before_passing_the_cap_with_exit_5(tmp_path: Path) -> None:
    """With max_transfer = 25 bytes and 10-byte files, two files go, then exit 5."""
    make_src(tmp_path / "src", 5)
    drive = FakeDrive()
    outcome = await run(tmp_path, job(tmp_path, max_transfer=25, transfers=1), drive)
    assert outcome.exit_code == 5
    assert len(drive.uploads) == 2


async def test_max_duration_cancels_in_flight_transfers_with_exit_5(tmp_path: Path) -> None:
    """A run longer than max_duration is cut short with exit 5 and recorded as limit_reached."""
    make_src(tmp_path / "src", 2)

    class SlowDrive(FakeDrive):
        async def upload(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            await anyio.sleep(30)
            raise AssertionError("not reached")

    outcome = await run(tmp_path, job(tmp_path, max_duration="200ms"), SlowDrive())
    assert (outcome.exit_code, outcome.status) == (5, "limit_reached")
    assert outcome.snapshot.errors == 0
    async with StateDB.open(tmp_path / "state.db") as db:
        assert await db.item_counts("j") == {"blocked": 2}


async def test_fatal_error_stops_the_run_with_exit_6(tmp_path: Path) -> None:
    """A quota error is fatal: no further file is started and the run exits 6."""
    make_src(tmp_path / "src", 6)
    drive = FakeDrive()
    drive.fail_paths["/t/f000.bin"] = QuotaExceeded(200, 40051, "Insufficient capacity")
    outcome = await run(tmp_path, job(tmp_path, transfers=1), drive)
    assert outcome.exit_code == 6
    assert drive.uploads == []
    assert "Insufficient capacity" in outcome.message
    async with StateDB.open(tmp_path / "state.db") as db:
        assert await db.item_counts("j") == {"failed": 1, "blocked": 5}


async def test_auth_failure_during_transfers_exits_3(tmp_path: Path) -> None:
    """A token refresh that fails mid-run is an authentication failure: exit 3."""
    make_src(tmp_path / "src", 2)
    drive = FakeDrive()
    drive.fail_paths["/t/f000.bin"] = AuthError(401, 401, "refresh token revoked")
    outcome = await run(tmp_path, job(tmp_path, transfers=1), drive)
    assert (outcome.exit_code, outcome.status) == (3, "auth_failed")


def test_job_lock_is_exclusive(tmp_path: Path) -> None:
    """A second holder of a job's lock gets JobLocked; other jobs are independent."""
    with job_lock(tmp_path, "a"), job_lock(tmp_path, "b"):
        second = job_lock(tmp_path, "a")
        with pytest.raises(JobLocked):
            second.__enter__()
    with job_lock(tmp_path, "a") as path:
        assert path.read_text() == f"{os.getpid()}\n"


def test_worst_exit_orders_severity() -> None:
    """Interrupts outrank auth and fatal errors, which outrank limits and partial runs."""
    assert worst_exit([0, 1, 5]) == 5
    assert worst_exit([1, 3, 6]) == 3
    assert worst_exit([0, 143]) == 143
    assert worst_exit([]) == 0


def test_example_config_validates_and_documents_every_key(tmp_path: Path) -> None:
    """config.example.toml is valid and mentions every key the specs accept."""
    from jobs.config import load_config
    from jobs.spec import JobSpec, RemoteSpec, StateSpec

    example = Path(__file__).parents[2] / "config.example.toml"
    load_config(example, tmp_path)
    text = example.read_text()
    keys = set(JobSpec.model_fields) | set(RemoteSpec.model_fields) | set(StateSpec.model_fields)
    missing = sorted(k for k in keys if f"{k} =" not in text)
    assert missing == []


async def test_download_mirror_fetches_new_files_and_deletes_local_extras(tmp_path: Path) -> None:
    """Remote-to-local mirror downloads what is missing and removes local extras and folders."""
    drive = FakeDrive()
    drive.put("/t/a/b.txt", b"bee", 1_700_000_000.0)
    drive.put("/t/c.txt", b"sea", 1_700_000_000.0)
    dst = tmp_path / "dst"
    (dst / "gone" / "deep").mkdir(parents=True)
    (dst / "gone" / "deep" / "x.txt").write_bytes(b"x")
    (dst / "extra.txt").write_bytes(b"e")
    spec = JobSpec.model_validate(
        {"name": "d", "kind": "sync", "mode": "mirror", "source": "r:/t", "target": str(dst)}
    )
    outcome = await run(tmp_path, spec, drive)
    assert (outcome.exit_code, outcome.snapshot.transfers, outcome.deletes) == (0, 2, 2)
    files = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert files == ["a/b.txt", "c.txt"]
    assert (dst / "a" / "b.txt").stat().st_mtime == 1_700_000_000.0
    again = await run(tmp_path, spec, drive)
    assert (again.snapshot.transfers, again.deletes) == (0, 0)


def test_jobs_all_is_sorted_and_resolves() -> None:
    """jobs.__all__ is sorted, unique and every name exists."""
    import jobs

    assert list(jobs.__all__) == sorted(set(jobs.__all__))
    assert all(hasattr(jobs, name) for name in jobs.__all__)


async def test_checksum_compare_catches_same_size_same_time_edits(tmp_path: Path) -> None:
    """compare = checksum re-uploads a same-size edit that size-mtime cannot see."""
    make_src(tmp_path / "src", 2)
    drive = FakeDrive()
    spec = job(tmp_path, compare="checksum")
    assert (await run(tmp_path, spec, drive)).snapshot.transfers == 2
    assert (await run(tmp_path, spec, drive)).snapshot.transfers == 0

    edited = tmp_path / "src" / "f001.bin"
    stat = edited.stat()
    edited.write_bytes(b"Z" * stat.st_size)
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (await run(tmp_path, job(tmp_path, name="other"), drive)).snapshot.transfers == 0
    again = await run(tmp_path, spec, drive)
    assert again.snapshot.transfers == 1
    assert drive.uploads[-1] == ("/t/f001.bin", True)
    assert drive.files["/t/f001.bin"][0] == b"Z" * stat.st_size


@pytest.mark.parametrize("compare", ["size-mtime", "checksum"])
async def test_rename_policy_does_not_pile_up_copies_across_runs(
    tmp_path: Path, compare: str
) -> None:
    """on_conflict = rename writes name (1).ext once; later runs see it and skip."""
    make_src(tmp_path / "src", 1)
    drive = FakeDrive()
    drive.put("/t/f000.bin", b"someone else's")
    spec = job(tmp_path, on_conflict="rename", compare=compare)
    first = await run(tmp_path, spec, drive)
    second = await run(tmp_path, spec, drive)
    assert (first.snapshot.transfers, second.snapshot.transfers) == (1, 0)
    assert second.planned["skip"] == (1, 10)
    assert [path for path, _ in drive.uploads] == ["/t/f000 (1).bin"]
    assert drive.files["/t/f000.bin"][0] == b"someone else's"


async def test_br28_dangling_link_is_one_error_and_the_run_is_partial(tmp_path: Path) -> None:
    """BR-28 following links: a.txt and good go up, dangling is the one error, exit 1."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"abc")
    (src / "good").symlink_to("a.txt")
    (src / "dangling").symlink_to("nowhere")
    (src / "loop").symlink_to(".")
    os.mkfifo(src / "pipe")
    drive = FakeDrive()
    outcome = await run(tmp_path, job(tmp_path, follow_symlinks=True), drive)
    assert (outcome.exit_code, outcome.status) == (1, "partial")
    assert sorted(path for path, _ in drive.uploads) == ["/t/a.txt", "/t/good"]
    async with StateDB.open(tmp_path / "state.db") as db:
        (record,) = await db.runs("j")
    assert record.errors == 1


async def test_missing_remote_source_is_an_error_not_an_empty_tree(tmp_path: Path) -> None:
    """A download mirror from a mistyped remote folder exits 1 and deletes nothing locally."""
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "precious.txt").write_bytes(b"keep me")
    spec = JobSpec.model_validate(
        {"name": "d", "kind": "sync", "mode": "mirror", "source": "r:/typo", "target": str(dst)}
    )
    outcome = await run(tmp_path, spec, FakeDrive())
    assert outcome.exit_code == 1
    assert (dst / "precious.txt").read_bytes() == b"keep me"


async def test_bwlimit_reaches_the_drive_as_a_limiter_for_the_job_direction(
    tmp_path: Path,
) -> None:
    """An upload job's bwlimit becomes the drive's upload limiter; downloads stay unlimited."""
    make_src(tmp_path / "src", 1)
    seen: list[DriveOptions] = []

    @asynccontextmanager
    async def connect(_: JobSpec, options: DriveOptions) -> AsyncIterator[DriveLike]:
        seen.append(options)
        yield FakeDrive()

    async with StateDB.open(tmp_path / "state.db") as db:
        spec = job(tmp_path, bwlimit="64KiB")
        await run_job(db, spec, connect, reporter=LogReporter(), interrupt=Interrupt())
    (options,) = seen
    assert options.up is not None
    assert options.up.rate_bytes_per_s == 64 * 1024
    assert options.down is None
    assert options.on_retry is not None


async def test_journaled_session_of_a_file_no_longer_planned_is_cancelled(tmp_path: Path) -> None:
    """A session left by a crash for a file that is gone now is cancelled; other jobs' stay."""
    from transfer import SavedUpload

    make_src(tmp_path / "src", 1)
    async with StateDB.open(tmp_path / "state.db") as db:
        saved = SavedUpload("s", "cloudreve://my/t/gone.bin", 9, 1, 0, "local", "x" * 32)
        await db.journal().session_opened("j:/t/gone.bin", saved)
        await db.journal().session_opened("other:/t/x.bin", saved)
    drive = FakeDrive()
    outcome = await run(tmp_path, job(tmp_path), drive)
    assert outcome.exit_code == 0
    assert drive.abandoned == ["j:/t/gone.bin"]
    async with StateDB.open(tmp_path / "state.db") as db:
        assert await db.journal_keys() == ["other:/t/x.bin"]


@pytest.mark.parametrize("upload", [True, False])
async def test_target_that_is_a_file_stops_the_plan(tmp_path: Path, upload: bool) -> None:
    """A target path holding a file is one clear error (exit 1), not a failure per item."""
    make_src(tmp_path / "src", 2)
    drive = FakeDrive()
    drive.put("/r/file", b"x")
    if upload:
        spec = job(tmp_path, target="r:/r/file")
    else:
        (tmp_path / "afile").write_bytes(b"x")
        spec = JobSpec.model_validate(
            {"name": "d", "kind": "download", "source": "r:/r", "target": str(tmp_path / "afile")}
        )
    outcome = await run(tmp_path, spec, drive)
    assert outcome.exit_code == 1
    assert outcome.planned == {}
    assert drive.uploads == []
    assert drive.downloads == []
