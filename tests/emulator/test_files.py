"""File routes against the contract (5.1-5.7, 5.9, 5.10, 5.12, 5.13, 10)."""

from __future__ import annotations

import pytest

from emulator.testing import EmulatorHandle
from tests.emulator.apiclient import Api
from tests.emulator.conftest import USER

pytestmark = pytest.mark.anyio


async def _create(api: Api, uri: str, kind: str = "file", **extra: object) -> dict:
    return await api.ok("POST", "/file/create", json={"uri": uri, "type": kind, **extra})


async def _list_all(api: Api, uri: str, **params: str) -> list[dict]:
    items: list[dict] = []
    token = ""
    while True:
        query = {"uri": uri, **params}
        if token:
            query["next_page_token"] = token
        data = await api.ok("GET", "/file", params=query)
        items.extend(data["files"])
        token = data["pagination"].get("next_token", "")
        if not token:
            return items


async def test_s5_2_cursor_pagination_folders_first_and_no_token_on_last_page(api: Api) -> None:
    """Pages follow next_token, folders come first, the last page has no next_token."""
    for i in range(5):
        await _create(api, f"cloudreve://my/d/f{i}")
    for i in range(4):
        await _create(api, f"cloudreve://my/d/sub{i}", "folder")
    first = await api.ok("GET", "/file", params={"uri": "cloudreve://my/d", "page_size": "3"})
    assert [f["type"] for f in first["files"]] == [1, 1, 1]
    assert first["pagination"]["next_token"]
    assert first["props"]["max_page_size"] == 2000
    assert first["storage_policy"]["type"] == "local"
    items = await _list_all(api, "cloudreve://my/d", page_size="3")
    names = ["sub0", "sub1", "sub2", "sub3", "f0", "f1", "f2", "f3", "f4"]
    assert [f["name"] for f in items] == names
    assert len({f["id"] for f in items}) == 9


async def test_s5_2_cursor_is_keyset_so_deleting_listed_items_skips_nothing(api: Api) -> None:
    """The token names the last item's order value and id: deleting page 1 loses no item."""
    for i in range(6):
        await _create(api, f"cloudreve://my/k/f{i}")
    params = {"uri": "cloudreve://my/k", "page_size": "2", "order_by": "name"}
    first = await api.ok("GET", "/file", params=params)
    gone = [f"cloudreve://my/k/{f['name']}" for f in first["files"]]
    await api.ok("DELETE", "/file", json={"uris": gone, "skip_soft_delete": True})
    token = first["pagination"]["next_token"]
    rest = await _list_all(
        api, "cloudreve://my/k", page_size="2", order_by="name", next_page_token=token
    )
    assert [f["name"] for f in rest] == ["f2", "f3", "f4", "f5"]


async def test_s5_2_quirk_page_filled_by_folders_loses_files_ordered_before_them(
    api: Api,
) -> None:
    """Real-server quirk (CE inventory/file_utils.go cursorPagination): when the remaining
    folders exactly fill a page, the next page lists only files ordered after the last folder."""
    for name in ("a.txt", "z.txt"):
        await _create(api, f"cloudreve://my/q/{name}")
    for i in range(3):
        await _create(api, f"cloudreve://my/q/m{i}", "folder")
    items = await _list_all(api, "cloudreve://my/q", page_size="3", order_by="name")
    assert [f["name"] for f in items] == ["m0", "m1", "m2", "z.txt"]
    whole = await _list_all(api, "cloudreve://my/q", page_size="4", order_by="name")
    assert [f["name"] for f in whole] == ["m0", "m1", "m2", "a.txt", "z.txt"]


async def test_s5_2_bad_next_page_token_is_code_minus_1(api: Api) -> None:
    """An undecodable token fails as the real server's untyped error: code -1."""
    params = {"uri": "cloudreve://my", "next_page_token": "not a token"}
    _, body = await api.call("GET", "/file", params=params)
    assert body["code"] == -1


async def test_s5_2_page_size_capped_at_2000_and_default_100(api: Api) -> None:
    """page_size above 2000 is silently capped; 0 means 100."""
    data = await api.ok("GET", "/file", params={"uri": "cloudreve://my", "page_size": "5000"})
    assert data["pagination"]["page_size"] == 2000
    data = await api.ok("GET", "/file", params={"uri": "cloudreve://my"})
    assert data["pagination"]["page_size"] == 100
    assert "next_token" not in data["pagination"]


