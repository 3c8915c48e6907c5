"""The state database: jobs, runs, scanned entries, plans, items and upload journals.

This is the only module with SQL; it stores and reads, and decides nothing. One
:class:`StateDB` owns one aiosqlite connection in WAL mode. Writes from concurrent tasks are
serialised by a lock so that each transaction is whole; a ``kill -9`` at any instant leaves the
last committed transaction, and every committed chunk acknowledgement survives it (the upload
driver awaits :meth:`SqliteJournal.chunk_acked` before it counts the chunk).

Large tables (``scan``, ``plan``) are written in batches with ``executemany`` in one
transaction per batch and read back in key-ordered pages, so a tree of a million entries never
needs to be held in memory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from transfer import SavedUpload

__all__ = [
    "ItemOutcome",
    "PlanRow",
    "RunIssue",
    "RunRecord",
    "ScanRow",
    "SqliteJournal",
    "StateDB",
    "Subtree",
]

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        started_at REAL NOT NULL,
        finished_at REAL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        bytes INTEGER NOT NULL DEFAULT 0,
        transfers INTEGER NOT NULL DEFAULT 0,
        checks INTEGER NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0,
        deletes INTEGER NOT NULL DEFAULT 0,
        message TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX runs_job ON runs(job_id, id);
    CREATE TABLE scan (
        run_id INTEGER NOT NULL,
        side INTEGER NOT NULL,
        key TEXT NOT NULL,
        fold TEXT NOT NULL,
        path TEXT NOT NULL,
        is_dir INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        remote_id TEXT NOT NULL DEFAULT '',
        uri TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX scan_key ON scan(run_id, key, side, path);
    CREATE INDEX scan_fold ON scan(run_id, side, fold);
    CREATE TABLE plan (
        run_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        action TEXT NOT NULL,
        key TEXT NOT NULL,
        src TEXT NOT NULL,
        dst TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        overwrite INTEGER NOT NULL,
        reason TEXT NOT NULL,
        remote_id TEXT NOT NULL DEFAULT '',
        uri TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'pending',
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE items (
        job_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        hash TEXT NOT NULL DEFAULT '',
        remote_id TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        run_id INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (job_id, key)
    );
    CREATE TABLE upload_sessions (
        key TEXT PRIMARY KEY,
        session TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE upload_chunks (
        key TEXT NOT NULL,
        idx INTEGER NOT NULL,
        etag TEXT NOT NULL,
        PRIMARY KEY (key, idx)
    );
    CREATE TABLE server_tasks (
        id TEXT PRIMARY KEY,
        job_id INTEGER NOT NULL,
        run_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    """
    ALTER TABLE items ADD COLUMN remote_mtime_ns INTEGER NOT NULL DEFAULT 0;
    """,
    """
    CREATE TABLE run_issues (
        run_id INTEGER NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX run_issues_run ON run_issues(run_id);
    """,
    """
    ALTER TABLE scan ADD COLUMN kept INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE plan ADD COLUMN is_dir INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE plan ADD COLUMN items INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX plan_key ON plan(run_id, key);
    """,
)

SRC = 0
DST = 1
_PAGE = 2000
_PLAN_QUERY = (
    "SELECT seq, action, key, src, dst, size, mtime_ns, overwrite, reason, remote_id, uri,"
    " status, is_dir, items FROM plan"
)
_RUN_QUERY = (
    "SELECT runs.id, jobs.name, started_at, finished_at, status, exit_code, bytes, transfers,"
    " checks, errors, deletes, message FROM runs JOIN jobs ON jobs.id = runs.job_id"
)


@dataclass(frozen=True, slots=True)
class ScanRow:
    """One entry of a listing. ``key`` is the NFC relative path, ``fold`` its casefolded form,
    ``path`` the spelling to use on that side (relative for local, absolute for a drive).
    ``kept`` marks an entry the job does not look at (filtered or skipped) but must not delete."""

    key: str
    fold: str
    path: str
    is_dir: bool
    size: int
    mtime_ns: int
    remote_id: str = ""
    uri: str = ""
    kept: bool = False


@dataclass(frozen=True, slots=True)
class PlanRow:
    """One decided action of a run (``copy``, ``mkdir``, ``delete``, ``skip``, ``fail``).

    ``items`` is how many items the action stands for: the files below a deleted folder (one
    for an empty folder), else one; ``size`` is then their total.
    """

    seq: int
    action: str
    key: str
    src: str
    dst: str
    size: int
    mtime_ns: int
    overwrite: bool
    reason: str
    remote_id: str = ""
    uri: str = ""
    status: str = "pending"
    is_dir: bool = False
    items: int = 1


@dataclass(frozen=True, slots=True)
class Subtree:
    """What lies below one folder: entries of each listing and ``{action: (rows, bytes)}``."""

    source_entries: int
    target_entries: int
    actions: dict[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What happened to one item in a run.

    ``hash``, ``remote_id`` and ``remote_mtime_ns`` fingerprint a ``done`` transfer for
    ``compare = "checksum"``: the content's SHA-256 and the drive entry it matched. They are
    kept from the last ``done`` outcome when a later one carries none.
    """

    key: str
    size: int
    mtime_ns: int
    status: str
    error: str = ""
    hash: str = ""
    remote_id: str = ""
    remote_mtime_ns: int = 0


@dataclass(frozen=True, slots=True)
class RunIssue:
    """A problem that failed part of a run before any transfer: a path, its kind, a detail."""

    path: str
    kind: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A finished or running run of a job, as ``ferry status`` and ``history`` show it."""

    id: int
    job: str
    started_at: float
    finished_at: float | None
    status: str
    exit_code: int | None
    bytes: int
    transfers: int
    checks: int
    errors: int
    deletes: int
    message: str


def _scan_row(r: Sequence[Any]) -> ScanRow:
    """Build a :class:`ScanRow` from ``key, fold, path, is_dir, size, mtime_ns, remote_id, uri,
    kept`` columns."""
    key, fold, path, is_dir, size, mtime_ns, remote_id, uri, kept = r
    return ScanRow(
        str(key),
        str(fold),
        str(path),
        bool(is_dir),
        int(size),
        int(mtime_ns),
        str(remote_id),
        str(uri),
        bool(kept),
    )


def _plan_row(r: Sequence[Any]) -> PlanRow:
    """Build a :class:`PlanRow` from the columns of ``_PLAN_QUERY``."""
    seq, action, key, src, dst, size, mtime_ns, overwrite, reason, rid, uri, status = r[:12]
    return PlanRow(
        int(seq),
        str(action),
        str(key),
        str(src),
        str(dst),
        int(size),
        int(mtime_ns),
        bool(overwrite),
        str(reason),
        str(rid),
        str(uri),
        str(status),
        bool(r[12]),
        int(r[13]),
    )


class StateDB:
    """The state database of one config file; open it with :meth:`open`."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = anyio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[StateDB]:
        """Open (creating and migrating) the database at ``path`` and close it on exit.

        A new database is created with mode 0600 in a 0700 folder: it holds upload-session
        credentials.
        """
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        async with aiosqlite.connect(path, isolation_level=None) as conn:
            await conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL keeps every commit across a process kill; only a power loss may drop the
            # last transactions, which a re-run then re-plans from the listings.
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=10000")
            db = cls(conn)
            await db._migrate()
            yield db

    async def _migrate(self) -> None:
        async with self._conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            statements = [s.strip() for s in script.split(";") if s.strip()]
            async with self._write():
                for statement in statements:
                    await self._conn.execute(statement)
                await self._conn.execute(f"PRAGMA user_version={number}")

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[None]:
        """Run the enclosed statements as one immediate transaction, serialised."""
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._conn.execute("ROLLBACK")
                raise
            with anyio.CancelScope(shield=True):
                await self._conn.execute("COMMIT")

    async def schema_version(self) -> int:
        """Return ``PRAGMA user_version``: the number of migrations applied."""
        async with self._conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    # jobs and runs

    async def job_id(self, name: str) -> int:
        """Return the id of the job called ``name``, creating the row on first use."""
        async with self._write():
            await self._conn.execute(
                "INSERT OR IGNORE INTO jobs(name, created_at) VALUES (?, ?)", (name, time.time())
            )
            async with self._conn.execute("SELECT id FROM jobs WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def start_run(self, job_id: int) -> int:
        """Record a new run in status ``running`` and return its id.

        The caller holds the job's lock, so earlier runs still marked ``running`` died without
        finishing (``kill -9``, power loss): they become ``killed`` and their listings and plan
        are dropped.
        """
        async with self._write():
            stale = "SELECT id FROM runs WHERE job_id = ? AND status = 'running'"
            await self._conn.execute(f"DELETE FROM scan WHERE run_id IN ({stale})", (job_id,))
            await self._conn.execute(f"DELETE FROM plan WHERE run_id IN ({stale})", (job_id,))
            await self._conn.execute(
                "UPDATE runs SET status = 'killed' WHERE job_id = ? AND status = 'running'",
                (job_id,),
            )
            cursor = await self._conn.execute(
                "INSERT INTO runs(job_id, started_at, status) VALUES (?, ?, 'running')",
                (job_id, time.time()),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        exit_code: int,
        counts: dict[str, int],
        message: str = "",
    ) -> None:
        """Record the outcome of a run and drop its listings and plan.

        ``counts`` has bytes, transfers, checks, errors and deletes.
        """
        async with self._write():
            await self._conn.execute(
                "UPDATE runs SET finished_at = ?, status = ?, exit_code = ?, bytes = ?,"
                " transfers = ?, checks = ?, errors = ?, deletes = ?, message = ? WHERE id = ?",
                (
                    time.time(),
                    status,
                    exit_code,
                    counts.get("bytes", 0),
                    counts.get("transfers", 0),
                    counts.get("checks", 0),
                    counts.get("errors", 0),
                    counts.get("deletes", 0),
                    message,
                    run_id,
                ),
            )
            # Listings and decisions only serve the run itself; items keep the outcomes.
            await self._conn.execute("DELETE FROM scan WHERE run_id = ?", (run_id,))
            await self._conn.execute("DELETE FROM plan WHERE run_id = ?", (run_id,))

    async def last_run(self, job: str) -> RunRecord | None:
        """Return the newest run of ``job`` that was not a dry run, or None."""
        async with self._conn.execute(
            _RUN_QUERY + " WHERE jobs.name = ? AND status != 'dry_run' ORDER BY runs.id DESC"
            " LIMIT 1",
            (job,),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else RunRecord(*row)

    async def run(self, run_id: int) -> RunRecord | None:
        """Return the run with id ``run_id``, or None."""
        async with self._conn.execute(_RUN_QUERY + " WHERE runs.id = ?", (run_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else RunRecord(*row)

    async def runs(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Return the newest runs first, of one job or of all."""
        query = _RUN_QUERY
        params: tuple[object, ...] = ()
        if job is not None:
            query += " WHERE jobs.name = ?"
            params = (job,)
        query += " ORDER BY runs.id DESC LIMIT ?"
        async with self._conn.execute(query, (*params, limit)) as cursor:
            rows = await cursor.fetchall()
        return [RunRecord(*row) for row in rows]

    async def item_counts(self, job: str, run_id: int | None = None) -> dict[str, int]:
        """Return how many items of ``job`` are in each status (as last set by ``run_id``)."""
        async with self._conn.execute(
            "SELECT status, COUNT(*) FROM items JOIN jobs ON jobs.id = items.job_id"
            " WHERE jobs.name = ? AND (? IS NULL OR run_id = ?) GROUP BY status",
            (job, run_id, run_id),
        ) as cursor:
            rows = await cursor.fetchall()
        return {str(status): int(count) for status, count in rows}

    # scanning

    async def add_scan(self, run_id: int, side: int, rows: Sequence[ScanRow]) -> None:
        """Store one batch of listing entries of ``side`` (``SRC`` or ``DST``)."""
        async with self._write():
            await self._conn.executemany(
                "INSERT INTO scan(run_id, side, key, fold, path, is_dir, size, mtime_ns,"
                " remote_id, uri, kept) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        run_id,
                        side,
                        r.key,
                        r.fold,
                        r.path,
                        int(r.is_dir),
                        r.size,
                        r.mtime_ns,
                        r.remote_id,
                        r.uri,
                        int(r.kept),
                    )
                    for r in rows
                ],
            )

    async def clear_scan(self, run_id: int, side: int) -> None:
        """Forget the entries of one side (a listing is retried from scratch)."""
        async with self._write():
            await self._conn.execute(
                "DELETE FROM scan WHERE run_id = ? AND side = ?", (run_id, side)
            )

    async def scan_pages(self, run_id: int) -> AsyncIterator[list[tuple[int, ScanRow]]]:
        """Yield both sides' entries as ``(side, row)`` pages sorted by key, then side, then path.

        Pages are fetched by key range, so writes between pages are safe.
        """
        last: tuple[str, int, str] = ("", -1, "")
        while True:
            async with self._conn.execute(
                "SELECT side, key, fold, path, is_dir, size, mtime_ns, remote_id, uri, kept"
                " FROM scan WHERE run_id = ? AND (key, side, path) > (?, ?, ?)"
                " ORDER BY key, side, path LIMIT ?",
                (run_id, *last, _PAGE),
            ) as cursor:
                rows = await cursor.fetchall()
            if not rows:
                return
            page = [(int(r[0]), _scan_row(r[1:])) for r in rows]
            last = (page[-1][1].key, page[-1][0], page[-1][1].path)
            yield page

    async def case_clashes(self, run_id: int) -> set[str]:
        """Return the source keys whose casefolded form matches a different target key.

        Kept entries take no part.
        """
        async with self._conn.execute(
            "SELECT DISTINCT s.key FROM scan AS s JOIN scan AS d ON d.run_id = s.run_id"
            " AND d.side = ? AND d.fold = s.fold AND d.key != s.key AND d.kept = 0"
            " WHERE s.run_id = ? AND s.side = ? AND s.kept = 0",
            (DST, run_id, SRC),
        ) as cursor:
            rows = await cursor.fetchall()
        return {str(r[0]) for r in rows}

    async def scan_rows(self, run_id: int, side: int, keys: Iterable[str]) -> dict[str, ScanRow]:
        """Return the entries of ``side`` with one of ``keys``, by key."""
        wanted = list(keys)
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        async with self._conn.execute(
            "SELECT key, fold, path, is_dir, size, mtime_ns, remote_id, uri, kept FROM scan"
            f" WHERE run_id = ? AND side = ? AND key IN ({marks})",
            (run_id, side, *wanted),
        ) as cursor:
            rows = await cursor.fetchall()
        return {r[0]: _scan_row(r) for r in rows}

    # plans

    async def add_plan(self, run_id: int, rows: Sequence[PlanRow]) -> None:
        """Store one batch of decided actions."""
        async with self._write():
            await self._conn.executemany(
                "INSERT INTO plan(run_id, seq, action, key, src, dst, size, mtime_ns, overwrite,"
                " reason, remote_id, uri, status, is_dir, items)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        run_id,
                        r.seq,
                        r.action,
                        r.key,
                        r.src,
                        r.dst,
                        r.size,
                        r.mtime_ns,
                        int(r.overwrite),
                        r.reason,
                        r.remote_id,
                        r.uri,
                        r.status,
                        int(r.is_dir),
                        r.items,
                    )
                    for r in rows
                ],
            )

    async def plan_pages(
        self, run_id: int, action: str, status: str = "pending"
    ) -> AsyncGenerator[list[PlanRow], None]:
        """Yield the run's actions of one kind and status in plan order, a page at a time."""
        last = -1
        while True:
            async with self._conn.execute(
                _PLAN_QUERY + " WHERE run_id = ? AND action = ? AND status = ? AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (run_id, action, status, last, _PAGE),
            ) as cursor:
                rows = await cursor.fetchall()
            if not rows:
                return
            page = [_plan_row(r) for r in rows]
            last = page[-1].seq
            yield page

    async def plan_row_count(self, run_id: int, action: str, status: str = "pending") -> int:
        """Count the run's plan rows of one action and status (a folder row counts once)."""
        async with self._conn.execute(
            "SELECT COUNT(*) FROM plan WHERE run_id = ? AND action = ? AND status = ?",
            (run_id, action, status),
        ) as cursor:
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    async def plan_row(self, run_id: int, seq: int) -> PlanRow | None:
        """Return the plan row ``seq`` of the run, or None when there is none."""
        async with self._conn.execute(
            _PLAN_QUERY + " WHERE run_id = ? AND seq = ?", (run_id, seq)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _plan_row(row)

    async def subtree(self, run_id: int, key: str) -> Subtree:
        """Count what both listings and the plan hold strictly below the folder ``key``."""
        # Keys below "a" are exactly those in ["a/", "a0"): "0" follows "/" in code point order.
        low, high = key + "/", key + "0"
        async with self._conn.execute(
            "SELECT side, COUNT(*) FROM scan WHERE run_id = ? AND key >= ? AND key < ?"
            " GROUP BY side",
            (run_id, low, high),
        ) as cursor:
            sides = {int(s): int(c) for s, c in await cursor.fetchall()}
        async with self._conn.execute(
            "SELECT action, COUNT(*), COALESCE(SUM(size), 0) FROM plan"
            " WHERE run_id = ? AND key >= ? AND key < ? GROUP BY action",
            (run_id, low, high),
        ) as cursor:
            actions = {str(a): (int(c), int(b)) for a, c, b in await cursor.fetchall()}
        return Subtree(sides.get(SRC, 0), sides.get(DST, 0), actions)

    async def replace_subtree(self, run_id: int, folder: PlanRow) -> None:
        """Store ``folder`` over its plan row and drop every plan row below its key."""
        async with self._write():
            await self._conn.execute(
                "UPDATE plan SET action = ?, size = ?, reason = ?, items = ?"
                " WHERE run_id = ? AND seq = ?",
                (folder.action, folder.size, folder.reason, folder.items, run_id, folder.seq),
            )
            await self._conn.execute(
                "DELETE FROM plan WHERE run_id = ? AND key >= ? AND key < ?",
                (run_id, folder.key + "/", folder.key + "0"),
            )

    async def drop_plan_row(self, run_id: int, seq: int) -> None:
        """Remove one decision from the run's plan."""
        async with self._write():
            await self._conn.execute("DELETE FROM plan WHERE run_id = ? AND seq = ?", (run_id, seq))

    async def plan_summary(self, run_id: int) -> dict[str, tuple[int, int]]:
        """Return ``{action: (items, bytes)}`` for the run's plan."""
        async with self._conn.execute(
            "SELECT action, COALESCE(SUM(items), 0), COALESCE(SUM(size), 0) FROM plan"
            " WHERE run_id = ?"
            " GROUP BY action",
            (run_id,),
        ) as cursor:
            rows = await cursor.fetchall()
        return {str(a): (int(c), int(b)) for a, c, b in rows}

    async def set_plan_status(self, run_id: int, updates: Sequence[tuple[int, str]]) -> None:
        """Set the status of plan rows by ``(seq, status)``."""
        async with self._write():
            await self._conn.executemany(
                "UPDATE plan SET status = ? WHERE run_id = ? AND seq = ?",
                [(status, run_id, seq) for seq, status in updates],
            )

    # items

    async def record_items(self, job_id: int, run_id: int, items: Sequence[ItemOutcome]) -> None:
        """Upsert item outcomes in one transaction; ``attempts`` counts failures since a success."""
        now = time.time()
        async with self._write():
            await self._conn.executemany(
                "INSERT INTO items(job_id, key, size, mtime_ns, hash, remote_id, remote_mtime_ns,"
                " status, attempts, last_error, run_id, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(job_id, key) DO UPDATE SET size = excluded.size,"
                " mtime_ns = excluded.mtime_ns, status = excluded.status,"
                " hash = CASE WHEN excluded.hash != '' THEN excluded.hash ELSE items.hash END,"
                " remote_id = CASE WHEN excluded.hash != '' THEN excluded.remote_id"
                " ELSE items.remote_id END,"
                " remote_mtime_ns = CASE WHEN excluded.hash != '' THEN excluded.remote_mtime_ns"
                " ELSE items.remote_mtime_ns END,"
                " attempts = CASE WHEN excluded.status = 'failed' THEN items.attempts + 1"
                " ELSE 0 END, last_error = excluded.last_error, run_id = excluded.run_id,"
                " updated_at = excluded.updated_at",
                [
                    (
                        job_id,
                        i.key,
                        i.size,
                        i.mtime_ns,
                        i.hash,
                        i.remote_id,
                        i.remote_mtime_ns,
                        i.status,
                        int(i.status == "failed"),
                        i.error,
                        run_id,
                        now,
                    )
                    for i in items
                ],
            )

    async def fingerprint(self, job_id: int, key: str) -> tuple[str, str, int] | None:
        """Return ``(hash, remote_id, remote_mtime_ns)`` recorded for an item, or None."""
        async with self._conn.execute(
            "SELECT hash, remote_id, remote_mtime_ns FROM items"
            " WHERE job_id = ? AND key = ? AND hash != ''",
            (job_id, key),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else (str(row[0]), str(row[1]), int(row[2]))

    async def failed_items(
        self, job: str, limit: int = 20, run_id: int | None = None
    ) -> list[tuple[str, int, str]]:
        """Return ``(key, attempts, last_error)`` of the job's failed items (of ``run_id``)."""
        async with self._conn.execute(
            "SELECT key, attempts, last_error FROM items JOIN jobs ON jobs.id = items.job_id"
            " WHERE jobs.name = ? AND status = 'failed' AND (? IS NULL OR run_id = ?)"
            " ORDER BY key LIMIT ?",
            (job, run_id, run_id, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [(str(k), int(a), str(e)) for k, a, e in rows]

    # run issues

    async def add_issues(self, run_id: int, issues: Sequence[RunIssue]) -> None:
        """Store problems found while planning the run."""
        async with self._write():
            await self._conn.executemany(
                "INSERT INTO run_issues(run_id, path, kind, detail) VALUES (?, ?, ?, ?)",
                [(run_id, i.path, i.kind, i.detail) for i in issues],
            )

    async def keep_plan_failures(self, run_id: int) -> None:
        """Store the run's ``fail`` decisions as issues, which outlive the plan."""
        async with self._write():
            await self._conn.execute(
                "INSERT INTO run_issues(run_id, path, kind, detail) SELECT run_id, key, reason, ''"
                " FROM plan WHERE run_id = ? AND action = 'fail' ORDER BY seq",
                (run_id,),
            )

    async def run_issues(self, run_id: int, limit: int = 20) -> list[RunIssue]:
        """Return the issues stored for a run, in the order they were found."""
        async with self._conn.execute(
            "SELECT path, kind, detail FROM run_issues WHERE run_id = ? ORDER BY rowid LIMIT ?",
            (run_id, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [RunIssue(str(p), str(k), str(d)) for p, k, d in rows]

    # server tasks

    async def record_task(
        self, task_id: str, job_id: int, run_id: int, kind: str, status: str
    ) -> None:
        """Remember a server-side task id (remote download, relocate) and its last status."""
        async with self._write():
            await self._conn.execute(
                "INSERT INTO server_tasks(id, job_id, run_id, kind, status, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET status = excluded.status,"
                " updated_at = excluded.updated_at",
                (task_id, job_id, run_id, kind, status, time.time()),
            )

    async def server_tasks(self, job: str) -> list[tuple[str, str, str]]:
        """Return ``(task_id, kind, status)`` of the job's recorded server tasks."""
        async with self._conn.execute(
            "SELECT server_tasks.id, kind, status FROM server_tasks JOIN jobs"
            " ON jobs.id = server_tasks.job_id WHERE jobs.name = ? ORDER BY server_tasks.id",
            (job,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [(str(i), str(k), str(s)) for i, k, s in rows]

    # upload journal

    def journal(self) -> SqliteJournal:
        """Return the :class:`transfer.UploadJournal` backed by this database."""
        return SqliteJournal(self)

    async def _journal_load(self, key: str) -> SavedUpload | None:
        async with self._conn.execute(
            "SELECT session FROM upload_sessions WHERE key = ?", (key,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        async with self._conn.execute(
            "SELECT idx, etag FROM upload_chunks WHERE key = ?", (key,)
        ) as cursor:
            chunks = await cursor.fetchall()
        # Keys a different version of SavedUpload wrote and this one lacks are dropped, so a
        # journal survives an upgrade; fields it lacks take their defaults.
        known = {f.name for f in dataclass_fields(SavedUpload)}
        fields = {k: v for k, v in json.loads(row[0]).items() if k in known}
        fields["upload_urls"] = tuple(fields.get("upload_urls", ()))
        fields["acked"] = {int(i): str(e) for i, e in chunks}

        return SavedUpload(**fields)

    async def _journal_open(self, key: str, session: SavedUpload) -> None:
        fields = asdict(session)
        fields.pop("acked")
        fields["upload_urls"] = list(session.upload_urls)
        async with self._write():
            await self._conn.execute("DELETE FROM upload_chunks WHERE key = ?", (key,))
            await self._conn.execute(
                "INSERT OR REPLACE INTO upload_sessions(key, session, updated_at) VALUES (?, ?, ?)",
                (key, json.dumps(fields), time.time()),
            )
            await self._conn.executemany(
                "INSERT INTO upload_chunks(key, idx, etag) VALUES (?, ?, ?)",
                [(key, index, etag) for index, etag in session.acked.items()],
            )

    async def _journal_ack(self, key: str, index: int, etag: str) -> None:
        async with self._write():
            await self._conn.execute(
                "INSERT OR REPLACE INTO upload_chunks(key, idx, etag) VALUES (?, ?, ?)",
                (key, index, etag),
            )

    async def _journal_close(self, key: str) -> None:
        async with self._write():
            await self._conn.execute("DELETE FROM upload_chunks WHERE key = ?", (key,))
            await self._conn.execute("DELETE FROM upload_sessions WHERE key = ?", (key,))

    async def journal_keys(self, prefix: str = "") -> list[str]:
        """Return the keys of the open upload sessions that start with ``prefix``."""
        async with self._conn.execute(
            "SELECT key FROM upload_sessions WHERE substr(key, 1, ?) = ? ORDER BY key",
            (len(prefix), prefix),
        ) as cursor:
            rows = await cursor.fetchall()
        return [str(r[0]) for r in rows]

    async def planned_targets(self, run_id: int, targets: Iterable[str]) -> set[str]:
        """Return which of ``targets`` the run's plan copies to."""
        wanted = list(targets)
        if not wanted:
            return set()
        marks = ",".join("?" * len(wanted))
        async with self._conn.execute(
            f"SELECT dst FROM plan WHERE run_id = ? AND action = 'copy' AND dst IN ({marks})",
            (run_id, *wanted),
        ) as cursor:
            rows = await cursor.fetchall()
        return {str(r[0]) for r in rows}


class SqliteJournal:
    """:class:`transfer.UploadJournal` on the state database.

    Every call commits before it returns, so a chunk the driver counts as acknowledged is on
    disk before the next chunk of that file is counted.
    """

    def __init__(self, db: StateDB) -> None:
        self._db = db

    async def load(self, key: str) -> SavedUpload | None:
        """Return the session saved for ``key`` with its acknowledged chunks, or None."""
        return await self._db._journal_load(key)

    async def session_opened(self, key: str, session: SavedUpload) -> None:
        """Record a new session for ``key``, replacing any earlier one and its chunks."""
        await self._db._journal_open(key, session)

    async def chunk_acked(self, key: str, index: int, etag: str) -> None:
        """Record that chunk ``index`` of the session for ``key`` was accepted."""
        await self._db._journal_ack(key, index, etag)

    async def session_closed(self, key: str) -> None:
        """Forget the session for ``key`` (completed, cancelled or deleted)."""
        await self._db._journal_close(key)
