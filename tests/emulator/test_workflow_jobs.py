"""Workflow jobs driven by the task runner over an in-memory drive (contract 8.1-8.4, 8.7)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from emulator.errors import ApiError
from emulator.tasks import RetryPolicy, Task, TaskRunner, TaskStatus
from emulator.workflow import (
    CreateArchiveJob,
    Entry,
    ExtractArchiveJob,
    RelocateJob,
    RemoteDownloadJob,
    join_uri,
    sanitize_file_name,
)

FAST = RetryPolicy(max_retry=2, backoff_min_s=0.01, backoff_factor=1, backoff_max_s=0.01)
ROOT = "cloudreve://my"


class MemoryDrive:
    """A drive kept in dicts: URI -> bytes for files, a set of folder URIs."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.folders: set[str] = {ROOT}
        self.quota = 1 << 30
        self.validations: list[tuple[str, int]] = []

    def _entry(self, uri: str) -> Entry:
        name = uri.rsplit("/", 1)[-1]
        if uri in self.folders:
            return Entry(uri, name, True, 0)
        return Entry(uri, name, False, len(self.files[uri]))

    async def stat(self, user_id: int, uri: str) -> Entry:
        if uri not in self.files and uri not in self.folders:
            raise ApiError(40016, "Path not exist")
        return self._entry(uri)

    async def create_folder(self, user_id: int, uri: str) -> None:
        self.folders.add(uri.rstrip("/"))

    async def put_file(
        self, user_id: int, uri: str, src: Path, *, policy_id: int | None = None
    ) -> None:
        if uri in self.files or uri in self.folders:
            raise ApiError(40004, "Object existed")
        self.files[uri] = await anyio.Path(src).read_bytes()

    async def prevalidate(self, user_id: int, folder: str, name: str, size: int) -> None:
        self.validations.append((name, size))
        if size > self.quota:
            raise ApiError(40051, "Insufficient capacity")

    async def read_file(self, user_id: int, uri: str, dst: Path) -> None:
        await anyio.Path(dst).write_bytes(self.files[uri])

    async def walk(self, user_id: int, uri: str) -> list[tuple[str, Entry]]:
        prefix = uri.rstrip("/") + "/"
        found = sorted(u for u in (*self.files, *self.folders) if u.startswith(prefix))
        return [(u[len(prefix) :], self._entry(u)) for u in found]

    async def pending_entities(self, user_id: int, uri: str, policy_id: str) -> int:
        return 1

    async def relocate_file(self, user_id: int, uri: str, policy_id: str) -> int:
        return 1


PAYLOAD = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
async def slow_server() -> AsyncIterator[str]:
    """A loopback HTTP server: /slow/<name> streams PAYLOAD in 8 pieces 0.1 s apart, /fast/<name>
    sends it at once, /missing answers 404."""

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(len(PAYLOAD))})
        await resp.prepare(request)
        step = len(PAYLOAD) // 8
        for i in range(8):
            await resp.write(PAYLOAD[i * step : (i + 1) * step])
            await anyio.sleep(0.1)
        return resp

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    async def fast(request: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD)

    app = web.Application()
    app.router.add_get("/slow/{name}", slow)
    app.router.add_get("/missing", missing)
    app.router.add_get("/fast/{name}", fast)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _finished(task: Task) -> TaskStatus:
    """Wait (at most 10 s) for the task to finish and return its final status."""
    with anyio.fail_after(10):
        while True:
            if task.status.finished:
                return task.status
            await anyio.sleep(0.01)


async def _reach_phase(task: Task, phase: str) -> None:
    with anyio.fail_after(5):
        while True:
            if task.phase == phase:
                return
            await anyio.sleep(0.01)


def _download_job(
    drive: MemoryDrive, runner: TaskRunner, url: str, tmp_path: Path
) -> RemoteDownloadJob:
    return RemoteDownloadJob(
        drive=drive,
        clock=runner.clock,
        spawn=runner.start_soon,
        owner_id=1,
        src_url=url,
        dst=ROOT,
        temp_dir=tmp_path / "dl",
        monitor_interval_s=0.05,
    )


