"""The planner: lists both sides of a job into the state database and decides each item.

Listings stream into the ``scan`` table in batches; decisions are made while reading both sides
back as one stream sorted by key (the NFC-normalised relative path), so memory stays bounded by
a page, whatever the size of the tree. The planner transfers nothing.

Decisions, per key:

* source only: ``mkdir`` (folder) or ``copy`` (file); a target entry that differs only by case
  is a conflict handled by ``on_conflict`` (a copy under ``name (case 1).ext`` for rename and
  overwrite, so the other spelling is never replaced);
* both sides: ``skip`` when equal under ``compare``; otherwise ``on_conflict`` decides: a copy
  as a new version (overwrite), a copy under ``name (1).ext`` (rename), ``skip`` or ``fail``;
* target only: ``delete`` in mirror mode, else nothing. A folder is deleted whole (one row
  standing for every file below it, counted as such against ``max_delete``) only when
  everything below it is deleted too; otherwise it stays and only what lies below is decided;
* kept entries (a mirror lists what its filters leave out, what the walk skips and
  unfinished uploads as ``kept``, on both sides): nothing, the folders holding them stay, and
  a target entry whose source is kept stays too (a source file that grew past ``max_size`` is
  still in the source);
* two source spellings of one key (NFC vs NFD): ``fail`` for both (a collision);
* an error of the local walk (unreadable, dangling link followed): ``fail``.
"""

from __future__ import annotations

import hashlib
import os
import stat
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Protocol

import anyio
import structlog

from jobs.filters import Filter
from jobs.spec import JobSpec
from jobs.state import DST, SRC, PlanRow, RunIssue, ScanRow, StateDB
from transfer import (
    FerryError,
    ListingInconsistent,
    RemoteEntry,
    UnsafeName,
    join_remote,
    safe_local_name,
)

__all__ = [
    "MTIME_WINDOW_NS",
    "PlanSummary",
    "RemoteLister",
    "WalkIssue",
    "display_path",
    "drive_name_problem",
    "entry_for",
    "key_of",
    "plan_job",
    "sha256_file",
    "to_ns",
    "walk_local",
]

log = structlog.get_logger()

MTIME_WINDOW_NS = 1_000_000_000
"""Modification times closer than this are equal.

The drive takes ``last_modified`` in milliseconds, and on MySQL-backed servers its
``updated_at`` column keeps whole seconds, so a listing can be up to a second behind the local
file's time.
"""

_BATCH = 1000
# The drive refuses names with these characters or longer than 255 UTF-8 bytes (error 40052).
_DRIVE_FORBIDDEN = frozenset('\\:*?"<>|')
_DRIVE_NAME_MAX_BYTES = 255


class RemoteLister(Protocol):
    """What the planner needs from a drive: a recursive listing and a lookup."""

    def walk(self, root: str) -> AsyncIterator[RemoteEntry]:
        """Yield every entry below ``root``, folders included; nothing when it is missing."""
        ...

    async def stat(self, path: str) -> RemoteEntry | None:
        """Return the entry at ``path``, or None when it does not exist."""
        ...


@dataclass(frozen=True, slots=True)
class WalkIssue:
    """Something the local walk skipped. ``error`` issues fail the run's exit status."""

    path: str
    kind: str
    detail: str
    error: bool


@dataclass(slots=True)
class PlanSummary:
    """Counts of a finished plan; ``listing_complete`` is False when a listing failed.

    ``deletes_refused`` is True when the plan has more deletes than ``max_delete``: a run does
    none of them.
    """

    actions: dict[str, tuple[int, int]] = field(default_factory=dict)
    issues: list[WalkIssue] = field(default_factory=list)
    listing_complete: bool = True
    deletes_refused: bool = False

    @property
    def errors(self) -> int:
        """Items that already failed during planning (walk errors and ``fail`` decisions)."""
        return sum(1 for i in self.issues if i.error) + self.actions.get("fail", (0, 0))[0]


def key_of(rel: str) -> str:
    """Return the comparison key of a relative path: its NFC normal form."""
    return unicodedata.normalize("NFC", rel)


