"""End-to-end smoke of the core: sign in, upload to a local policy, list, download."""

from __future__ import annotations

import pytest

from emulator.testing import EmulatorHandle
from tests.emulator.apiclient import Api

pytestmark = pytest.mark.anyio


async def test_s6_4_local_upload_then_download_round_trips(api: Api, emu: EmulatorHandle) -> None:
    """A 10-byte file in 4-byte chunks lists with its size and downloads byte-identical."""
    await api.upload("cloudreve://my/docs/a%20b%231.txt", b"0123456789")

    listing = await api.ok("GET", "/file", params={"uri": "cloudreve://my/docs"})
    [item] = listing["files"]
    assert item["name"] == "a b#1.txt"
    assert item["size"] == 10
    assert item["path"] == "cloudreve://my/docs/a%20b%231.txt"
    assert item["metadata"] is None
    assert await api.download(item["path"]) == b"0123456789"
    indexes = emu.requests.param_values("POST", "/api/v4/file/upload/{id}/{index}", "index")
    assert indexes == ["0", "1", "2"]


async def test_s1_2_unknown_route_is_gin_404_text(api: Api) -> None:
    """An unknown route answers HTTP 404 with the text ``404 page not found``."""
    status, body = await api.call("GET", "/no/such/route")
    assert (status, body) == (404, "404 page not found")
