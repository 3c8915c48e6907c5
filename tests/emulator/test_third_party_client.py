"""The PyPI ``cloudreve`` SDK (``CloudreveV4``, sync, requests-based) works unchanged."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from cloudreve import CloudreveV4

from emulator.testing import EmulatorHandle
from tests.emulator.conftest import USER

pytestmark = pytest.mark.anyio


def _session_flow(url: str, password: str, workdir: Path) -> dict[str, object]:
    client = CloudreveV4(url)
    client.login(USER, password)
    src = workdir / "hello world.txt"
    src.write_bytes(b"hello from the sdk" * 100)
    client.create_folder("/sdk")
    client.upload(str(src), "/sdk/hello world.txt")
    listing = client.list("/sdk")
    info = client.get_info("/sdk/hello world.txt")
    dst = workdir / "back.txt"
    client.download("cloudreve://my/sdk/hello%20world.txt", str(dst))
    client.rename("cloudreve://my/sdk/hello%20world.txt", "renamed.txt")
    after_rename = [f["name"] for f in client.list("/sdk")["files"]]
    client.delete("cloudreve://my/sdk/renamed.txt")
    after_delete = client.list("/sdk")["files"]
    return {
        "names": [f["name"] for f in listing["files"]],
        "size": info["size"],
        "downloaded": dst.read_bytes() == src.read_bytes(),
        "after_rename": after_rename,
        "after_delete": after_delete,
    }


async def test_s5_third_party_sdk_signs_in_uploads_downloads_renames_deletes(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """CloudreveV4 signs in, lists, uploads (local policy), downloads, renames and deletes."""
    emu.store.update_policy(emu.policy("local").id, chunk_size=512)
    result = await anyio.to_thread.run_sync(_session_flow, emu.url, emu.users[USER], tmp_path)
    assert result == {
        "names": ["hello world.txt"],
        "size": 1800,
        "downloaded": True,
        "after_rename": ["renamed.txt"],
        "after_delete": [],
    }
    indexes = emu.requests.param_values("POST", "/api/v4/file/upload/{id}/{index}", "index")
    assert indexes == ["0", "1", "2", "3"]
