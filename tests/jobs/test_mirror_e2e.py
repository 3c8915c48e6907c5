"""End to end: mirror deletes through the `ferry` CLI against the emulator, both directions.

The helpers come from :mod:`tests.jobs.test_e2e`; each test starts the CLI a few times.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.jobs.test_e2e import EMAIL, emulator, ferry, write_config

pytestmark = pytest.mark.anyio


def up_mirror(max_delete: int, extra: str = "") -> str:
    return f"""
[[jobs]]
name = "upm"
kind = "sync"
mode = "mirror"
source = "src"
target = "emu:/backup"
max_delete = {max_delete}
{extra}
"""


def down_mirror(max_delete: int, extra: str = "") -> str:
    return f"""
[[jobs]]
name = "downm"
kind = "sync"
mode = "mirror"
source = "emu:/backup"
target = "restore"
max_delete = {max_delete}
{extra}
"""


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def planned_deletes(stdout: bytes) -> tuple[int, str]:
    """Return the count and size the plan prints on its ``delete`` line."""
    found = re.search(rb"^  delete +(\d+) item\(s\) +(.+)$", stdout, re.MULTILINE)
    assert found is not None, stdout.decode()
    return int(found[1]), found[2].decode().strip()


async def test_upload_mirror_of_a_moved_folder_counts_each_file_against_max_delete(
    tmp_path: Path,
) -> None:
    """`mv src/sub elsewhere` with 17 files is 17 deletes: max_delete = 5 refuses them all."""
    src = tmp_path / "src"
    write_files(src, {"a.txt": b"a", **{f"sub/d{i % 2}/f{i}.txt": b"12345" for i in range(17)}})
    async with emulator(tmp_path) as emu:
        config = write_config(tmp_path, emu.url, up_mirror(5))
        first = await ferry(config, "run")
        assert first.returncode == 0, first.stderr.decode()
        shutil.move(src / "sub", tmp_path / "elsewhere")

        plan = await ferry(config, "plan", "--job", "upm")
        assert planned_deletes(plan.stdout) == (17, "85 B"), plan.stdout.decode()

        refused = await ferry(config, "run")
        assert refused.returncode == 1, refused.stderr.decode()
        assert b"deletes_refused" in refused.stderr
        assert b" 0 deleted, " in refused.stdout
        assert all(emu.file(EMAIL, f"/backup/sub/d{i % 2}/f{i}.txt") for i in range(17))

        allowed = write_config(tmp_path, emu.url, up_mirror(17))
        done = await ferry(allowed, "run")
        assert done.returncode == 0, done.stderr.decode()
        assert b" 17 deleted, " in done.stdout
        assert emu.file(EMAIL, "/backup/sub") is None
        assert emu.file(EMAIL, "/backup/a.txt") is not None


async def test_download_mirror_counts_each_file_of_a_local_folder_against_max_delete(
    tmp_path: Path,
) -> None:
    """A local folder of 50 files the drive lacks is 50 deletes: max_delete = 2 refuses them."""
    write_files(tmp_path / "src", {"a.txt": b"a"})
    async with emulator(tmp_path) as emu:
        seed = write_config(tmp_path, emu.url, up_mirror(0))
        assert (await ferry(seed, "run")).returncode == 0
        config = write_config(tmp_path, emu.url, down_mirror(2))
        first = await ferry(config, "run")
        assert first.returncode == 0, first.stderr.decode()
        restore = tmp_path / "restore"
        write_files(restore, {f"big/f{i:02d}.bin": b"xx" for i in range(50)})

        plan = await ferry(config, "plan", "--job", "downm")
        assert planned_deletes(plan.stdout) == (50, "100 B"), plan.stdout.decode()

        refused = await ferry(config, "run")
        assert refused.returncode == 1, refused.stderr.decode()
        assert b"deletes_refused" in refused.stderr
        assert len(list((restore / "big").iterdir())) == 50
        assert (restore / "a.txt").read_bytes() == b"a"


async def test_upload_mirror_keeps_excluded_files_and_the_folder_holding_them(
    tmp_path: Path,
) -> None:
    """With exclude = ["*.keep"], a folder gone from the source keeps foo/a.keep and foo."""
    src = tmp_path / "src"
    write_files(src, {"a.txt": b"a", "foo/a.keep": b"keep", "foo/b.txt": b"b", "foo/s/c": b"c"})
    async with emulator(tmp_path) as emu:
        seed = write_config(tmp_path, emu.url, up_mirror(0))
        assert (await ferry(seed, "run")).returncode == 0
        shutil.rmtree(src / "foo")
        config = write_config(tmp_path, emu.url, up_mirror(5, 'exclude = ["*.keep"]'))
        done = await ferry(config, "run")
        assert done.returncode == 0, done.stderr.decode()
        assert b" 2 deleted, " in done.stdout
        assert emu.file(EMAIL, "/backup/foo/a.keep") is not None
        assert emu.file(EMAIL, "/backup/foo/b.txt") is None
        assert emu.file(EMAIL, "/backup/foo/s") is None


async def test_download_mirror_keeps_excluded_and_filtered_files_and_their_folders(
    tmp_path: Path,
) -> None:
    """Local files left out by exclude or max_size survive a download mirror, with foo."""
    write_files(tmp_path / "src", {"a.txt": b"a"})
    async with emulator(tmp_path) as emu:
        seed = write_config(tmp_path, emu.url, up_mirror(0))
        assert (await ferry(seed, "run")).returncode == 0
        restore = tmp_path / "restore"
        write_files(
            restore,
            {"foo/a.keep": b"k", "foo/b.txt": b"b", "big/huge.bin": b"x" * 100, "big/c": b"c"},
        )
        extra = 'exclude = ["*.keep"]\nmax_size = "50B"'
        config = write_config(tmp_path, emu.url, down_mirror(5, extra))
        done = await ferry(config, "run")
        assert done.returncode == 0, done.stderr.decode()
        assert b" 2 deleted, " in done.stdout
        left = sorted(p.relative_to(restore).as_posix() for p in restore.rglob("*"))
        assert left == ["a.txt", "big", "big/huge.bin", "foo", "foo/a.keep"]


@pytest.mark.parametrize("upload", [True, False])
async def test_plan_says_deletes_above_max_delete_are_refused(tmp_path: Path, upload: bool) -> None:
    """6 deletes, max_delete = 5: plan and run both exit 1 and say so; nothing is deleted."""
    write_files(tmp_path / "src", {f"f{i}.txt": b"x" for i in range(6)})
    async with emulator(tmp_path) as emu:
        seed = write_config(tmp_path, emu.url, up_mirror(0))
        assert (await ferry(seed, "run")).returncode == 0
        if upload:
            for i in range(6):
                (tmp_path / "src" / f"f{i}.txt").unlink()
            config, name = write_config(tmp_path, emu.url, up_mirror(5)), "upm"
        else:
            write_files(tmp_path / "restore", {f"extra{i}.txt": b"e" for i in range(6)})
            config, name = write_config(tmp_path, emu.url, down_mirror(5)), "downm"

        plan = await ferry(config, "plan", "--job", name)
        assert plan.returncode == 1, plan.stdout.decode()
        assert planned_deletes(plan.stdout)[0] == 6
        assert b"6 deletes planned, 1 more than max_delete = 5" in plan.stdout

        done = await ferry(config, "run")
        assert done.returncode == 1, done.stderr.decode()
        assert b"deletes_refused" in done.stderr
        assert b" 0 deleted, " in done.stdout
        status = await ferry(config, "status")
        assert b"1 more than max_delete = 5" in status.stdout, status.stdout.decode()
        if upload:
            assert all(emu.file(EMAIL, f"/backup/f{i}.txt") for i in range(6))
        else:
            assert len(list((tmp_path / "restore").glob("extra*.txt"))) == 6
