"""The store's internal API used by workflow tasks (resolve, import, export, walk, relocate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.errors import ApiError
from emulator.store import parse_uri
from emulator.testing import EmulatorHandle
from tests.emulator.apiclient import Api
from tests.emulator.conftest import USER

pytestmark = pytest.mark.anyio


async def test_store_import_export_walk_and_relocate(
    api: Api, emu: EmulatorHandle, tmp_path: Path
) -> None:
    """Import creates a visible file (40004 on a clash), export copies it back, walk finds it."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"imported bytes")
    user = emu.user(USER)
    item = await emu.store.import_local_file(user.id, "/in/deep/a b.bin", src)
    assert item.size == 14
    assert await api.download("cloudreve://my/in/deep/a%20b.bin") == b"imported bytes"
    with pytest.raises(ApiError) as clash:
        await emu.store.import_local_file(user.id, "/in/deep/a b.bin", src)
    assert clash.value.code == 40004
    dst = tmp_path / "out.bin"
    await emu.store.export_blob(item, dst)
    assert dst.read_bytes() == b"imported bytes"
    walked = [(path, f.is_folder) for path, f in emu.store.walk(emu.store.resolve(user.id, "/in"))]
    assert walked == [("/in/deep", True), ("/in/deep/a b.bin", False)]
    assert emu.store.resolve(user.id, "/in/deep/a b.bin").id == item.id
    assert item.primary_entity is not None
    remote = emu.policy("remote")
    moved = emu.store.set_entity_storage(item.primary_entity, remote.id, "elsewhere/key")
    assert (moved.policy_id, moved.storage_key) == (remote.id, "elsewhere/key")


async def test_store_import_checks_quota(emu: EmulatorHandle, tmp_path: Path) -> None:
    """Import refuses a file over the quota with 40051."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 20)
    emu.faults.set_quota(USER, 10)
    with pytest.raises(ApiError) as err:
        await emu.store.import_local_file(emu.user(USER).id, "/a", src)
    assert err.value.code == 40051


def test_s4_uri_parsing_cleans_and_decodes() -> None:
    """URIs decode percent escapes, trim slashes, clean dot segments and keep the query."""
    uri = parse_uri("cloudreve://my/a%20b/./c/../d%23e/?name=x")
    assert (uri.fs, uri.path, uri.query) == ("my", "/a b/d#e", "name=x")
    share = parse_uri("cloudreve://AbC:pw@share/x")
    assert (share.fs, share.fs_id, share.password, share.path) == ("share", "AbC", "pw", "/x")
    with pytest.raises(ApiError):
        parse_uri("cloudreve://nope/x")
    assert str(parse_uri("cloudreve://MY/100%25.txt")) == "cloudreve://my/100%25.txt"


async def test_store_state_survives_a_restart(tmp_path: Path) -> None:
    """Files, users and the signing secret persist in the data dir; upload sessions do not."""
    import aiohttp

    from emulator.testing import running_emulator
    from tests.emulator.conftest import no_drivers

    async with (
        running_emulator(tmp_path, chunk_size=4, drivers=no_drivers) as emu,
        aiohttp.ClientSession() as http,
    ):
        api = Api(http, emu.url)
        await api.sign_in(USER, emu.users[USER])
        await api.upload("cloudreve://my/keep.txt", b"kept")
        sess = await api.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/u", "size": 4})
    async with (
        running_emulator(tmp_path, chunk_size=4, drivers=no_drivers) as emu,
        aiohttp.ClientSession() as http,
    ):
        again = Api(http, emu.url)
        again.token = api.token
        assert await again.download("cloudreve://my/keep.txt") == b"kept"
        _, body = await again.call("POST", f"/file/upload/{sess['session_id']}/0", data=b"0123")
        assert body["code"] == 40011
        assert len(emu.store.users()) == 2
