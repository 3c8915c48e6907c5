"""User, site, Pro policy/node, WebDAV and share routes (contract 9.1-9.5)."""

from __future__ import annotations

import aiohttp
import pytest

from emulator.testing import EmulatorHandle
from tests.emulator.apiclient import Api
from tests.emulator.conftest import USER

pytestmark = pytest.mark.anyio


async def test_s9_1_ping_and_config_sections(api: Api) -> None:
    """ping answers the version; config sections have their keys, false booleans absent."""
    assert await api.ok("GET", "/site/ping") == "4.18.0"
    basic = await api.ok("GET", "/site/config/basic")
    assert {"instance_id", "title", "user", "captcha_type"} <= set(basic)
    assert basic["user"]["email"] == USER
    login = await api.ok("GET", "/site/config/login")
    assert "login_captcha" not in login
    assert "thumb_exts" in await api.ok("GET", "/site/config/thumb")
    assert (await api.ok("GET", "/site/config/explorer"))["max_batch_size"] == 3000
    assert "instance_id" in await api.ok("GET", "/site/config/whatever")


async def test_s9_2_capacity_counts_uploads_trash_and_versions(
    api: Api, emu: EmulatorHandle
) -> None:
    """used counts finished files, trash and reservations; total is the group quota."""
    cap = await api.ok("GET", "/user/capacity")
    assert cap == {"total": 1 << 30, "used": 0}
    await api.upload("cloudreve://my/a", b"12345")
    await api.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/b", "size": 100})
    await api.ok("DELETE", "/file", json={"uris": ["cloudreve://my/a"]})
    assert (await api.ok("GET", "/user/capacity"))["used"] == 105


async def test_s9_2_settings_and_version_retention(api: Api) -> None:
    """GET /user/setting shows retention; PATCH turns it on with ext and max."""
    settings = await api.ok("GET", "/user/setting")
    assert settings["version_retention_enabled"] is False
    assert settings["two_fa_enabled"] is False
    await api.ok(
        "PATCH",
        "/user/setting",
        json={
            "version_retention_enabled": True,
            "version_retention_ext": ["txt"],
            "version_retention_max": 2,
        },
    )
    settings = await api.ok("GET", "/user/setting")
    assert settings["version_retention_enabled"] is True
    assert settings["version_retention_ext"] == ["txt"]
    assert settings["version_retention_max"] == 2
    for content in (b"1", b"2", b"3"):
        await api.upload("cloudreve://my/a.txt", content, entity_type="version")
    info = await api.ok(
        "GET", "/file/info", params={"uri": "cloudreve://my/a.txt", "extended": "true"}
    )
    assert len(info["extended_info"]["entities"]) == 2
    for content in (b"1", b"2"):
        await api.upload("cloudreve://my/a.bin", content, entity_type="version")
    info = await api.ok(
        "GET", "/file/info", params={"uri": "cloudreve://my/a.bin", "extended": "true"}
    )
    assert len(info["extended_info"]["entities"]) == 1


async def test_s9_5_policies_nodes_and_folder_policy(api: Api, emu: EmulatorHandle) -> None:
    """Pro listings have their shapes; PATCH /file/policy changes uploads under a folder."""
    policies = await api.ok("GET", "/user/setting/policies")
    types = {p["type"] for p in policies}
    assert {"local", "remote"} <= types
    [node] = await api.ok("GET", "/user/setting/nodes")
    assert node["type"] == "master"
    remote = next(p for p in policies if p["type"] == "remote")
    await api.ok("POST", "/file/create", json={"uri": "cloudreve://my/r", "type": "folder"})
    await api.ok(
        "PATCH", "/file/policy", json={"uri": "cloudreve://my/r", "policy_id": remote["id"]}
    )
    listing = await api.ok("GET", "/file", params={"uri": "cloudreve://my/r"})
    assert listing["storage_policy"]["type"] == "remote"
    await api.ok("POST", "/file/create", json={"uri": "cloudreve://my/r/deeper", "type": "folder"})
    sess = await api.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/r/deeper/x", "size": 1})
    assert sess["storage_policy"]["type"] == "remote"


async def test_s9_4_webdav_accounts(api: Api) -> None:
    """WebDAV accounts get a 32-letter password; list needs page_size 10-100."""
    acct = await api.ok(
        "PUT", "/devices/dav", json={"uri": "cloudreve://my", "name": "laptop", "readonly": True}
    )
    assert len(acct["password"]) == 32
    assert acct["password"].isalpha()
    assert acct["options"] == "AQ=="
    _, body = await api.call("GET", "/devices/dav", params={"page_size": "5"})
    assert body["code"] == 40001
    listing = await api.ok("GET", "/devices/dav", params={"page_size": "10"})
    assert [a["name"] for a in listing["accounts"]] == ["laptop"]
    edited = await api.ok(
        "PATCH",
        f"/devices/dav/{acct['id']}",
        json={"uri": "cloudreve://my", "name": "desk", "proxy": True},
    )
    assert (edited["name"], edited["options"], edited["password"]) == (
        "desk",
        "Ag==",
        acct["password"],
    )
    await api.ok("DELETE", f"/devices/dav/{acct['id']}")
    assert (await api.ok("GET", "/devices/dav", params={"page_size": "10"}))["accounts"] == []


async def test_s9_3_share_link_lifecycle(
    api: Api, emu: EmulatorHandle, http: aiohttp.ClientSession
) -> None:
    """A private share gets a password; its URI lists the folder for anyone with the password."""
    await api.upload("cloudreve://my/pub/a.txt", b"abc")
    link = await api.ok("PUT", "/share", json={"uri": "cloudreve://my/pub", "is_private": True})
    share_id, password = link.rsplit("/", 2)[-2:]
    assert link.startswith(f"{emu.url}/s/")
    info = await api.ok("GET", f"/share/info/{share_id}")
    assert info["password"] == password
    listing = await api.ok("GET", "/share", params={"page_size": "10"})
    assert [s["id"] for s in listing["shares"]] == [share_id]
    anon = Api(http, emu.url)
    files = await anon.ok(
        "GET", "/file", params={"uri": f"cloudreve://{share_id}:{password}@share"}
    )
    assert [f["name"] for f in files["files"]] == ["a.txt"]
    _, body = await anon.call("GET", "/file", params={"uri": f"cloudreve://{share_id}:bad@share"})
    assert body["code"] == 403
    assert await anon.download(f"cloudreve://{share_id}:{password}@share/a.txt") == b"abc"
    public = await api.ok("POST", f"/share/{share_id}", json={"is_private": False})
    assert public == f"{emu.url}/s/{share_id}"
    assert "password" not in await api.ok("GET", f"/share/info/{share_id}")
    await api.ok("DELETE", f"/share/{share_id}")
    _, body = await api.call("GET", f"/share/info/{share_id}")
    assert body["code"] == 404