def test_s8_2_sanitizes_names_and_joins_uris() -> None:
    """Reserved characters become '_' and URI segments are percent-encoded once."""
    assert sanitize_file_name('a:b*c?"d<e>f|g\\h.txt') == "a_b_c__d_e_f_g_h.txt"
    assert join_uri("cloudreve://my/dl/", "x y/100%.txt") == "cloudreve://my/dl/x%20y/100%25.txt"


@pytest.mark.anyio
async def test_s8_2_remote_download_suspends_while_downloading_then_completes(
    slow_server: str, tmp_path: Path
) -> None:
    """The task suspends with resume_time and download progress, then lands the file in dst."""
    drive = MemoryDrive()
    async with TaskRunner.open(retry=FAST) as runner:
        job = _download_job(drive, runner, f"{slow_server}/slow/a%3Ab.bin", tmp_path)
        task = runner.submit(1, job)
        observed: list[dict[str, object]] = []
        with anyio.fail_after(10):
            while True:
                if task.status.finished:
                    break
                if task.status is TaskStatus.SUSPENDING and task.phase == "monitor":
                    observed.append(task.to_json(str))
                await anyio.sleep(0.02)

    assert task.status is TaskStatus.COMPLETED
    assert drive.files["cloudreve://my/a_b.bin"] == PAYLOAD
    assert observed, "the task was never seen suspending in the monitor phase"
    assert all(o["resume_time"] for o in observed)
    downloads = [o["summary"]["props"]["download"] for o in observed]  # type: ignore[index]
    assert any(0 < d["downloaded"] < len(PAYLOAD) for d in downloads)
    final = task.to_json(str)["summary"]["props"]  # type: ignore[index]
    assert final["download"]["state"] == "completed"
    assert final["download"]["files"][0]["name"] == "a:b.bin"
    assert final["failed"] == 0
    assert not (tmp_path / "dl").exists()
    assert drive.validations[-1] == ("a_b.bin", len(PAYLOAD))


@pytest.mark.anyio
async def test_s8_2_download_over_quota_fails_validation_early(
    slow_server: str, tmp_path: Path
) -> None:
    """Once the size is known, a file that would exceed the quota ends the task error."""
    drive = MemoryDrive()
    drive.quota = 1000
    async with TaskRunner.open(retry=FAST) as runner:
        job = _download_job(drive, runner, f"{slow_server}/slow/q.bin", tmp_path)
        task = runner.submit(1, job)
        assert await _finished(task) is TaskStatus.ERROR

    assert task.error.startswith("failed to validate files: Insufficient capacity (code 40051)")
    assert task.phase == "monitor"
    assert task.retry_count == 0
    assert drive.files == {}
    assert job.download is not None
    assert job.download.downloaded < len(PAYLOAD)


@pytest.mark.anyio
async def test_s8_2_existing_name_fails_the_file_and_the_task(
    slow_server: str, tmp_path: Path
) -> None:
    """A taken destination name counts in failed; retries are spent and the task ends error."""
    drive = MemoryDrive()
    drive.files["cloudreve://my/x.bin"] = b"old"
    async with TaskRunner.open(retry=FAST) as runner:
        task = runner.submit(1, _download_job(drive, runner, f"{slow_server}/slow/x.bin", tmp_path))
        assert await _finished(task) is TaskStatus.ERROR

    assert drive.files["cloudreve://my/x.bin"] == b"old"
    assert task.phase == "transfer"
    assert task.retry_count == 2
    assert "failed to transfer 1 file(s)" in task.error
    assert task.to_json(str)["summary"]["props"]["failed"] == 1  # type: ignore[index]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/missing", ":1/unreachable"])
async def test_s8_2_unfetchable_url_ends_error_without_retry(
    slow_server: str, tmp_path: Path, path: str
) -> None:
    """A 404 or a refused connection ends the task error with text, no retries."""
    url = f"{slow_server}{path}" if path.startswith("/") else f"http://127.0.0.1{path}"
    drive = MemoryDrive()
    async with TaskRunner.open(retry=FAST) as runner:
        task = runner.submit(1, _download_job(drive, runner, url, tmp_path))
        assert await _finished(task) is TaskStatus.ERROR

    assert task.retry_count == 0
    assert 'failed with state "error"' in task.error
    assert drive.files == {}


