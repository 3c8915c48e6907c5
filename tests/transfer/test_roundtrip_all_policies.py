"""A case-name tree round-trips byte-identical through every policy type the emulator serves
(contract 6, 6.3; cases BR-01/02/04/06/07/33).

Each policy runs on its own emulator with the smallest chunk its storage accepts, so that the
tree's exact chunk multiples stay small: moto wants 5 MiB parts for s3/ks3, COS and Qiniu 1 MiB,
OSS and OBS 100 KiB, OneDrive multiples of 320 KiB; local, remote and relay take any size, and
Upyun sends each file in one form POST whatever the chunk size.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.config import POLICY_TYPES
from emulator.testing import running_emulator
from tests.transfer.conftest import CHUNK
from tests.transfer.roundtrip import (
    MemoryJournal,
    build_tree,
    connected,
    download_tree,
    tree_digest,
    upload_tree,
)
from transfer import ApiError, join_remote

pytestmark = pytest.mark.anyio
ILLEGAL_OBJECT_NAME = 40052

POLICY_CHUNK = {
    "local": CHUNK,
    "relay": CHUNK,
    "remote": CHUNK,
    "s3": 5 << 20,
    "ks3": 5 << 20,
    "cos": 1 << 20,
    "qiniu": 1 << 20,
    "oss": 128 << 10,
    "obs": 128 << 10,
    "onedrive": 327680,
    "upyun": CHUNK,
}
# Names beyond CASE_NAMES: a literal `%3F`, query-like `=&#`, a 200-byte name of 4-byte code
# points. A real `?` is refused by Cloudreve itself (dbfs validateFileName: `:*?"<>|` are illegal
# unless the policy allows native names), so it is checked as a refusal below.
EXTRA_NAMES = ("q%3Fa=1&b=2#frag.txt", "why %3F not+.txt", "📷" * 49 + ".bin")
QUESTION_NAME = "why? not.txt"
# Where each policy's bytes go; the rest send parts to their storage under /storage/<type>/.
UPLOAD_ROUTE = {
    "local": "/api/v4/file/upload/*/*",
    "relay": "/api/v4/file/upload/*/*",
    "remote": "/api/v4/slave/upload/*",
}
DEEP = tuple(f"dir_{level:04d}" for level in range(1, 41))


def test_every_policy_type_has_a_chunk_size() -> None:
    """The parametrisation below covers every policy type the emulator serves."""
    assert set(POLICY_CHUNK) == set(POLICY_TYPES)


def build_all_cases(root: Path, chunk_size: int) -> None:
    """The shared case-name tree, a few more URL-reserved names and a 40-level deep path."""
    build_tree(root, chunk_size)
    for i, name in enumerate(EXTRA_NAMES):
        (root / name).write_bytes(name.encode() * (i + 1))
    deep = root.joinpath(*DEEP)
    deep.mkdir(parents=True)
    (deep / "bottom #40.txt").write_bytes(b"40 levels down\n")
    (deep / "chunk multiple.bin").write_bytes(bytes(range(256)) * (chunk_size // 256))


@pytest.mark.parametrize("policy", sorted(POLICY_CHUNK))
async def test_case_tree_roundtrips_byte_identical_through_every_policy(
    tmp_path: Path, policy: str
) -> None:
    """Drive.upload then Drive.download of the case tree gives the same bytes under NFC names."""
    chunk = POLICY_CHUNK[policy]
    src, dest = tmp_path / "src", tmp_path / "dest"
    build_all_cases(src, chunk)

    async with (
        running_emulator(tmp_path, policy=policy, chunk_size=chunk) as emu,
        connected(emu, tmp_path) as drive,
    ):
        await upload_tree(drive, src, "/roundtrip")
        await download_tree(drive, "/roundtrip", dest)

        question = tmp_path / QUESTION_NAME
        question.write_bytes(b"?")
        target = join_remote("/roundtrip", QUESTION_NAME)
        with pytest.raises(ApiError) as refused:
            await drive.upload(question, target, overwrite=False, journal=MemoryJournal(), key="q")
        assert refused.value.code == ILLEGAL_OBJECT_NAME
        assert await drive.stat(target) is None

    route = UPLOAD_ROUTE.get(policy, f"/storage/{policy}/*")
    assert emu.requests.count("PUT", route) + emu.requests.count("POST", route) > 0

    expected = tree_digest(src)
    assert tree_digest(dest) == expected
    assert sum(1 for rel in expected if rel.endswith("bottom #40.txt")) == 1
