"""The planner: local walk edge cases and the decision per key (against an in-memory drive)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from jobs.filters import Filter
from jobs.plan import PlanSummary, WalkIssue, drive_name_problem, plan_job, walk_local
from jobs.spec import JobSpec
from jobs.state import PlanRow, ScanRow, StateDB
from tests.jobs.fakes import FakeDrive
from transfer import ListingInconsistent

pytestmark = pytest.mark.anyio


def local_tree(root: Path, files: dict[str, bytes], mtime: float = 1_700_000_000.0) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))


def upload_job(tmp_path: Path, **keys: object) -> JobSpec:
    data = {"name": "j", "kind": "upload", "source": str(tmp_path / "src"), "target": "r:/t"}
    return JobSpec.model_validate({**data, **keys}, context={"base": tmp_path})


async def plan(tmp_path: Path, job: JobSpec, drive: FakeDrive) -> tuple[PlanSummary, list[PlanRow]]:
    async with StateDB.open(tmp_path / "state.db") as db:
        run_id = await db.start_run(await db.job_id(job.name))
        summary = await plan_job(db, run_id, job, drive, now=time.time)
        rows = [
            row
            for action in ("copy", "mkdir", "skip", "fail", "delete")
            async for page in db.plan_pages(run_id, action)
            for row in page
        ]
    return summary, rows


def by_action(rows: list[PlanRow]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row.action, []).append(row.key)
    return out


def test_br28_walk_skips_symlinks_and_special_files_without_opening_them(tmp_path: Path) -> None:
    """BR-28: links skipped (warning), FIFO and socket skipped unopened, only a.txt listed."""
    root = tmp_path / "src"
    local_tree(root, {"a.txt": b"abc"})
    (root / "good").symlink_to("a.txt")
    (root / "dangling").symlink_to("nowhere")
    (root / "loop").symlink_to(".")
    os.mkfifo(root / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    try:
        items = [i for batch in walk_local(root, Filter()) for i in batch]
    finally:
        sock.close()
    rows = [i.key for i in items if isinstance(i, ScanRow)]
    issues = {i.path: i for i in items if isinstance(i, WalkIssue)}
    assert rows == ["a.txt"]
    assert {p: i.kind for p, i in issues.items()} == {
        "good": "symlink_skipped",
        "dangling": "symlink_skipped",
        "loop": "symlink_skipped",
        "pipe": "special_skipped",
        "sock": "special_skipped",
    }
    assert not any(i.error for i in issues.values())


def test_br28_following_links_reports_dangling_once_and_stops_loops(tmp_path: Path) -> None:
    """BR-28 with follow: good link listed, dangling is one error, loop detected, no hang."""
    root = tmp_path / "src"
    local_tree(root, {"a.txt": b"abc"})
    (root / "good").symlink_to("a.txt")
    (root / "dangling").symlink_to("nowhere")
    (root / "loop").symlink_to(".")
    items = [i for batch in walk_local(root, Filter(), follow_symlinks=True) for i in batch]
    rows = sorted(i.key for i in items if isinstance(i, ScanRow))
    errors = [i for i in items if isinstance(i, WalkIssue) and i.error]
    assert rows == ["a.txt", "good"]
    assert [(e.path, e.kind) for e in errors] == [("dangling", "dangling_symlink")]
    assert any(isinstance(i, WalkIssue) and i.kind == "symlink_loop" for i in items)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file_is_an_error_item(tmp_path: Path) -> None:
    """A file without read permission is reported as an error, not silently dropped."""
    root = tmp_path / "src"
    local_tree(root, {"secret.txt": b"x"})
    (root / "secret.txt").chmod(0)
    items = [i for batch in walk_local(root, Filter()) for i in batch]
    assert [(i.path, i.error) for i in items if isinstance(i, WalkIssue)] == [("secret.txt", True)]


async def test_br04_nfd_local_name_matches_nfc_remote_and_plans_nothing(tmp_path: Path) -> None:
    """BR-04: local NFD name vs remote NFC name with equal size and time: no upload."""
    local_tree(tmp_path / "src", {"Se\u0301ance.flac": b"0123456789"})
    drive = FakeDrive()
    drive.put("/t/S\u00e9ance.flac", b"0123456789", 1_700_000_000.0)
    summary, rows = await plan(tmp_path, upload_job(tmp_path), drive)
    assert by_action(rows) == {"skip": ["S\u00e9ance.flac"]}
    assert summary.errors == 0


async def test_br04_both_spellings_in_one_folder_are_a_collision(tmp_path: Path) -> None:
    """BR-04: NFC and NFD spellings side by side fail both; neither replaces the other."""
    local_tree(tmp_path / "src", {"S\u00e9ance.flac": b"a", "Se\u0301ance.flac": b"b"})
    summary, rows = await plan(tmp_path, upload_job(tmp_path), FakeDrive())
    assert [(r.action, r.reason) for r in rows] == [("fail", "nfc_collision")] * 2
    assert summary.errors == 2


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("fail", ("fail", "/t/TEST.txt", "case_collision")),
        ("skip", ("skip", "/t/TEST.txt", "case_collision")),
        ("rename", ("copy", "/t/TEST (case 1).txt", "case_collision")),
        ("overwrite", ("copy", "/t/TEST (case 1).txt", "case_collision")),
    ],
)
async def test_br05_case_only_clash_never_replaces_the_other_spelling(
    tmp_path: Path, policy: str, expected: tuple[str, str, str]
) -> None:
    """BR-05: TEST.txt next to a remote test.txt is never written over it."""
    local_tree(tmp_path / "src", {"TEST.txt": b"B"})
    drive = FakeDrive()
    drive.put("/t/test.txt", b"A")
    _, rows = await plan(tmp_path, upload_job(tmp_path, on_conflict=policy), drive)
    assert [(r.action, r.dst, r.reason) for r in rows] == [expected]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("fail", ("fail", "/t/report.pdf", False)),
        ("skip", ("skip", "/t/report.pdf", False)),
        ("overwrite", ("copy", "/t/report.pdf", True)),
        ("rename", ("copy", "/t/report (2).pdf", False)),
    ],
)
async def test_br32_s6_8_conflict_policies(
    tmp_path: Path, policy: str, expected: tuple[str, str, bool]
) -> None:
    """BR-32: an existing different target is failed, skipped, versioned or renamed."""
    local_tree(tmp_path / "src", {"report.pdf": b"v2" * 10})
    drive = FakeDrive()
    drive.put("/t/report.pdf", b"v1")
    drive.put("/t/report (1).pdf", b"taken")
    _, rows = await plan(tmp_path, upload_job(tmp_path, on_conflict=policy), drive)
    assert [(r.action, r.dst, r.overwrite) for r in rows if r.key == "report.pdf"] == [expected]


async def test_compare_modes_and_filters(tmp_path: Path) -> None:
    """size-mtime copies a same-size file with a new time; size does not; excluded stays out."""
    local_tree(tmp_path / "src", {"same.txt": b"aaaa", "tmp/x.txt": b"x"}, mtime=1_800_000_000.0)
    drive = FakeDrive()
    drive.put("/t/same.txt", b"bbbb", 1_700_000_000.0)
    _, rows = await plan(tmp_path, upload_job(tmp_path, exclude=["tmp/**"]), drive)
    assert by_action(rows) == {"copy": ["same.txt"]}
    _, rows = await plan(tmp_path, upload_job(tmp_path, compare="size", name="k"), drive)
    assert by_action(rows)["skip"] == ["same.txt"]


async def test_empty_files_are_unchanged_whatever_their_times(tmp_path: Path) -> None:
    """Two empty files match under size-mtime even when their times differ.

    OneDrive creates empty files with PUT /file/content, which sets no modification time, so
    the drive's time is the upload's; without this they were re-sent on every run.
    """
    local_tree(tmp_path / "src", {"empty": b"", "one": b"1"}, mtime=1_800_000_000.0)
    drive = FakeDrive()
    drive.put("/t/empty", b"", 1_700_000_000.0)
    drive.put("/t/one", b"2", 1_700_000_000.0)
    _, rows = await plan(tmp_path, upload_job(tmp_path), drive)
    assert by_action(rows) == {"copy": ["one"], "skip": ["empty"]}


async def test_mirror_deletes_top_most_extras_only(tmp_path: Path) -> None:
    """Mirror plans one delete per extra folder (not its contents) and per extra file."""
    local_tree(tmp_path / "src", {"keep.txt": b"k"})
    drive = FakeDrive()
    drive.put("/t/keep.txt", b"k", (tmp_path / "src" / "keep.txt").stat().st_mtime)
    drive.put("/t/old/a/b.txt", b"b")
    drive.put("/t/old b.txt", b"c")
    drive.put("/t/old/c.txt", b"c")
    job = upload_job(tmp_path, kind="sync", mode="mirror")
    _, rows = await plan(tmp_path, job, drive)
    assert by_action(rows) == {"skip": ["keep.txt"], "delete": ["old", "old b.txt"]}


async def test_br29_failed_listing_plans_nothing_and_deletes_nothing(tmp_path: Path) -> None:
    """BR-29: an inconsistent listing leaves the plan empty and marks the listing incomplete."""
    local_tree(tmp_path / "src", {"a.txt": b"a"})
    drive = FakeDrive()
    drive.walk_error = ListingInconsistent("repeated next_page_token")
    summary, rows = await plan(tmp_path, upload_job(tmp_path, kind="sync", mode="mirror"), drive)
    assert rows == []
    assert not summary.listing_complete
    assert summary.errors == 1


async def test_download_plans_local_targets_and_type_conflicts(tmp_path: Path) -> None:
    """A download maps drive paths to local relative paths; file-vs-folder is a failed item."""
    (tmp_path / "dst" / "clash").mkdir(parents=True)
    drive = FakeDrive()
    drive.put("/t/sub/a.txt", b"a")
    drive.put("/t/clash", b"file here")
    job = JobSpec.model_validate(
        {"name": "d", "kind": "download", "source": "r:/t", "target": str(tmp_path / "dst")}
    )
    _, rows = await plan(tmp_path, job, drive)
    assert [(r.action, r.key, r.dst) for r in rows] == [
        ("copy", "sub/a.txt", "sub/a.txt"),
        ("mkdir", "sub", "sub"),
        ("fail", "clash", "clash"),
    ]


async def test_include_globs_create_no_empty_folders(tmp_path: Path) -> None:
    """With include globs only matching files are copied and no folder is made on its own."""
    local_tree(tmp_path / "src", {"a/x.jpg": b"1", "b/y.txt": b"2"})
    _, rows = await plan(tmp_path, upload_job(tmp_path, include=["*.jpg"]), FakeDrive())
    assert by_action(rows) == {"copy": ["a/x.jpg"]}


BAD_NAME = os.fsdecode(b"bad\xffutf8.txt")


async def test_name_not_utf8_is_one_failed_item_shown_escaped(tmp_path: Path) -> None:
    """A source file or folder whose name is not UTF-8 is one failed item; the rest is planned."""
    local_tree(tmp_path / "src", {"good.txt": b"g", BAD_NAME: b"x", "d\udcfe/in.txt": b"y"})
    drive = FakeDrive()
    summary, rows = await plan(tmp_path, upload_job(tmp_path), drive)
    assert by_action(rows) == {"copy": ["good.txt"], "fail": ["bad\\xffutf8.txt", "d\\xfe"]}
    assert {r.reason for r in rows if r.action == "fail"} == {
        "undecodable_name: name is not valid UTF-8; skipped"
    }
    assert summary.issues == []
    assert summary.errors == 2


async def test_name_not_utf8_in_a_download_target_fails_only_a_mirror(tmp_path: Path) -> None:
    """A local target name that is not UTF-8 is a warning, but an error for a mirror."""
    local_tree(tmp_path / "dst", {BAD_NAME: b"x"})
    drive = FakeDrive()
    drive.put("/t/a.txt", b"a")
    base = {"name": "d", "kind": "download", "source": "r:/t", "target": str(tmp_path / "dst")}
    copy = JobSpec.model_validate(base)
    summary, rows = await plan(tmp_path, copy, drive)
    assert by_action(rows) == {"copy": ["a.txt"]}
    assert [(i.path, i.error) for i in summary.issues] == [("bad\\xffutf8.txt", False)]
    mirror = JobSpec.model_validate({**base, "name": "m", "kind": "sync", "mode": "mirror"})
    summary, rows = await plan(tmp_path, mirror, drive)
    assert [(r.action, r.key, r.dst) for r in rows if r.action == "fail"] == [
        ("fail", "bad\\xffutf8.txt", "bad\\xffutf8.txt")
    ]
    assert summary.errors == 1


async def test_plan_errors_and_fail_decisions_are_stored_as_run_issues(tmp_path: Path) -> None:
    """Failed decisions and walk errors outlive the plan as the run's issues; warnings do not."""
    local_tree(
        tmp_path / "src", {"S\u00e9ance.flac": b"a", "Se\u0301ance.flac": b"b", BAD_NAME: b""}
    )
    (tmp_path / "src" / "link").symlink_to("nowhere")
    job = upload_job(tmp_path)
    async with StateDB.open(tmp_path / "state.db") as db:
        run_id = await db.start_run(await db.job_id(job.name))
        await plan_job(db, run_id, job, FakeDrive(), now=time.time)
        await db.finish_run(run_id, status="partial", exit_code=1, counts={})
        issues = await db.run_issues(run_id)
    assert [(i.kind, i.path) for i in issues] == [
        ("undecodable_name: name is not valid UTF-8; skipped", "bad\\xffutf8.txt"),
        ("nfc_collision", "S\u00e9ance.flac"),
        ("nfc_collision", "S\u00e9ance.flac"),
    ]