async def test_s5_2_order_by_name_desc(api: Api) -> None:
    """order_by=name&order_direction=desc sorts each type descending, folders still first."""
    for name in ("b", "a", "c"):
        await _create(api, f"cloudreve://my/{name}")
    await _create(api, "cloudreve://my/z", "folder")
    data = await api.ok(
        "GET",
        "/file",
        params={"uri": "cloudreve://my", "order_by": "name", "order_direction": "desc"},
    )
    assert [f["name"] for f in data["files"]] == ["z", "c", "b", "a"]
    _, body = await api.call("GET", "/file", params={"uri": "cloudreve://my", "order_by": "x"})
    assert body["code"] == 40001


async def test_s5_2_listing_a_file_or_missing_path_is_40016(api: Api) -> None:
    """Listing a file URI or a missing folder answers 40016."""
    await _create(api, "cloudreve://my/f")
    for uri in ("cloudreve://my/f", "cloudreve://my/nope"):
        _, body = await api.call("GET", "/file", params={"uri": uri})
        assert body["code"] == 40016
        assert body["correlation_id"]


async def test_s4_bad_uri_is_40001(api: Api) -> None:
    """A URI that is not cloudreve:// is 40001."""
    _, body = await api.call("GET", "/file", params={"uri": "http://x/y"})
    assert body["code"] == 40001


async def test_s5_3_info_root_is_403_and_summary_counts(api: Api) -> None:
    """Info on the root is 403; folder_summary counts files, folders and bytes recursively."""
    _, body = await api.call("GET", "/file/info", params={"uri": "cloudreve://my"})
    assert body["code"] == 403
    await api.upload("cloudreve://my/d/a", b"12345")
    await api.upload("cloudreve://my/d/e/b", b"123")
    info = await api.ok(
        "GET", "/file/info", params={"uri": "cloudreve://my/d", "folder_summary": "true"}
    )
    summary = info["folder_summary"]
    assert (summary["size"], summary["files"], summary["folders"]) == (8, 2, 1)
    assert summary["completed"] is True
    by_id = await api.ok("GET", "/file/info", params={"id": info["id"]})
    assert by_id["path"] == "cloudreve://my/d"


async def test_s5_4_create_auto_creates_ancestors_and_conflicts(api: Api) -> None:
    """Create makes ancestors; same type returns the existing item or 40004 with err_on_conflict."""
    made = await _create(api, "cloudreve://my/x/y/z.txt")
    assert made["path"] == "cloudreve://my/x/y/z.txt"
    again = await _create(api, "cloudreve://my/x/y/z.txt")
    assert again["id"] == made["id"]
    _, body = await api.call(
        "POST",
        "/file/create",
        json={"uri": "cloudreve://my/x/y/z.txt", "type": "file", "err_on_conflict": True},
    )
    assert body["code"] == 40004
    _, body = await api.call(
        "POST", "/file/create", json={"uri": "cloudreve://my/x/y/z.txt", "type": "folder"}
    )
    assert body["code"] == 40004


@pytest.mark.parametrize("name", ["a:b", "q?", "back\\slash", "x" * 256, "文" * 86])
async def test_s10_illegal_names_are_40052(api: Api, name: str) -> None:
    """Forbidden characters and names over 255 UTF-8 bytes are 40052."""
    from urllib.parse import quote

    uri = "cloudreve://my/" + quote(name, safe="")
    _, body = await api.call("POST", "/file/create", json={"uri": uri, "type": "file"})
    assert body["code"] == 40052


async def test_s10_dot_names_are_40052_on_rename(api: Api) -> None:
    """Renaming to ``.`` or ``..`` is 40052; 255 bytes of UTF-8 are accepted."""
    await _create(api, "cloudreve://my/a")
    for bad in (".", ".."):
        _, body = await api.call(
            "POST", "/file/rename", json={"uri": "cloudreve://my/a", "new_name": bad}
        )
        assert body["code"] == 40052
    await api.ok("POST", "/file/rename", json={"uri": "cloudreve://my/a", "new_name": "文" * 85})


async def test_s5_5_rename_and_clash(api: Api) -> None:
    """Rename keeps the id; a taken name is 40004."""
    a = await _create(api, "cloudreve://my/a")
    await _create(api, "cloudreve://my/b")
    renamed = await api.ok(
        "POST", "/file/rename", json={"uri": "cloudreve://my/a", "new_name": "c"}
    )
    assert (renamed["id"], renamed["name"]) == (a["id"], "c")
    _, body = await api.call(
        "POST", "/file/rename", json={"uri": "cloudreve://my/c", "new_name": "b"}
    )
    assert body["code"] == 40004


