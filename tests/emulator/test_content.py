"""Download URLs and the signed content endpoint (contract 5.8, 7)."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
import pytest

from emulator.testing import EmulatorHandle
from tests.emulator.apiclient import Api

pytestmark = pytest.mark.anyio
DATA = b"0123456789abcdef"


async def _url(api: Api, uri: str = "cloudreve://my/f.txt", **extra: object) -> str:
    data = await api.ok("POST", "/file/url", json={"uris": [uri], **extra})
    return data["urls"][0]["url"]  # type: ignore[no-any-return]


@pytest.fixture
async def stored(api: Api) -> Api:
    """The signed-in client with ``/f.txt`` holding 16 bytes."""
    await api.upload("cloudreve://my/f.txt", DATA)
    return api


async def test_s5_8_url_shape_and_etag(stored: Api, http: aiohttp.ClientSession) -> None:
    """The URL is /api/v4/file/content/{entity}/0/{name}?sign=..., served with ETag "<entity>"."""
    info = await stored.ok("GET", "/file/info", params={"uri": "cloudreve://my/f.txt"})
    data = await stored.ok("POST", "/file/url", json={"uris": ["cloudreve://my/f.txt"]})
    url = data["urls"][0]["url"]
    parts = urlsplit(url)
    assert parts.path == f"/api/v4/file/content/{info['primary_entity']}/0/f.txt"
    assert "%3A" in parts.query
    assert data["expires"]
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["ETag"] == f'"{info["primary_entity"]}"'
        assert resp.headers["Content-Type"] == "text/plain"
        assert await resp.read() == DATA


async def test_s5_8_range_and_multi_range(stored: Api, http: aiohttp.ClientSession) -> None:
    """Range answers 206 with Content-Range; several ranges give multipart/byteranges."""
    url = await _url(stored)
    async with http.get(url, headers={"Range": "bytes=4-7"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == "bytes 4-7/16"
        assert await resp.read() == b"4567"
    async with http.get(url, headers={"Range": "bytes=-3"}) as resp:
        assert await resp.read() == b"def"
    async with http.get(url, headers={"Range": "bytes=0-1,10-11"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Type"].startswith("multipart/byteranges")
        body = await resp.read()
        assert b"Content-Range: bytes 0-1/16\r\n\r\n01" in body
        assert b"Content-Range: bytes 10-11/16\r\n\r\nab" in body
    async with http.get(url, headers={"Range": "bytes=99-"}) as resp:
        assert resp.status == 416


async def test_s5_8_conditional_headers(stored: Api, http: aiohttp.ClientSession) -> None:
    """If-None-Match gives 304, a wrong If-Match 412, a stale If-Range the full body."""
    url = await _url(stored)
    async with http.get(url) as resp:
        etag = resp.headers["ETag"]
    async with http.get(url, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
    async with http.get(url, headers={"If-Match": '"other"'}) as resp:
        assert resp.status == 412
    async with http.get(url, headers={"Range": "bytes=0-1", "If-Range": '"old"'}) as resp:
        assert resp.status == 200
        assert await resp.read() == DATA
    async with http.get(url, headers={"Range": "bytes=0-1", "If-Range": etag}) as resp:
        assert resp.status == 206


async def test_s5_8_signature_expiry_follows_emulator_clock(
    stored: Api, emu: EmulatorHandle, http: aiohttp.ClientSession
) -> None:
    """After the URL TTL the endpoint answers HTTP 200 JSON 40005; a tampered sign is 40071."""
    url = await _url(stored)
    forged = url.replace("/0/f.txt", "/0/g.txt")
    async with http.get(forged) as resp:
        assert (await resp.json())["code"] == 40071
    no_expiry = url.split("sign=")[0] + "sign=abc"
    async with http.get(no_expiry) as resp:
        assert (await resp.json())["code"] == 40071
    emu.clock.advance(3601)
    async with http.get(url) as resp:
        assert resp.status == 200
        assert (await resp.json())["code"] == 40005
    # Expiry is checked before the signature, as the real server does.
    async with http.get(forged) as resp:
        assert (await resp.json())["code"] == 40005
    async with http.get(url.split("?")[0] + "?sign=abc%3A") as resp:
        assert (await resp.json())["code"] == 403


async def test_s5_8_folder_skip_error_and_redirect(stored: Api, emu: EmulatorHandle) -> None:
    """Folders fail with 40077 inside 40081; skip_error leaves ""; redirect answers 302."""
    await stored.ok("POST", "/file/create", json={"uri": "cloudreve://my/d", "type": "folder"})
    _, body = await stored.call("POST", "/file/url", json={"uris": ["cloudreve://my/d"]})
    assert body["code"] == 40081
    assert body["aggregated_error"]["cloudreve://my/d"]["code"] == 40077
    data = await stored.ok(
        "POST",
        "/file/url",
        json={"uris": ["cloudreve://my/f.txt", "cloudreve://my/d"], "skip_error": True},
    )
    assert data["urls"][0]["url"]
    assert data["urls"][1] == {"url": ""}
    status, _ = await stored.call(
        "POST", "/file/url", json={"uris": ["cloudreve://my/f.txt"], "redirect": True}
    )
    assert status == 302
    assert emu.requests.statuses("POST", "/api/v4/file/url")[-1] == 302


async def test_s5_8_download_flag_sets_attachment(stored: Api, http: aiohttp.ClientSession) -> None:
    """download: true puts download=true in the URL and an attachment disposition."""
    url = await _url(stored, download=True)
    assert "download=true" in url
    async with http.get(url) as resp:
        assert resp.headers["Content-Disposition"].startswith("attachment")


async def test_s5_10_entity_picks_a_version(stored: Api, http: aiohttp.ClientSession) -> None:
    """``entity`` returns the URL of that version's blob."""
    await stored.ok("PATCH", "/user/setting", json={"version_retention_enabled": True})
    await stored.upload("cloudreve://my/f.txt", b"second", entity_type="version")
    info = await stored.ok(
        "GET", "/file/info", params={"uri": "cloudreve://my/f.txt", "extended": "true"}
    )
    old = info["extended_info"]["entities"][0]["id"]
    async with http.get(await _url(stored, entity=old)) as resp:
        assert await resp.read() == DATA
    _, body = await stored.call(
        "POST", "/file/url", json={"uris": ["cloudreve://my/f.txt"], "entity": "9KqX"}
    )
    assert body["code"] == 40081