async def test_names_the_drive_refuses_fail_in_the_plan_for_uploads_only(tmp_path: Path) -> None:
    """Names with \\ : * ? " < > | fail up front with invalid_remote_name; downloads keep them."""
    names = ["a:b.txt", 'q"x.txt', "back\\slash", "d?r/in.txt", "ok.txt"]
    local_tree(tmp_path / "src", dict.fromkeys(names, b"x"))
    summary, rows = await plan(tmp_path, upload_job(tmp_path), FakeDrive())
    fails = {r.key: (r.dst, r.reason) for r in rows if r.action == "fail"}
    assert by_action(rows)["copy"] == ["ok.txt"]
    assert sorted(fails) == ["a:b.txt", "back\\slash", "d?r", "d?r/in.txt", 'q"x.txt']
    assert fails["d?r/in.txt"] == ("/t/d?r/in.txt", "invalid_remote_name: 'd?r' contains '?'")
    assert summary.errors == 5

    drive = FakeDrive()
    drive.put("/t/a:b.txt", b"x")
    job = JobSpec.model_validate(
        {"name": "d", "kind": "download", "source": "r:/t", "target": str(tmp_path / "dst")}
    )
    _, rows = await plan(tmp_path, job, drive)
    assert by_action(rows) == {"copy": ["a:b.txt"]}