async def test_s5_6_move_copy_and_destination_rules(api: Api, emu: EmulatorHandle) -> None:
    """Move keeps names; copy duplicates and checks quota; a missing dst is 40016."""
    await api.upload("cloudreve://my/a", b"1234")
    await _create(api, "cloudreve://my/dst", "folder")
    await api.ok(
        "POST", "/file/move", json={"uris": ["cloudreve://my/a"], "dst": "cloudreve://my/dst"}
    )
    assert emu.file(USER, "/dst/a") is not None
    assert emu.file(USER, "/a") is None
    await api.ok(
        "POST",
        "/file/move",
        json={"uris": ["cloudreve://my/dst/a"], "dst": "cloudreve://my", "copy": True},
    )
    assert await api.download("cloudreve://my/a") == b"1234"
    _, body = await api.call(
        "POST", "/file/move", json={"uris": ["cloudreve://my/a"], "dst": "cloudreve://my/none"}
    )
    assert (body["code"], body["msg"]) == (40016, "Invalid destination")
    _, body = await api.call(
        "POST", "/file/move", json={"uris": ["cloudreve://my/a"], "dst": "cloudreve://my/dst"}
    )
    assert body["code"] == 40004
    emu.faults.set_quota(USER, 9)
    await _create(api, "cloudreve://my/z", "folder")
    _, body = await api.call(
        "POST",
        "/file/move",
        json={"uris": ["cloudreve://my/a"], "dst": "cloudreve://my/z", "copy": True},
    )
    assert body["code"] == 40081
    assert body["aggregated_error"]["cloudreve://my/a"]["code"] == 40051


async def test_s1_4_batch_with_one_missing_item_is_40081(api: Api) -> None:
    """A batch delete with one missing URI fails with 40081 and the per-URI inner error."""
    await _create(api, "cloudreve://my/a")
    _, body = await api.call(
        "DELETE", "/file", json={"uris": ["cloudreve://my/a", "cloudreve://my/missing"]}
    )
    assert body["code"] == 40081
    assert body["msg"] == "Path not exist"
    assert body["aggregated_error"]["cloudreve://my/missing"]["code"] == 40016


async def test_s5_7_soft_delete_trash_restore_and_empty(api: Api, emu: EmulatorHandle) -> None:
    """Soft delete moves into trash with sys:restore_uri; restore puts it back; empty purges."""
    await api.upload("cloudreve://my/d/a.txt", b"12345")
    await api.ok("DELETE", "/file", json={"uris": ["cloudreve://my/d/a.txt"]})
    trash = await api.ok("GET", "/file", params={"uri": "cloudreve://trash"})
    [item] = trash["files"]
    assert item["name"] == "a.txt"
    assert item["metadata"]["sys:restore_uri"] == "cloudreve://my/d/a.txt"
    assert item["path"].startswith("cloudreve://trash/")
    assert (await api.ok("GET", "/user/capacity"))["used"] == 5
    _, body = await api.call("DELETE", "/file", json={"uris": [item["path"]]})
    assert body["code"] == 40081
    assert body["aggregated_error"][item["path"]]["code"] == 403
    await api.ok("POST", "/file/restore", json={"uris": [item["path"]]})
    assert await api.download("cloudreve://my/d/a.txt") == b"12345"
    await api.ok("DELETE", "/file", json={"uris": ["cloudreve://my/d/a.txt"]})
    await api.ok("DELETE", "/file/trash")
    assert (await api.ok("GET", "/user/capacity"))["used"] == 0


async def test_s5_7_skip_soft_delete_and_unlink_permission(api: Api) -> None:
    """skip_soft_delete removes for good; unlink without the group flag fails with 403."""
    await api.upload("cloudreve://my/a", b"1")
    _, body = await api.call("DELETE", "/file", json={"uris": ["cloudreve://my/a"], "unlink": True})
    assert body["aggregated_error"]["cloudreve://my/a"]["code"] == 403
    await api.ok("DELETE", "/file", json={"uris": ["cloudreve://my/a"], "skip_soft_delete": True})
    assert (await api.ok("GET", "/file", params={"uri": "cloudreve://trash"}))["files"] == []


