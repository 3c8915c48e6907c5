"""Contract 6.3 chunk arithmetic (BR-06, BR-07, BR-22) and the writer registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from transfer.backend import PartResult, SavedUpload
from transfer.config import TransferConfig
from transfer.errors import UnsupportedFeature
from transfer.policies import WRITERS, writer_factory
from transfer.policies.local import LocalWriter
from transfer.policies.remote import RemoteWriter
from transfer.upload import Uploader, _Run, chunk_plan, version_tuple


def test_s6_3_empty_file_is_one_zero_length_chunk() -> None:
    """BR-06: 0 bytes -> exactly one chunk of length 0."""
    plan = chunk_plan(0, 5_242_880)
    assert (plan.count, plan.length(0), plan.offset(0)) == (1, 0, 0)


def test_s6_3_exact_multiples_make_no_empty_tail() -> None:
    """BR-07: 4 MiB with 4 MiB chunks is one chunk; 8 MiB is two, each full."""
    assert chunk_plan(4_194_304, 4_194_304).count == 1
    plan = chunk_plan(8_388_608, 4_194_304)
    assert plan.count == 2
    assert [plan.length(i) for i in range(2)] == [4_194_304, 4_194_304]


def test_s6_3_chunk_size_zero_is_one_request() -> None:
    """chunk_size 0 sends the whole file as chunk 0."""
    plan = chunk_plan(123, 0)
    assert (plan.count, plan.length(0)) == (1, 123)


def test_s6_3_offsets_beyond_4_gib() -> None:
    """BR-22: 4 GiB + 1 bytes in 5 MiB chunks: 820 chunks, exact offsets and last length."""
    plan = chunk_plan(4_294_967_297, 5_242_880)
    assert plan.count == 820
    assert plan.offset(410) == 2_149_580_800
    assert plan.offset(819) == 4_293_918_720
    assert plan.length(819) == 1_048_577
    assert sum(plan.length(i) for i in range(plan.count)) == 4_294_967_297


def test_single_chunk_writers_get_the_whole_file() -> None:
    """A single-chunk writer (upyun) gets one chunk whatever chunk_size says."""
    plan = chunk_plan(10_000, 1_000, single=True)
    assert (plan.count, plan.length(0)) == (1, 10_000)


def test_s9_1_version_parsing() -> None:
    """Server versions parse into comparable tuples, '-pro' suffix included."""
    assert version_tuple("4.18.0") == (4, 18, 0)
    assert version_tuple("4.14.0-pro") == (4, 14, 0)
    assert version_tuple("4.14.0-pro") < (4, 18, 0)


def test_registry_knows_every_policy_type() -> None:
    """local and remote are built in; every storage-direct type has a registry row."""
    assert writer_factory("local") is LocalWriter
    assert writer_factory("remote") is RemoteWriter
    assert set(WRITERS) == {
        "local",
        "remote",
        "s3",
        "ks3",
        "cos",
        "oss",
        "obs",
        "onedrive",
        "qiniu",
        "upyun",
    }


def test_unknown_policy_type_is_unsupported() -> None:
    """A type nobody implements raises UnsupportedFeature."""
    with pytest.raises(UnsupportedFeature):
        writer_factory("ftp")


class _StubClient:
    """The two things the chunk sender reads from a client."""

    expected_call_s = 0.0

    def server_time(self) -> float:
        return 0.0


class _StubJournal:
    def __init__(self) -> None:
        self.acked: list[int] = []

    async def chunk_acked(self, key: str, index: int, etag: str) -> None:
        self.acked.append(index)


@pytest.mark.anyio
async def test_br22_resume_reads_exact_offsets_of_a_sparse_4_gib_file(tmp_path: Path) -> None:
    """Resuming chunks 410 and 819 of a 4 GiB + 1 sparse file reads them at their exact offsets."""
    path = tmp_path / "sparse.bin"
    size = 4_294_967_297
    with path.open("wb") as fh:
        fh.truncate(size)
        fh.seek(2_149_580_800)
        fh.write(b"A")
        fh.seek(size - 1)
        fh.write(b"Z")
    sent: list[tuple[int, int, int, bytes, bytes]] = []

    async def write(index: int, offset: int, data: bytes) -> PartResult:
        sent.append((index, offset, len(data), data[:1], data[-1:]))
        return PartResult(index=index)

    journal = _StubJournal()
    uploader = Uploader(_StubClient(), TransferConfig())  # type: ignore[arg-type]
    saved = SavedUpload("s", "cloudreve://my/x", size, 5_242_880, 2**40, "local", "k")
    st = path.stat()
    source = f"{st.st_size}:{st.st_mtime_ns}"
    plan = chunk_plan(size, 5_242_880)
    run = _Run(path, "key", journal, saved, source, plan, 2, None)  # type: ignore[arg-type]
    await uploader._send_indices(run, write, [410, 819])
    assert sorted(sent) == [
        (410, 2_149_580_800, 5_242_880, b"A", b"\x00"),
        (819, 4_293_918_720, 1_048_577, b"\x00", b"Z"),
    ]
    assert sorted(journal.acked) == [410, 819]