def test_drive_names_longer_than_255_utf8_bytes_are_refused() -> None:
    """The limit counts UTF-8 bytes, not characters, in every component."""
    assert drive_name_problem("d/" + "\u00e9" * 127) == ""
    assert "256 bytes long" in drive_name_problem("\u00e9" * 128 + "/f.txt")


async def test_mirror_folder_delete_counts_every_file_below_it(tmp_path: Path) -> None:
    """A target-only folder is one delete row standing for all its files and their bytes."""
    local_tree(tmp_path / "src", {"keep.txt": b"k"})
    drive = FakeDrive()
    drive.put("/t/keep.txt", b"k", (tmp_path / "src" / "keep.txt").stat().st_mtime)
    for i in range(50):
        drive.put(f"/t/big/sub{i % 3}/f{i}.bin", b"x" * (i + 1))
    drive.put("/t/empty/.x", b"")
    del drive.files["/t/empty/.x"]
    summary, rows = await plan(tmp_path, upload_job(tmp_path, kind="sync", mode="mirror"), drive)
    assert summary.actions["delete"] == (51, sum(range(1, 51)))
    deletes = [(r.key, r.items, r.size, r.is_dir) for r in rows if r.action == "delete"]
    assert deletes == [("big", 50, sum(range(1, 51)), True), ("empty", 1, 0, True)]