def display_path(rel: str) -> str:
    """Return a local path printable as text: bytes that are not UTF-8 appear as ``\\xff``.

    Local names come from the file system with undecodable bytes as lone surrogates
    (``surrogateescape``), which neither SQLite, JSON logs nor the drive accept.
    """
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def drive_name_problem(rel: str) -> str:
    """Say why the drive would refuse a name in the relative path ``rel``; "" if it would not."""
    for name in rel.split("/"):
        bad = "".join(sorted(set(name) & _DRIVE_FORBIDDEN))
        if bad:
            return f"{name!r} contains {bad!r}"
        size = len(name.encode("utf-8"))
        if size > _DRIVE_NAME_MAX_BYTES:
            return f"{name[:20]!r}... is {size} bytes long, the limit is {_DRIVE_NAME_MAX_BYTES}"
    return ""


def _row(
    rel: str,
    path: str,
    is_dir: bool,
    size: int,
    mtime_ns: int,
    *,
    remote_id: str = "",
    uri: str = "",
    kept: bool = False,
) -> ScanRow:
    key = key_of(rel)
    return ScanRow(key, key.casefold(), path, is_dir, size, mtime_ns, remote_id, uri, kept)


def walk_local(
    root: Path,
    filt: Filter,
    *,
    follow_symlinks: bool = False,
    bad_names_fail: bool = True,
    keep_skipped: bool = False,
) -> Iterator[list[ScanRow | WalkIssue]]:
    """Walk a local tree, yielding batches of entries and issues; the root itself is left out.

    Symlinks are skipped with a warning unless ``follow_symlinks``; then a dangling link is an
    error and a link back to an ancestor is skipped as a loop. FIFOs, sockets and devices are
    skipped without being opened. Unreadable files and folders are errors. A name that is not
    valid UTF-8 is skipped (a folder with all it holds) as an ``undecodable_name`` issue, an
    error when ``bad_names_fail``. Issue paths are shown through :func:`display_path`.
    With ``keep_skipped``, every entry filtered out or skipped (an excluded folder without what
    it holds) also comes back as a ``kept`` row, unless its name is not UTF-8.
    """
    batch: list[ScanRow | WalkIssue] = []
    root_stat = root.stat()
    stack: list[tuple[str, tuple[tuple[int, int], ...]]] = [
        ("", ((root_stat.st_dev, root_stat.st_ino),))
    ]
    while stack:
        rel_dir, ancestors = stack.pop()
        for entry in _entries(root / rel_dir if rel_dir else root, rel_dir or "."):
            if isinstance(entry, WalkIssue):
                batch.append(entry)
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            item = _local_entry(entry, rel, filt, follow_symlinks, ancestors, bad_names_fail)
            skipped = item is None or isinstance(item, WalkIssue)
            if keep_skipped and skipped and _is_utf8(entry.name):
                batch.append(_row(rel, rel, False, 0, 0, kept=True))
            if item is None:
                continue
            if isinstance(item, tuple):
                batch.append(item[0])
                stack.append((rel, (*ancestors, item[1])))
            else:
                batch.append(item)
            if len(batch) >= _BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def _entries(folder: Path, shown: str) -> Iterator[os.DirEntry[str] | WalkIssue]:
    """Yield the entries of one folder as the OS reads them; a failure ends them as an issue.

    The entries are not collected first: a folder of a million files must not need a million
    ``DirEntry`` objects (with their cached ``stat``) in memory.
    """
    try:
        with os.scandir(folder) as entries:
            yield from entries
    except OSError as exc:
        yield WalkIssue(shown, "unreadable", exc.strerror or str(exc), True)