async def test_s5_13_locked_path_blocks_delete_and_lock_can_be_forced_off(api: Api) -> None:
    """An upload lock makes delete answer 40073 directly; DELETE /file/lock releases it."""
    await api.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/d/a", "size": 4})
    _, body = await api.call("DELETE", "/file", json={"uris": ["cloudreve://my/d"]})
    assert body["code"] == 40073
    token = body["data"][0]["token"]
    await api.ok("DELETE", "/file/lock", json={"tokens": [token]})
    await api.ok("DELETE", "/file", json={"uris": ["cloudreve://my/d"]})


async def test_s5_9_put_content_creates_then_versions(api: Api) -> None:
    """PUT /file/content creates a file, then replaces its content as a new version."""
    made = await api.ok(
        "PUT", "/file/content", params={"uri": "cloudreve://my/n/t.txt"}, data=b"hello"
    )
    assert made["size"] == 5
    again = await api.ok(
        "PUT",
        "/file/content",
        params={"uri": "cloudreve://my/n/t.txt", "previous": made["primary_entity"]},
        data=b"hello world",
    )
    assert (again["id"], again["size"]) == (made["id"], 11)
    assert await api.download("cloudreve://my/n/t.txt") == b"hello world"
    _, body = await api.call(
        "PUT",
        "/file/content",
        params={"uri": "cloudreve://my/n/t.txt", "previous": made["primary_entity"]},
        data=b"x",
    )
    assert body["code"] == 40076


async def test_s5_9_put_content_over_50_mib_is_40049(api: Api) -> None:
    """A declared body over 50 MiB is 40049 before anything is read."""

    async def body_stream():  # type: ignore[no-untyped-def]
        yield b"x"

    _, body = await api.call(
        "PUT",
        "/file/content",
        params={"uri": "cloudreve://my/big"},
        data=body_stream(),  # type: ignore[arg-type]
        headers={"X-Expected-Entity-Length": str(50 * 1024 * 1024 + 1)},
    )
    assert body["code"] == 40049


async def test_s5_12_metadata_namespaces_and_dav_keeps_updated_at(api: Api) -> None:
    """dav:* is free form and leaves updated_at; unknown namespaces are 40001."""
    made = await _create(api, "cloudreve://my/a")
    await api.ok(
        "PATCH",
        "/file/metadata",
        json={"uris": ["cloudreve://my/a"], "patches": [{"key": "dav:sha256", "value": "abc"}]},
    )
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/a"})
    assert info["metadata"] == {"dav:sha256": "abc"}
    assert info["updated_at"] == made["updated_at"]
    _, body = await api.call(
        "PATCH",
        "/file/metadata",
        json={"uris": ["cloudreve://my/a"], "patches": [{"key": "mine:x", "value": "1"}]},
    )
    assert body["code"] == 40001
    await api.ok(
        "PATCH",
        "/file/metadata",
        json={"uris": ["cloudreve://my/a"], "patches": [{"key": "dav:sha256", "remove": True}]},
    )
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/a"})
    assert info["metadata"] is None


async def test_s5_10_set_current_and_delete_versions(api: Api) -> None:
    """A stored version can become current; the current one cannot be deleted (403)."""
    await api.ok("PATCH", "/user/setting", json={"version_retention_enabled": True})
    await api.upload("cloudreve://my/a", b"v1")
    await api.upload("cloudreve://my/a", b"v2!", entity_type="version")
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/a", "extended": "true"})
    old, new = info["extended_info"]["entities"]
    assert info["primary_entity"] == new["id"]
    await api.ok(
        "POST", "/file/version/current", json={"uri": "cloudreve://my/a", "version": old["id"]}
    )
    assert await api.download("cloudreve://my/a") == b"v1"
    _, body = await api.call(
        "DELETE", "/file/version", json={"uri": "cloudreve://my/a", "version": old["id"]}
    )
    assert body["code"] == 403
    await api.ok("DELETE", "/file/version", json={"uri": "cloudreve://my/a", "version": new["id"]})
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/a", "extended": "true"})
    assert len(info["extended_info"]["entities"]) == 1


async def test_s5_2_search_by_name_is_recursive_and_mixed(api: Api) -> None:
    """A listing URI with ``?name=`` searches recursively with mixed types."""
    await _create(api, "cloudreve://my/a/report.pdf")
    await _create(api, "cloudreve://my/a/b/report-2.pdf")
    await _create(api, "cloudreve://my/a/other.txt")
    data = await api.ok("GET", "/file", params={"uri": "cloudreve://my/a?name=report"})
    assert sorted(f["name"] for f in data["files"]) == ["report-2.pdf", "report.pdf"]
    assert data["mixed_type"] is True