async def test_mirror_keeps_folders_holding_filtered_skipped_or_uploading_entries(
    tmp_path: Path,
) -> None:
    """Excluded, too small and unfinished entries stay, and so do the folders holding them."""
    (tmp_path / "src").mkdir()
    drive = FakeDrive()
    drive.put("/t/foo/a.keep", b"keep me")
    drive.put("/t/foo/b.txt", b"bb")
    drive.put("/t/foo/sub/c.txt", b"cc")
    drive.put("/t/tiny/t.bin", b"1")
    drive.put("/t/part/p.bin", b"partial")
    drive.placeholders.add("/t/part/p.bin")
    drive.put("/t/gone/e.txt", b"ee")
    job = upload_job(tmp_path, kind="sync", mode="mirror", exclude=["*.keep"], min_size=2)
    summary, rows = await plan(tmp_path, job, drive)
    deletes = [(r.key, r.items) for r in rows if r.action == "delete"]
    assert deletes == [("foo/b.txt", 1), ("foo/sub", 1), ("gone", 1)]
    assert summary.actions["delete"] == (3, 6)


async def test_mirror_keeps_a_target_file_whose_source_the_filters_leave_out(
    tmp_path: Path,
) -> None:
    """A source file that grew past max_size is still in the source: its smaller copy on the
    drive passes the filter but is not deleted; a file the source lacks still is."""
    local_tree(tmp_path / "src", {"grown.bin": b"x" * 100, "link-target": b"t"})
    (tmp_path / "src" / "link").symlink_to("link-target")
    drive = FakeDrive()
    drive.put("/t/grown.bin", b"x" * 10)
    drive.put("/t/link", b"uploaded before")
    drive.put("/t/gone.bin", b"y")
    job = upload_job(tmp_path, kind="sync", mode="mirror", max_size=50)
    _, rows = await plan(tmp_path, job, drive)
    assert [(r.action, r.key) for r in rows if r.action != "copy"] == [("delete", "gone.bin")]