def _local_entry(
    entry: os.DirEntry[str],
    rel: str,
    filt: Filter,
    follow: bool,
    ancestors: tuple[tuple[int, int], ...],
    bad_names_fail: bool,
) -> ScanRow | WalkIssue | tuple[ScanRow, tuple[int, int]] | None:
    """Classify one directory entry; a folder to descend into comes back with its identity."""
    shown = display_path(rel)
    try:
        if entry.is_symlink() and not follow:
            return WalkIssue(shown, "symlink_skipped", "symbolic link not followed", False)
        info = entry.stat(follow_symlinks=follow)
    except FileNotFoundError:
        return WalkIssue(shown, "dangling_symlink", "link target does not exist", True)
    except OSError as exc:
        return WalkIssue(shown, "unreadable", exc.strerror or str(exc), True)
    if stat.S_ISDIR(info.st_mode):
        if filt.dir_excluded(rel):
            return None
        if not _is_utf8(entry.name):
            return _undecodable(shown, bad_names_fail)
        identity = (info.st_dev, info.st_ino)
        if identity in ancestors:
            return WalkIssue(shown, "symlink_loop", "link points back to an ancestor", False)
        return _row(rel, rel, True, 0, info.st_mtime_ns), identity
    if not stat.S_ISREG(info.st_mode):
        return WalkIssue(shown, "special_skipped", "not a regular file or folder", False)
    if not filt.file_included(rel, info.st_size, info.st_mtime_ns):
        return None
    if not _is_utf8(entry.name):
        return _undecodable(shown, bad_names_fail)
    if not os.access(entry.path, os.R_OK):
        return WalkIssue(shown, "unreadable", "permission denied", True)
    return _row(rel, rel, False, info.st_size, info.st_mtime_ns)


def _undecodable(shown: str, error: bool) -> WalkIssue:
    return WalkIssue(shown, "undecodable_name", "name is not valid UTF-8; skipped", error)


async def scan_local(
    db: StateDB,
    run_id: int,
    side: int,
    root: Path,
    filt: Filter,
    follow_symlinks: bool,
    summary: PlanSummary,
    bad_names_fail: bool = True,
    keep_skipped: bool = False,
) -> None:
    """Walk ``root`` in a worker thread and store its entries as ``side``.

    The caller has checked the root with :func:`_root_usable`; a missing target is empty.
    ``bad_names_fail`` makes names that are not UTF-8 errors rather than warnings;
    ``keep_skipped`` stores what the walk leaves out as kept rows (see :func:`walk_local`).
    """
    if not await anyio.Path(root).is_dir():
        return
    walker = walk_local(
        root,
        filt,
        follow_symlinks=follow_symlinks,
        bad_names_fail=bad_names_fail,
        keep_skipped=keep_skipped,
    )
    while True:
        batch = await anyio.to_thread.run_sync(next, walker, None)
        if batch is None:
            return
        rows = [b for b in batch if isinstance(b, ScanRow)]
        for issue in (b for b in batch if isinstance(b, WalkIssue)):
            _log_issue(issue)
            summary.issues.append(issue)
        await db.add_scan(run_id, side, rows)


def _log_issue(issue: WalkIssue) -> None:
    level = log.error if issue.error else log.warning
    level("item_skipped", path=issue.path, reason=issue.kind, detail=issue.detail)


def _remote_excluded(rel: str, is_dir: bool, size: int, mtime_ns: int, filt: Filter) -> bool:
    parts = rel.split("/")
    for depth in range(1, len(parts)):
        if filt.dir_excluded("/".join(parts[:depth])):
            return True
    if is_dir:
        return filt.dir_excluded(rel)
    return not filt.file_included(rel, size, mtime_ns)


async def scan_remote(
    db: StateDB,
    run_id: int,
    side: int,
    drive: RemoteLister,
    root: str,
    filt: Filter,
    keep_skipped: bool = False,
) -> None:
    """Walk a drive folder and store its entries as ``side``.

    Unfinished upload placeholders are left out, so they count as missing and are resumed.
    With ``keep_skipped``, placeholders and filtered entries are stored as kept rows instead.
    Raises whatever the listing raises; the caller then treats the listing as incomplete.
    """
    prefix = root.rstrip("/") + "/"
    rows: list[ScanRow] = []
    async for entry in drive.walk(root):
        if not entry.path.startswith(prefix):
            continue
        rel = entry.path[len(prefix) :]
        mtime_ns = to_ns(entry.updated_at)
        skipped = entry.uploading or _remote_excluded(rel, entry.is_dir, entry.size, mtime_ns, filt)
        if skipped and not keep_skipped:
            continue
        size = 0 if entry.is_dir else entry.size
        rows.append(
            _row(
                rel,
                entry.path,
                entry.is_dir,
                size,
                mtime_ns,
                remote_id=entry.id,
                uri=entry.uri,
                kept=skipped,
            )
        )
        if len(rows) >= _BATCH:
            await db.add_scan(run_id, side, rows)
            rows = []
    if rows:
        await db.add_scan(run_id, side, rows)