async def test_s4_other_users_drive_is_403(api: Api, emu: EmulatorHandle) -> None:
    """A ``my`` URI naming another user's id is 403."""
    admin_id = emu.user("admin@example.com").hash_id
    _, body = await api.call("GET", "/file", params={"uri": f"cloudreve://{admin_id}@my"})
    assert body["code"] == 403


async def test_s5_9_chunked_body_without_length_stores_empty_version(api: Api) -> None:
    """With neither Content-Length nor X-Expected-Entity-Length the server stores 0 bytes."""

    async def body_stream():  # type: ignore[no-untyped-def]
        yield b"ignored bytes"

    made = await api.ok(
        "PUT",
        "/file/content",
        params={"uri": "cloudreve://my/e.txt"},
        data=body_stream(),  # type: ignore[arg-type]
    )
    assert made["size"] == 0
    assert await api.download("cloudreve://my/e.txt") == b""


async def test_s5_6_move_from_trash_restores_under_original_name(api: Api) -> None:
    """Moving a trash item into a folder brings it back under its original name."""
    await api.upload("cloudreve://my/a.txt", b"abc")
    await api.ok("DELETE", "/file", json={"uris": ["cloudreve://my/a.txt"]})
    [item] = (await api.ok("GET", "/file", params={"uri": "cloudreve://trash"}))["files"]
    await api.ok("POST", "/file/create", json={"uri": "cloudreve://my/back", "type": "folder"})
    await api.ok("POST", "/file/move", json={"uris": [item["path"]], "dst": "cloudreve://my/back"})
    info = await api.ok("GET", "/file/info", params={"uri": "cloudreve://my/back/a.txt"})
    assert info["metadata"] is None
    _, body = await api.call(
        "POST",
        "/file/move",
        json={"uris": ["cloudreve://my/back/a.txt"], "dst": "cloudreve://my", "copy": True},
    )
    assert body["code"] == 0
    assert (await api.ok("GET", "/file", params={"uri": "cloudreve://trash"}))["files"] == []


async def test_s4_shared_with_me_lists_empty_and_needs_login(api: Api) -> None:
    """``cloudreve://shared_with_me`` lists nothing for a user with no incoming shares."""
    data = await api.ok("GET", "/file", params={"uri": "cloudreve://shared_with_me"})
    assert data["files"] == []
    assert data["props"]["capability"] == "gAKA"
    api.token = ""
    _, body = await api.call("GET", "/file", params={"uri": "cloudreve://shared_with_me"})
    assert body["code"] == 401


async def test_s5_2_thousands_of_entries_page_without_loss(api: Api, emu: EmulatorHandle) -> None:
    """2501 files in pages of 1000 come back as 3 pages with 2501 unique ids."""
    user = emu.user(USER)
    folder = emu.store.mkdirs(user.id, "/many")
    with emu.store.tx():
        for i in range(2501):
            emu.store.insert_file(user.id, folder.id, f"f{i:05}.bin", 0, 1)
    pages = 0
    ids: set[str] = set()
    token = ""
    while True:
        params = {"uri": "cloudreve://my/many", "page_size": "1000", "order_by": "name"}
        if token:
            params["next_page_token"] = token
        data = await api.ok("GET", "/file", params=params)
        pages += 1
        ids.update(f["id"] for f in data["files"])
        token = data["pagination"].get("next_token", "")
        if not token:
            break
    assert (pages, len(ids)) == (3, 2501)


async def test_s5_9_put_content_on_uploading_file_is_40073(api: Api) -> None:
    """PUT /file/content on a path locked by an upload session is 40073."""
    await api.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/u.txt", "size": 4})
    _, body = await api.call(
        "PUT", "/file/content", params={"uri": "cloudreve://my/u.txt"}, data=b"x"
    )
    assert body["code"] == 40073


async def test_s5_9_put_content_over_quota_leaves_no_file(api: Api, emu: EmulatorHandle) -> None:
    """A new file refused for quota (40051) is not left behind empty."""
    emu.faults.set_quota(USER, 3)
    _, body = await api.call(
        "PUT", "/file/content", params={"uri": "cloudreve://my/q.txt"}, data=b"four"
    )
    assert body["code"] == 40051
    assert emu.file(USER, "/q.txt") is None
