"""Storage drivers inside the real emulator: PUT /file/upload, storage flow, callback, download."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from emulator.testing import EmulatorHandle, running_emulator
from tests.emulator.apiclient import Api
from tests.emulator.test_policies_common import OCTET, complete_xml, payload, xml_code

pytestmark = pytest.mark.anyio
USER = "user@example.com"


@asynccontextmanager
async def emulator_for(tmp_path: Path, kind: str) -> AsyncIterator[tuple[EmulatorHandle, Api]]:
    """An emulator whose ``/<kind>`` folder of the user uses the ``kind`` policy."""
    async with running_emulator(tmp_path) as emu, aiohttp.ClientSession() as http:
        api = Api(http, emu.url)
        await api.sign_in(USER, emu.users[USER])
        emu.use_policy(USER, f"/{kind}", kind)
        yield emu, api


async def create(api: Api, uri: str, size: int) -> dict[str, Any]:
    data: dict[str, Any] = await api.ok("PUT", "/file/upload", json={"uri": uri, "size": size})
    return data


async def file_size(api: Api, uri: str) -> tuple[int, dict[str, str]]:
    info = await api.ok("GET", "/file/info", params={"uri": uri})
    return info["size"], info.get("metadata") or {}


async def test_s6_3_s3_upload_through_the_emulator(tmp_path: Path) -> None:
    """S3: presigned part, XML complete, GET callback: the file is whole and downloads."""
    data = payload(100_000)
    uri = "cloudreve://my/s3/a.bin"
    async with emulator_for(tmp_path, "s3") as (_, api):
        sess = await create(api, uri, len(data))
        assert sess["chunk_size"] == 25 << 20
        assert sess["upload_id"]
        [url] = sess["upload_urls"]
        async with api.session.put(url, data=io.BytesIO(data), headers=OCTET) as resp:
            assert resp.status == 200
            etag = resp.headers["ETag"]
        body = complete_xml([etag])
        async with api.session.post(sess["completeURL"], data=body, headers=OCTET) as resp:
            assert resp.status == 200, await resp.text()
        path = f"/callback/s3/{sess['session_id']}/{sess['callback_secret']}"
        await api.ok("GET", path, auth=False)
        assert await file_size(api, uri) == (len(data), {})
        assert await api.download(uri) == data


async def test_s11_1_s3_part_url_expires_with_the_emulator_clock(tmp_path: Path) -> None:
    """Advancing the emulator clock past the session expiry expires the presigned part URLs."""
    async with emulator_for(tmp_path, "s3") as (emu, api):
        sess = await create(api, "cloudreve://my/s3/late.bin", 10)
        emu.clock.advance(86400 + 60)
        async with api.session.put(sess["upload_urls"][0], data=b"x" * 10) as resp:
            assert (resp.status, xml_code(await resp.text())) == (403, "AccessDenied")


async def test_s6_3_onedrive_upload_through_the_emulator(tmp_path: Path) -> None:
    """OneDrive: one Content-Range PUT, then POST callback completes the file."""
    data = payload(5000)
    uri = "cloudreve://my/onedrive/b.bin"
    async with emulator_for(tmp_path, "onedrive") as (_, api):
        sess = await create(api, uri, len(data))
        assert sess["chunk_size"] == 50 << 20
        headers = {"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"}
        async with api.session.put(
            sess["upload_urls"][0], data=io.BytesIO(data), headers=headers
        ) as resp:
            assert resp.status == 201
        path = f"/callback/onedrive/{sess['session_id']}/{sess['callback_secret']}"
        await api.ok("POST", path, auth=False)
        assert await file_size(api, uri) == (len(data), {})
        assert await api.download(uri) == data


async def test_s6_3_oss_storage_callback_completes_in_the_emulator(tmp_path: Path) -> None:
    """OSS: after the empty-body complete the file is whole without any client callback."""
    data = payload(3000)
    uri = "cloudreve://my/oss/c.bin"
    async with emulator_for(tmp_path, "oss") as (_, api):
        sess = await create(api, uri, len(data))
        async with api.session.put(
            sess["upload_urls"][0], data=io.BytesIO(data), headers=OCTET
        ) as resp:
            assert resp.status == 200
        headers = {"x-oss-forbid-overwrite": "true", "x-oss-complete-all": "yes", **OCTET}
        async with api.session.post(sess["completeURL"], data=b"", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        assert await file_size(api, uri) == (len(data), {})
        assert await api.download(uri) == data


async def test_s6_3_upyun_form_upload_through_the_emulator(tmp_path: Path) -> None:
    """Upyun: one form POST (file last) in the real app (client_max_size 0) completes the file."""
    data = payload(70_000)
    uri = "cloudreve://my/upyun/d.bin"
    async with emulator_for(tmp_path, "upyun") as (_, api):
        sess = await create(api, uri, len(data))
        form = aiohttp.FormData()
        form.add_field("policy", sess["upload_policy"])
        form.add_field("authorization", sess["credential"])
        form.add_field("file", io.BytesIO(data), filename="d.bin")
        async with api.session.post(sess["upload_urls"][0], data=form) as resp:
            assert resp.status == 200, await resp.text()
        assert await file_size(api, uri) == (len(data), {})
        assert await api.download(uri) == data


async def _cos_like(api: Api, sess: dict[str, Any], data: bytes, kind: str) -> None:
    """Send the one part and complete as the web client does for ks3, cos and obs."""
    async with api.session.put(
        sess["upload_urls"][0], data=io.BytesIO(data), headers=OCTET
    ) as resp:
        assert resp.status == 200, await resp.text()
        etag = resp.headers["ETag"]
    headers = {**OCTET, "x-cos-forbid-overwrite": "true"} if kind == "cos" else OCTET
    async with api.session.post(
        sess["completeURL"], data=complete_xml([etag]), headers=headers
    ) as resp:
        assert resp.status == 200, await resp.text()
    if kind != "obs":
        path = f"/callback/{kind}/{sess['session_id']}/{sess['callback_secret']}"
        await api.ok("GET", path, auth=False)


async def _qiniu(api: Api, sess: dict[str, Any], data: bytes) -> None:
    """Send the one part and the JSON complete with the UpToken."""
    auth = {"Authorization": f"UpToken {sess['credential']}"}
    url = sess["upload_urls"][0]
    async with api.session.put(f"{url}/1", data=io.BytesIO(data), headers=auth) as resp:
        etag = (await resp.json())["etag"]
    body = {"parts": [{"etag": etag, "partNumber": 1}], "mimeType": sess.get("mime_type", "")}
    async with api.session.post(url, json=body, headers=auth) as resp:
        assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("kind", ["ks3", "cos", "obs", "qiniu"])
async def test_s6_3_remaining_policies_through_the_emulator(tmp_path: Path, kind: str) -> None:
    """KS3, COS, OBS and Qiniu flows finish the file in the real emulator; bytes download intact."""
    data = payload(40_000)
    uri = f"cloudreve://my/{kind}/e.bin"
    async with emulator_for(tmp_path, kind) as (_, api):
        sess = await create(api, uri, len(data))
        if kind == "qiniu":
            await _qiniu(api, sess, data)
        else:
            await _cos_like(api, sess, data, kind)
        assert await file_size(api, uri) == (len(data), {})
        assert await api.download(uri) == data