async def test_download_mirror_keeps_a_local_file_whose_drive_source_is_left_out(
    tmp_path: Path,
) -> None:
    """The same for a download: the drive file grew past max_size, or is still uploading."""
    local_tree(tmp_path / "dst", {"grown.bin": b"x" * 10, "part.bin": b"p", "gone.bin": b"g"})
    drive = FakeDrive()
    drive.put("/t/grown.bin", b"x" * 100)
    drive.put("/t/part.bin", b"partial")
    drive.placeholders.add("/t/part.bin")
    job = JobSpec.model_validate(
        {
            "name": "dm",
            "kind": "sync",
            "mode": "mirror",
            "source": "r:/t",
            "target": str(tmp_path / "dst"),
            "max_size": 50,
        }
    )
    _, rows = await plan(tmp_path, job, drive)
    assert [(r.action, r.key) for r in rows] == [("delete", "gone.bin")]


def test_walk_keeps_a_row_for_each_entry_it_leaves_out_when_asked(tmp_path: Path) -> None:
    """keep_skipped lists excluded folders, filtered files and links as kept rows."""
    root = tmp_path / "dst"
    local_tree(root, {"a.txt": b"abc", "x.keep": b"k", "cache/y.bin": b"y"})
    (root / "link").symlink_to("a.txt")
    filt = Filter.build([], ["*.keep", "cache/**"])
    found = [i for batch in walk_local(root, filt, keep_skipped=True) for i in batch]
    rows = sorted((r.key, r.kept) for r in found if isinstance(r, ScanRow))
    assert rows == [("a.txt", False), ("cache", True), ("link", True), ("x.keep", True)]


async def test_plan_above_max_delete_says_the_deletes_are_refused_and_by_how_many(
    tmp_path: Path,
) -> None:
    """6 deletes with max_delete = 5: a max_delete error issue naming 6 and 1 too many."""
    (tmp_path / "src").mkdir()
    drive = FakeDrive()
    for i in range(6):
        drive.put(f"/t/old{i}.bin", b"x")
    job = upload_job(tmp_path, kind="sync", mode="mirror", max_delete=5)
    summary, _ = await plan(tmp_path, job, drive)
    assert summary.deletes_refused
    assert summary.errors == 1
    [issue] = summary.issues
    assert (issue.kind, issue.error) == ("max_delete", True)
    assert "6 deletes planned, 1 more than max_delete = 5" in issue.detail
    within, _ = await plan(
        tmp_path, upload_job(tmp_path, kind="sync", mode="mirror", max_delete=6), drive
    )
    assert (within.deletes_refused, within.issues) == (False, [])