async def test_s1_2_missing_blob_is_404_text(
    stored: Api, emu: EmulatorHandle, http: aiohttp.ClientSession
) -> None:
    """A local blob missing on disk answers HTTP 404 ``Entity data does not exist.``."""
    url = await _url(stored)
    for blob in emu.store.blob_dir.rglob("*"):
        if blob.is_file():
            blob.unlink()
    async with http.get(url) as resp:
        assert resp.status == 404
        assert await resp.text() == "Entity data does not exist."


async def test_s5_8_archive_url_streams_a_zip_for_admins(
    emu: EmulatorHandle, http: aiohttp.ClientSession, api: Api
) -> None:
    """archive: true gives one signed zip URL (admins only; users get 40007)."""
    import io
    import zipfile

    from tests.emulator.conftest import ADMIN

    _, body = await api.call(
        "POST", "/file/url", json={"uris": ["cloudreve://my"], "archive": True}
    )
    assert body["code"] == 40007
    admin = Api(http, emu.url)
    await admin.sign_in(ADMIN, emu.users[ADMIN])
    await admin.upload("cloudreve://my/a.txt", b"alpha")
    await admin.upload("cloudreve://my/d/b.txt", b"beta")
    data = await admin.ok(
        "POST",
        "/file/url",
        json={"uris": ["cloudreve://my/a.txt", "cloudreve://my/d"], "archive": True},
    )
    [entry] = data["urls"]
    assert "/api/v4/file/archive/" in entry["url"]
    async with http.get(entry["url"]) as resp:
        assert resp.status == 200
        raw = await resp.read()
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        assert sorted(zf.namelist()) == ["a.txt", "d/b.txt"]
        assert zf.read("d/b.txt") == b"beta"
    emu.clock.advance(601)
    async with http.get(entry["url"]) as resp:
        assert (await resp.json())["code"] == 40005


async def test_s5_8_names_with_braces_are_served(api: Api, http: aiohttp.ClientSession) -> None:
    """A name holding ``{`` and ``}`` downloads like any other (no 404 from the route pattern)."""
    await api.upload("cloudreve://my/x%7By%7D.txt", DATA)
    url = await _url(api, "cloudreve://my/x%7By%7D.txt")
    async with http.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == DATA