def to_ns(moment: datetime) -> int:
    """Return a datetime as integer nanoseconds since the epoch (naive = UTC), to the µs."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000) * 1000


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file's content (blocking: run it in a worker thread)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _close(a_ns: int, b_ns: int) -> bool:
    return abs(a_ns - b_ns) < MTIME_WINDOW_NS


class _Planner:
    """Turns the sorted scan stream into plan rows for one run."""

    def __init__(self, db: StateDB, run_id: int, job_id: int, job: JobSpec, upload: bool) -> None:
        self.db = db
        self.run_id = run_id
        self.job_id = job_id
        self.job = job
        self.upload = upload
        self.seq = 0
        self.rows: list[PlanRow] = []
        self.case_clashes: set[str] = set()

    def target_path(self, key: str) -> str:
        """Where ``key`` goes: an absolute drive path, or a relative local path."""
        if self.upload:
            return join_remote(self.job.target.path, key)
        return "/".join(safe_local_name(part) for part in key.split("/"))

    async def add(
        self, action: str, src: ScanRow | None, dst: str, reason: str, *, overwrite: bool = False
    ) -> None:
        """Queue one decision, flushing a full batch to the database."""
        row = src if src is not None else ScanRow("", "", "", False, 0, 0)
        self.rows.append(
            PlanRow(
                self.seq,
                action,
                row.key,
                row.path,
                dst,
                row.size,
                row.mtime_ns,
                overwrite,
                reason,
                row.remote_id,
                row.uri,
                is_dir=row.is_dir,
            )
        )
        self.seq += 1
        if len(self.rows) >= _BATCH:
            await self.flush()

    async def flush(self) -> None:
        """Write the queued decisions."""
        if self.rows:
            await self.db.add_plan(self.run_id, self.rows)
            self.rows = []

    async def fail_walk_errors(self, summary: PlanSummary) -> None:
        """Plan each error of the local walk as a ``fail`` item, as a run counts it.

        Warnings stay issues. The item's target is the path the entry has or would have.
        """
        for issue in (i for i in summary.issues if i.error):
            key = key_of(issue.path)
            dst = join_remote(self.job.target.path, key) if self.upload else issue.path
            row = _row(issue.path, issue.path, False, 0, 0)
            await self.add("fail", row, dst, f"{issue.kind}: {issue.detail}")
        summary.issues = [i for i in summary.issues if not i.error]

    async def decide(self, key: str, srcs: list[ScanRow], dsts: list[ScanRow]) -> None:
        """Decide one key from its source and target entries; kept entries are left alone.

        A kept source entry (one the filters or the walk leave out, such as a file that grew
        past ``max_size``) also keeps its target counterpart: the source still has it.
        """
        dsts = [dst for dst in dsts if not dst.kept]
        source_kept = any(src.kept for src in srcs)
        srcs = [src for src in srcs if not src.kept]
        if not srcs and (source_kept or not dsts):
            return
        if not srcs:
            await self.decide_orphans(dsts)
            return
        try:
            target = self.target_path(key)
        except UnsafeName as exc:
            # The key is the path the target would have had.
            for src in srcs:
                await self.add("fail", src, key, f"unsafe_name: {exc}")
            return
        if len(srcs) > 1:
            for src in srcs:
                log.error("collision_detected", path=src.path, key=key, reason="nfc_collision")
                await self.add("fail", src, target, "nfc_collision")
            return
        src = srcs[0]
        problem = drive_name_problem(key) if self.upload else ""
        if problem:
            log.error("name_rejected", path=src.path, reason="invalid_remote_name", detail=problem)
            await self.add("fail", src, target, f"invalid_remote_name: {problem}")
            return
        if not dsts:
            await self.decide_new(src, target)
            return
        dst = dsts[0]
        if src.is_dir != dst.is_dir:
            await self.add("fail", src, dst.path, "type_conflict")
        elif src.is_dir:
            return
        elif await self.same(src, dst):
            await self.add("skip", src, dst.path, "unchanged")
        else:
            await self.decide_conflict(src, dst.path, "changed")

    async def same(self, src: ScanRow, dst: ScanRow) -> bool:
        """True when the target already holds the source's content under ``compare``.

        ``checksum`` hashes the local file and compares it with the hash recorded when ferry
        last transferred the item, provided the drive entry is still the one it wrote then
        (same id, same modification time); drive listings carry no content hash.
        """
        if src.size != dst.size:
            return False
        if self.job.compare == "size":
            return True
        if self.job.compare == "size-mtime":
            # Two empty files hold the same content. Some policies (OneDrive) create empty
            # files through PUT /file/content, which cannot carry a modification time, so
            # comparing times there would re-send them on every run.
            return src.size == 0 or _close(src.mtime_ns, dst.mtime_ns)
        local, remote = (src, dst) if self.upload else (dst, src)
        recorded = await self.db.fingerprint(self.job_id, src.key)
        if recorded is None:
            return False
        digest, remote_id, remote_mtime_ns = recorded
        if remote_id != remote.remote_id or not _close(remote_mtime_ns, remote.mtime_ns):
            return False
        root = self.job.source.path if self.upload else self.job.target.path
        try:
            actual = await anyio.to_thread.run_sync(sha256_file, Path(root, local.path))
        except OSError:
            return False
        return actual == digest

    async def decide_new(self, src: ScanRow, target: str) -> None:
        """A key the target lacks: create it, unless a case-only sibling is there.

        With ``include`` globs, folders are not created on their own: the copies of the files
        they select create their parents, and folders with no selected file stay out.
        """
        if src.is_dir and self.job.include:
            return
        if src.key not in self.case_clashes:
            await self.add("mkdir" if src.is_dir else "copy", src, target, "new")
        elif src.is_dir:
            await self.add("fail", src, target, "case_collision")
        else:
            await self.decide_conflict(src, target, "case_collision", tag="case ")

    async def decide_conflict(self, src: ScanRow, target: str, reason: str, tag: str = "") -> None:
        """Apply ``on_conflict`` to a file whose target exists (or exists under another case)."""
        policy = self.job.on_conflict
        if policy == "overwrite" and not tag:
            await self.add("copy", src, target, reason, overwrite=True)
        elif policy in ("overwrite", "rename"):
            action, target = await self.renamed(src, tag)
            await self.add(
                action, src, target, reason if action == "copy" else "renamed_copy_unchanged"
            )
        elif policy == "skip":
            await self.add("skip", src, target, reason)
        else:
            reason = "conflict" if reason == "changed" else reason
            log.error("conflict_detected", path=src.path, reason=reason)
            await self.add("fail", src, target, reason)

    async def renamed(self, src: ScanRow, tag: str) -> tuple[str, str]:
        """Pick the ``name (n).ext`` target of a renamed copy.

        Returns ``("skip", path)`` when an earlier renamed copy already holds the source's
        content (so re-runs do not pile up copies), else ``("copy", path)`` for the first n free
        on both sides.
        """
        path = PurePosixPath(src.key)
        suffix = "".join(path.suffixes[-1:])
        stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
        for start in range(1, 10_000, 50):
            names = [
                str(path.with_name(f"{stem} ({tag}{n}){suffix}")) for n in range(start, start + 50)
            ]
            on_target = await self.db.scan_rows(self.run_id, DST, names)
            on_source = await self.db.scan_rows(self.run_id, SRC, names)
            for name in names:
                row = on_target.get(name)
                if row is not None and not (row.is_dir or row.kept) and await self.same(src, row):
                    return "skip", row.path
                if row is None and name not in on_source:
                    return "copy", self.target_path(name)
        raise RuntimeError(f"no free rename target for {src.key!r}")

    async def decide_orphans(self, dsts: list[ScanRow]) -> None:
        """Entries only the target has: in mirror mode, delete each file; a folder is only a
        candidate (``rmdir``) until :func:`_settle_folders` has seen what lies below it."""
        if self.job.mode != "mirror":
            return
        for dst in dsts:
            await self.add("rmdir" if dst.is_dir else "delete", dst, dst.path, "not_in_source")


async def _settle_folders(db: StateDB, run_id: int) -> None:
    """Turn each ``rmdir`` candidate into one delete of the folder, or into nothing.

    A folder is deleted whole when nothing of the source and nothing that stays at the target
    lies below it; its row then stands for the files below it (one item for an empty folder)
    and replaces their rows. Otherwise the folder stays, and the decisions below it stand.
    Candidates come in key order, so a folder is settled before the folders inside it.
    """
    async for page in db.plan_pages(run_id, "rmdir"):
        for candidate in page:
            if await db.plan_row(run_id, candidate.seq) is None:
                continue  # below a folder deleted whole
            below = await db.subtree(run_id, candidate.key)
            deleted = sum(below.actions.get(a, (0, 0))[0] for a in ("delete", "rmdir"))
            if below.source_entries or deleted != below.target_entries:
                await db.drop_plan_row(run_id, candidate.seq)
                continue
            files, size = below.actions.get("delete", (0, 0))
            reason = f"not_in_source: folder, {files} file(s)"
            folder = replace(
                candidate, action="delete", size=size, reason=reason, items=max(files, 1)
            )
            await db.replace_subtree(run_id, folder)


def _check_max_delete(job: JobSpec, summary: PlanSummary) -> None:
    """Refuse all the deletes of a plan with more than ``max_delete``, as an error issue."""
    count = summary.actions.get("delete", (0, 0))[0]
    cap = job.max_delete
    if cap is None or count <= cap:
        return
    excess = count - cap
    detail = f"{count} deletes planned, {excess} more than max_delete = {cap}; none is done"
    shown = job.target.path if job.target.is_remote else display_path(job.target.path)
    summary.issues.append(WalkIssue(shown, "max_delete", detail, True))
    summary.deletes_refused = True
    log.error("deletes_refused", planned=count, max_delete=cap, excess=excess)


def _root_usable(summary: PlanSummary, side: int, path: str, exists: bool, is_dir: bool) -> bool:
    """Check one side's root: a source must be a folder; a target a folder or missing.

    A mistyped source must never look like an empty one, or a mirror would empty the target.
    """
    if is_dir or (side == DST and not exists):
        return True
    kind = "missing_source" if side == SRC else "target_not_a_folder"
    detail = "is not a folder" if exists else "does not exist"
    summary.issues.append(WalkIssue(path, kind, detail, True))
    summary.listing_complete = False
    log.error("item_skipped", path=path, reason=kind, detail=detail)
    return False


async def plan_job(
    db: StateDB,
    run_id: int,
    job: JobSpec,
    drive: RemoteLister,
    *,
    now: Callable[[], float],
) -> PlanSummary:
    """List both sides of ``job`` into the state database and store the run's plan.

    A failed listing is recorded as an issue with ``listing_complete = False`` and nothing is
    planned, so no missing item is ever inferred from it. Otherwise the errors of the local walk
    (an unreadable file, a dangling link followed) are planned as ``fail`` items, so that the
    plan counts what a run will. More deletes than ``max_delete`` are a ``max_delete`` error
    issue and set ``deletes_refused``. The errors among the issues and the ``fail`` decisions
    are also stored as the run's issues, which outlive its plan.
    """
    summary = PlanSummary()
    upload = job.target.is_remote
    await _list_sides(db, run_id, job, drive, _job_filter(job, now()), summary)
    if summary.listing_complete:
        planner = _Planner(db, run_id, await db.job_id(job.name), job, upload)
        planner.case_clashes = await db.case_clashes(run_id)
        await planner.fail_walk_errors(summary)
        await _decide_all(db, run_id, planner)
        await planner.flush()
        await _settle_folders(db, run_id)
        await db.keep_plan_failures(run_id)
        summary.actions = await db.plan_summary(run_id)
        _check_max_delete(job, summary)
    errors = [RunIssue(i.path, i.kind, i.detail) for i in summary.issues if i.error]
    await db.add_issues(run_id, errors)

    return summary


async def _list_sides(
    db: StateDB, run_id: int, job: JobSpec, drive: RemoteLister, filt: Filter, summary: PlanSummary
) -> None:
    """Check both roots, then store both listings; problems go into ``summary``."""
    upload = job.target.is_remote
    local = Path(job.source.path if upload else job.target.path)
    remote = job.target.path if upload else job.source.path
    # The folder being listed, for the issue if it fails: a remote walk does not say which
    # folder below its root failed, so that root stands for it.
    listing = remote
    try:
        entry = await drive.stat(remote)
        local_ok = _root_usable(
            summary,
            SRC if upload else DST,
            display_path(str(local)),
            await anyio.Path(local).exists(),
            await anyio.Path(local).is_dir(),
        )
        remote_ok = _root_usable(
            summary, DST if upload else SRC, remote, entry is not None, bool(entry and entry.is_dir)
        )
        if not (local_ok and remote_ok):
            return
        # A mirror keeps a row for every target entry it must not delete, so that it never
        # deletes a folder that still holds one.
        mirror = job.mode == "mirror"
        if upload:
            listing = display_path(str(local))
            await scan_local(
                db, run_id, SRC, local, filt, job.follow_symlinks, summary, keep_skipped=mirror
            )
            listing = remote
            await scan_remote(db, run_id, DST, drive, remote, filt, mirror)
        else:
            await scan_remote(db, run_id, SRC, drive, remote, filt, mirror)
            listing = display_path(str(local))
            # A local name that is not UTF-8 cannot match any drive name; only a mirror, which
            # would have to delete it, fails over it.
            await scan_local(db, run_id, DST, local, filt, False, summary, mirror, mirror)
    except (FerryError, OSError) as exc:
        if isinstance(exc, FerryError) and exc.fatal and not isinstance(exc, ListingInconsistent):
            raise
        log.error("listing_failed", path=listing, error=str(exc), error_type=type(exc).__name__)
        summary.issues.append(WalkIssue(listing, "listing_failed", str(exc), True))
        summary.listing_complete = False


async def _decide_all(db: StateDB, run_id: int, planner: _Planner) -> None:
    """Group the sorted scan stream by key and decide each group."""
    current = ""
    srcs: list[ScanRow] = []
    dsts: list[ScanRow] = []
    async for page in db.scan_pages(run_id):
        for side, row in page:
            if row.key != current and (srcs or dsts):
                await planner.decide(current, srcs, dsts)
                srcs, dsts = [], []
            current = row.key
            (srcs if side == SRC else dsts).append(row)
    if srcs or dsts:
        await planner.decide(current, srcs, dsts)


def _job_filter(job: JobSpec, now: float) -> Filter:
    min_mtime = None if job.max_age is None else int((now - job.max_age) * 1e9)
    return Filter.build(
        job.include,
        job.exclude,
        min_size=job.min_size,
        max_size=job.max_size,
        min_mtime_ns=min_mtime,
    )


def entry_for(row: PlanRow) -> RemoteEntry:
    """Rebuild the :class:`RemoteEntry` of a planned download from its stored fields."""
    return RemoteEntry(
        path=row.src,
        name=row.src.rpartition("/")[2],
        is_dir=False,
        size=row.size,
        updated_at=datetime.fromtimestamp(row.mtime_ns / 1e9, tz=UTC),
        id=row.remote_id,
        uri=row.uri,
    )