@pytest.mark.anyio
async def test_s8_2_non_http_url_is_rejected(tmp_path: Path) -> None:
    """A file:// URL is rejected when the task runs."""
    async with TaskRunner.open(retry=FAST) as runner:
        task = runner.submit(
            1, _download_job(MemoryDrive(), runner, "file:///etc/passwd", tmp_path)
        )
        assert await _finished(task) is TaskStatus.ERROR

    assert task.error.startswith("url rejected")


@pytest.mark.anyio
async def test_s8_4_cancel_moves_the_task_to_canceled(slow_server: str, tmp_path: Path) -> None:
    """Cancelling while downloading ends the task canceled and transfers nothing."""
    drive = MemoryDrive()
    async with TaskRunner.open(retry=FAST) as runner:
        task = runner.submit(1, _download_job(drive, runner, f"{slow_server}/slow/c.bin", tmp_path))
        await _reach_phase(task, "monitor")
        await task.job.cancel(task)
        assert await _finished(task) is TaskStatus.CANCELED

    assert drive.files == {}


@pytest.mark.anyio
async def test_s8_7_archive_then_extract_round_trip(tmp_path: Path) -> None:
    """Archiving a folder and a file, then extracting the zip, reproduces names and bytes."""
    drive = MemoryDrive()
    drive.folders |= {"cloudreve://my/d", "cloudreve://my/d/sub", "cloudreve://my/out"}
    drive.files["cloudreve://my/d/a.txt"] = b"alpha"
    drive.files["cloudreve://my/d/sub/b.bin"] = bytes(1000)
    drive.files["cloudreve://my/top.txt"] = b"top"
    async with TaskRunner.open(retry=FAST) as runner:
        archive = CreateArchiveJob(
            drive=drive,
            clock=runner.clock,
            owner_id=1,
            sources=["cloudreve://my/d", "cloudreve://my/top.txt"],
            dst="cloudreve://my/all.zip",
            temp_dir=tmp_path / "a",
        )
        t1 = runner.submit(1, archive)
        assert await _finished(t1) is TaskStatus.COMPLETED
        extract = ExtractArchiveJob(
            drive=drive,
            clock=runner.clock,
            owner_id=1,
            src="cloudreve://my/all.zip",
            dst="cloudreve://my/out",
            temp_dir=tmp_path / "e",
        )
        t2 = runner.submit(1, extract)
        assert await _finished(t2) is TaskStatus.COMPLETED

    with zipfile.ZipFile(io.BytesIO(drive.files["cloudreve://my/all.zip"])) as zf:
        assert sorted(zf.namelist()) == ["d/", "d/a.txt", "d/sub/", "d/sub/b.bin", "top.txt"]
    assert drive.files["cloudreve://my/out/d/a.txt"] == b"alpha"
    assert drive.files["cloudreve://my/out/d/sub/b.bin"] == bytes(1000)
    assert drive.files["cloudreve://my/out/top.txt"] == b"top"
    assert "cloudreve://my/out/d/sub" in drive.folders


@pytest.mark.anyio
async def test_s8_7_extract_over_the_decompress_limit_ends_error(tmp_path: Path) -> None:
    """An archive larger than the group's decompress_size fails while running."""
    drive = MemoryDrive()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("big.bin", bytes(5000))
    drive.files["cloudreve://my/big.zip"] = buf.getvalue()
    async with TaskRunner.open(retry=FAST) as runner:
        job = ExtractArchiveJob(
            drive=drive,
            clock=runner.clock,
            owner_id=1,
            src="cloudreve://my/big.zip",
            dst=ROOT,
            temp_dir=tmp_path / "e",
            decompress_limit=100,
        )
        task = runner.submit(1, job)
        assert await _finished(task) is TaskStatus.ERROR

    assert "exceeds the limit 100" in task.error
    assert "cloudreve://my/big.bin" not in drive.files


class SlowRelocateDrive(MemoryDrive):
    """Every file has two entities to move; each move takes 50 ms."""

    async def pending_entities(self, user_id: int, uri: str, policy_id: str) -> int:
        return 2

    async def relocate_file(self, user_id: int, uri: str, policy_id: str) -> int:
        if uri.endswith("bad.bin"):
            raise ApiError(40077, "Entity not exist")
        await anyio.sleep(0.05)
        return 2