def test_walk_of_a_large_folder_yields_batches_before_it_has_read_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder is read as the walk goes: its first batch comes before its 2,500 entries."""
    root = tmp_path / "src"
    root.mkdir()
    for i in range(2500):
        (root / f"f{i:05d}").touch()
    drawn = 0
    real_scandir = os.scandir

    class Counting:
        def __init__(self, path: Path) -> None:
            self._inner = real_scandir(path)

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self._inner.close()

        def __iter__(self) -> Counting:
            return self

        def __next__(self) -> os.DirEntry[str]:
            nonlocal drawn
            entry = next(self._inner)
            drawn += 1
            return entry

    monkeypatch.setattr(os, "scandir", Counting)
    walker = walk_local(root, Filter())
    first = next(walker)
    assert len(first) == 1000
    assert drawn <= 1001
    assert sum(len(batch) for batch in walker) + len(first) == 2500


def download_job(tmp_path: Path, **keys: object) -> JobSpec:
    data = {"name": "d", "kind": "download", "source": "r:/t", "target": str(tmp_path / "dst")}
    return JobSpec.model_validate({**data, **keys}, context={"base": tmp_path})


def same_as_drive(root: Path, drive: FakeDrive, files: dict[str, bytes]) -> None:
    """Put each file on the drive under /t and locally under ``root`` with the same time."""
    local_tree(root, files)
    for rel, data in files.items():
        drive.put(f"/t/{rel}", data)


async def test_failed_listing_and_refused_deletes_name_their_folder(tmp_path: Path) -> None:
    """A failed listing names the folder listed and refused deletes the target, never ""."""
    local_tree(tmp_path / "src", {"a.txt": b"a"})
    drive = FakeDrive()
    drive.walk_error = ListingInconsistent("repeated next_page_token")
    summary, _ = await plan(tmp_path, upload_job(tmp_path), drive)
    assert [(i.path, i.kind) for i in summary.issues] == [("/t", "listing_failed")]

    (tmp_path / "src" / "a.txt").unlink()
    drive = FakeDrive()
    drive.put("/t/a.txt", b"a")
    job = upload_job(tmp_path, kind="sync", mode="mirror", max_delete=0)
    summary, _ = await plan(tmp_path, job, drive)
    assert [(i.path, i.kind) for i in summary.issues] == [("/t", "max_delete")]


async def test_nfc_collision_and_unsafe_names_name_their_target_path(tmp_path: Path) -> None:
    """Both spellings of a collision fail with the target path they share; an unsafe name
    fails with the path it would have."""
    local_tree(tmp_path / "src", {"\u00e9.txt": b"a", "e\u0301.txt": b"b"})
    _, rows = await plan(tmp_path, upload_job(tmp_path), FakeDrive())
    assert [(r.dst, r.reason) for r in rows] == [("/t/\u00e9.txt", "nfc_collision")] * 2
    drive = FakeDrive()
    drive.put("/t/back\\slash", b"x")
    _, rows = await plan(tmp_path, download_job(tmp_path), drive)
    assert [(r.dst, r.reason.split(":")[0]) for r in rows] == [("back\\slash", "unsafe_name")]


async def test_walk_errors_are_failed_plan_items_as_a_run_counts_them(tmp_path: Path) -> None:
    """A dangling link followed is a ``fail`` row of the plan, counted once in its errors."""
    local_tree(tmp_path / "src", {"a.txt": b"a"})
    (tmp_path / "src" / "dangling").symlink_to("nowhere")
    summary, rows = await plan(tmp_path, upload_job(tmp_path, follow_symlinks=True), FakeDrive())
    assert [(r.action, r.key, r.dst, r.reason) for r in rows if r.action == "fail"] == [
        ("fail", "dangling", "/t/dangling", "dangling_symlink: link target does not exist")
    ]
    assert summary.actions["fail"] == (1, 0)
    assert summary.errors == 1
    assert [i for i in summary.issues if i.error] == []
