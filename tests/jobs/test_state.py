"""The state database: migrations, the upload journal, batched writes and crash consistency."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from jobs.state import DST, SRC, PlanRow, ScanRow, StateDB
from transfer import SavedUpload, UploadJournal

pytestmark = pytest.mark.anyio

SESSION = SavedUpload(
    session_id="s-1",
    uri="cloudreve://my/a.bin",
    size=100,
    chunk_size=10,
    expires=2_000_000_000,
    policy_type="s3",
    callback_secret="x" * 32,
    upload_urls=("http://u/0", "http://u/1"),
)


async def test_migrations_set_user_version_and_reopen_cleanly(tmp_path: Path) -> None:
    """A new database is migrated to the latest version; reopening applies nothing twice."""
    async with StateDB.open(tmp_path / "s.db") as db:
        version = await db.schema_version()
        job = await db.job_id("a")
    async with StateDB.open(tmp_path / "s.db") as db:
        assert await db.schema_version() == version >= 1
        assert await db.job_id("a") == job
    assert (tmp_path / "s.db").stat().st_mode & 0o777 == 0o600


async def test_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    """A database at schema version 1 gains the item fingerprint column and keeps its rows."""
    import sqlite3

    from jobs.state import _MIGRATIONS, ItemOutcome

    path = tmp_path / "s.db"
    conn = sqlite3.connect(path)
    conn.executescript(_MIGRATIONS[0] + "; INSERT INTO jobs(name, created_at) VALUES ('old', 0);")
    conn.execute("PRAGMA user_version=1")
    conn.close()
    async with StateDB.open(path) as db:
        assert await db.schema_version() == len(_MIGRATIONS)
        job = await db.job_id("old")
        assert job == 1
        await db.record_items(job, 1, [ItemOutcome("k", 1, 1, "done", "", "h", "id", 5)])
        assert await db.fingerprint(job, "k") == ("h", "id", 5)
        await db.record_items(job, 2, [ItemOutcome("k", 1, 1, "failed", "boom")])
        assert await db.fingerprint(job, "k") == ("h", "id", 5)


async def test_journal_round_trips_sessions_and_acked_chunks(tmp_path: Path) -> None:
    """The SQLite journal returns the saved session with its acks; a new session resets them."""
    async with StateDB.open(tmp_path / "s.db") as db:
        journal: UploadJournal = db.journal()
        assert await journal.load("k") is None
        await journal.session_opened("k", SESSION)
        await journal.chunk_acked("k", 0, '"etag0"')
        await journal.chunk_acked("k", 3, '"etag3"')
    async with StateDB.open(tmp_path / "s.db") as db:
        journal = db.journal()
        loaded = await journal.load("k")
        assert loaded is not None
        assert loaded.acked == {0: '"etag0"', 3: '"etag3"'}
        assert loaded.upload_urls == SESSION.upload_urls
        assert loaded.session_id == "s-1"
        await journal.session_opened("k", SESSION)
        reopened = await journal.load("k")
        assert reopened is not None
        assert reopened.acked == {}
        await journal.session_closed("k")
        assert await journal.load("k") is None
        assert await db.journal_keys() == []


async def test_journal_ignores_fields_a_newer_version_wrote(tmp_path: Path) -> None:
    """A session saved with an extra field still loads (the field is dropped)."""
    import json
    import sqlite3

    async with StateDB.open(tmp_path / "s.db") as db:
        await db.journal().session_opened("k", SESSION)
    conn = sqlite3.connect(tmp_path / "s.db")
    with conn:
        (text,) = conn.execute("SELECT session FROM upload_sessions").fetchone()
        data = {**json.loads(text), "from_the_future": 1}
        conn.execute("UPDATE upload_sessions SET session = ?", (json.dumps(data),))
    conn.close()
    async with StateDB.open(tmp_path / "s.db") as db:
        loaded = await db.journal().load("k")
    assert loaded is not None
    assert loaded.session_id == SESSION.session_id


async def test_100k_item_plan_is_written_and_read_back_in_batches(tmp_path: Path) -> None:
    """Scanning, planning and re-reading 100k items stays fast (measured, printed)."""
    n = 100_000
    async with StateDB.open(tmp_path / "s.db") as db:
        run_id = await db.start_run(await db.job_id("big"))
        started = time.perf_counter()
        for start in range(0, n, 1000):
            rows = [
                ScanRow(f"d{i // 1000}/f{i}", f"d{i // 1000}/f{i}", f"d/f{i}", False, i, i)
                for i in range(start, start + 1000)
            ]
            await db.add_scan(run_id, SRC, rows)
            await db.add_scan(run_id, DST, rows[:500])
        scanned = time.perf_counter()
        seen = 0
        seq = 0
        async for page in db.scan_pages(run_id):
            plan = []
            for side, row in page:
                seen += 1
                if side == SRC:
                    plan.append(
                        PlanRow(
                            seq,
                            "copy",
                            row.key,
                            row.path,
                            "/t/" + row.key,
                            row.size,
                            0,
                            False,
                            "new",
                        )
                    )
                    seq += 1
            await db.add_plan(run_id, plan)
        planned = time.perf_counter()
        count, size = (await db.plan_summary(run_id))["copy"]
    print(
        f"\n100k items: scan written {scanned - started:.2f} s,"
        f" merged+plan written {planned - scanned:.2f} s"
    )
    assert seen == n + n // 2
    assert count == n
    assert size == sum(range(n))
    assert planned - started < 60


async def test_a_new_run_marks_dead_runs_killed_and_drops_their_scratch_rows(
    tmp_path: Path,
) -> None:
    """A run left 'running' by a crash becomes 'killed' and its scan and plan rows go away."""
    async with StateDB.open(tmp_path / "s.db") as db:
        job = await db.job_id("j")
        dead = await db.start_run(job)
        await db.add_scan(dead, SRC, [ScanRow("a", "a", "a", False, 1, 1)])
        await db.add_plan(dead, [PlanRow(0, "copy", "a", "a", "/a", 1, 1, False, "new")])
        await db.start_run(job)
        assert [r.status for r in await db.runs("j")] == ["running", "killed"]
        assert [row async for row in db.scan_pages(dead)] == []
        assert await db.plan_summary(dead) == {}


async def test_server_task_ids_are_kept_with_their_last_status(tmp_path: Path) -> None:
    """A server task id is recorded once and its status updated in place."""
    async with StateDB.open(tmp_path / "s.db") as db:
        job = await db.job_id("j")
        run = await db.start_run(job)
        await db.record_task("task-1", job, run, "remote_download", "queued")
        await db.record_task("task-1", job, run, "remote_download", "completed")
        assert await db.server_tasks("j") == [("task-1", "remote_download", "completed")]


CHILD = """
import anyio, sys
from pathlib import Path
from jobs.state import StateDB
from transfer import SavedUpload

async def main() -> None:
    async with StateDB.open(Path(sys.argv[1])) as db:
        j = db.journal()
        await j.session_opened("k", SavedUpload("s", "u", 10**9, 1, 0, "local", "x" * 32))
        i = 0
        while True:
            await j.chunk_acked("k", i, "")
            print(i, flush=True)
            i += 1

anyio.run(main)
"""


def test_kill_9_during_chunk_acks_keeps_every_acknowledged_chunk(tmp_path: Path) -> None:
    """After kill -9 mid-stream, every ack the writer reported is in the journal, gap-free."""
    db_path = tmp_path / "s.db"
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db_path)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        reported = -1
        for line in proc.stdout:
            reported = int(line)
            if reported >= 300:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    async def load() -> SavedUpload | None:
        async with StateDB.open(db_path) as db:
            return await db.journal().load("k")

    saved = anyio.run(load)
    assert saved is not None
    acked = sorted(saved.acked)
    assert acked == list(range(len(acked)))
    assert len(acked) >= reported + 1