@pytest.mark.anyio
async def test_s8_8_relocate_progress_counts_entities() -> None:
    """Progress "relocate" runs over entities; a failing file counts in failed and ends error."""
    drive = SlowRelocateDrive()
    drive.folders.add("cloudreve://my/r")
    for name in ("a.bin", "b.bin", "bad.bin"):
        drive.files[f"cloudreve://my/r/{name}"] = b"x"
    async with TaskRunner.open(retry=FAST) as runner:
        job = RelocateJob(
            drive=drive, clock=runner.clock, owner_id=1, sources=[ROOT + "/r"], dst_policy_id="p"
        )
        task = runner.submit(1, job)
        samples: list[tuple[int, int]] = []
        with anyio.fail_after(5):
            while True:
                if task.status.finished:
                    break
                if "relocate" in task.progress:
                    p = task.progress["relocate"]
                    samples.append((p.current, p.total))
                await anyio.sleep(0.01)

    assert task.status is TaskStatus.ERROR
    assert {total for _, total in samples} == {6}
    assert any(0 < current < 6 for current, _ in samples)
    assert task.to_json(str)["summary"]["props"]["failed"] == 1  # type: ignore[index]
    assert "failed to relocate 1 file(s)" in task.error


def _gbk_zip() -> bytes:
    """A zip whose member names are GBK bytes without the UTF-8 flag (as Windows tools write)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("abcd.txt", b"gbk")
        zf.writestr("keep/x.txt", b"x")
        zf.writestr("drop/y.txt", b"y")
    return buf.getvalue().replace(b"abcd.txt", "中文.txt".encode("gbk"))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("encoding", "mask", "expected"),
    [
        ("gbk", [], {"中文.txt", "keep/x.txt", "drop/y.txt"}),
        ("gbk", ["keep"], {"keep/x.txt"}),
        ("no-such-codec", ["keep/x.txt"], {"keep/x.txt"}),
    ],
)
async def test_s8_7_extract_honours_encoding_and_file_mask(
    tmp_path: Path, encoding: str, mask: list[str], expected: set[str]
) -> None:
    """Names decode with the requested encoding; only masked paths are extracted."""
    drive = MemoryDrive()
    drive.files["cloudreve://my/w.zip"] = _gbk_zip()
    drive.folders.add("cloudreve://my/x")
    async with TaskRunner.open(retry=FAST) as runner:
        job = ExtractArchiveJob(
            drive=drive,
            clock=runner.clock,
            owner_id=1,
            src="cloudreve://my/w.zip",
            dst="cloudreve://my/x",
            temp_dir=tmp_path / "e",
            file_mask=mask,
            encoding=encoding,
        )
        task = runner.submit(1, job)
        assert await _finished(task) is TaskStatus.COMPLETED

    got = {u.removeprefix("cloudreve://my/x/") for u in drive.files if u.startswith(ROOT + "/x/")}
    assert got == {join_uri("", p).lstrip("/") for p in expected}


class SlowPutDrive(MemoryDrive):
    """put_file takes 200 ms, so the transfer phase can be watched."""

    async def put_file(
        self, user_id: int, uri: str, src: Path, *, policy_id: int | None = None
    ) -> None:
        await anyio.sleep(0.2)
        await super().put_file(user_id, uri, src, policy_id=policy_id)


@pytest.mark.anyio
async def test_s8_6_transfer_phase_reports_upload_progress(
    slow_server: str, tmp_path: Path
) -> None:
    """During transfer the progress map has upload, upload_count and upload_single_0."""
    drive = SlowPutDrive()
    async with TaskRunner.open(retry=FAST) as runner:
        task = runner.submit(1, _download_job(drive, runner, f"{slow_server}/fast/t.bin", tmp_path))
        await _reach_phase(task, "transfer")
        await anyio.sleep(0.05)
        during = {k: p.to_json() for k, p in task.progress.items()}
        assert await _finished(task) is TaskStatus.COMPLETED

    assert during["upload_count"] == {"total": 1, "current": 0, "identifier": ""}
    assert during["upload"]["total"] == len(PAYLOAD)
    assert during["upload_single_0"]["identifier"] == "cloudreve://my/t.bin"
    assert task.progress == {}
