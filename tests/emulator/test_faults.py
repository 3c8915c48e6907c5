"""Fault injection (task item 7): in-process API and the admin HTTP endpoint."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import aiohttp
import pytest
from structlog.testing import capture_logs

from emulator.testing import EmulatorHandle
from tests.emulator.apiclient import Api
from tests.emulator.conftest import ADMIN, USER

pytestmark = pytest.mark.anyio
LIST = "/api/v4/file"


async def test_fault_nth_request_gets_status_once(api: Api, emu: EmulatorHandle) -> None:
    """The 2nd matching request answers the injected status; others pass; it is logged."""
    emu.faults.fail("GET", LIST, nth=2, status=502)
    with capture_logs() as logs:
        first, _ = await api.call("GET", "/file", params={"uri": "cloudreve://my"})
        second, body = await api.call("GET", "/file", params={"uri": "cloudreve://my"})
        third, _ = await api.call("GET", "/file", params={"uri": "cloudreve://my"})
    assert (first, second, third) == (200, 502, 200)
    assert "502" in body
    assert any(e["event"] == "fault_injected" for e in logs)


async def test_fault_body_code_and_html(api: Api, emu: EmulatorHandle) -> None:
    """A rule can answer HTTP 200 with a code, or an HTML error page."""
    emu.faults.fail("PUT", "/api/v4/file/upload", code=40051, msg="Insufficient capacity")
    status, body = await api.call(
        "PUT", "/file/upload", json={"uri": "cloudreve://my/a", "size": 1}
    )
    assert (status, body["code"]) == (200, 40051)
    emu.faults.fail("GET", "/api/v4/user/*", html="<html>bad gateway</html>", status=502)
    status, text = await api.call("GET", "/user/capacity")
    assert (status, text) == (502, "<html>bad gateway</html>")


async def test_fault_route_pattern_matches_any_param_names(api: Api, emu: EmulatorHandle) -> None:
    """A route pattern with other parameter names matches; times=2 fires twice in a row."""
    emu.faults.fail("POST", "/api/v4/file/upload/{sid}/{n}", nth=2, times=2, status=500)
    sess = await api.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/a", "size": 12})
    sid = sess["session_id"]
    statuses = []
    for index, chunk in [(0, b"0123"), (1, b"4567"), (1, b"4567"), (1, b"4567"), (2, b"89ab")]:
        status, _ = await api.call("POST", f"/file/upload/{sid}/{index}", data=chunk)
        statuses.append(status)
    assert statuses == [200, 500, 500, 200, 200]
    assert emu.requests.statuses("POST", "/api/v4/file/upload/{id}/{index}") == statuses
    codes = [r.code for r in emu.requests.matching("POST", "/api/v4/file/upload/{id}/{index}")]
    assert codes == [0, None, None, 0, 0]
    assert await api.download("cloudreve://my/a") == b"0123456789ab"


async def test_fault_429_retry_after_seconds_and_date(api: Api, emu: EmulatorHandle) -> None:
    """429 answers carry Retry-After as seconds or as an HTTP date."""
    emu.faults.fail("GET", LIST, retry_after=7)
    emu.faults.fail("GET", LIST, nth=2, retry_after=10, retry_after_date=True)
    async with api.session.get(
        f"{emu.api}/file", params={"uri": "cloudreve://my"}, headers=api.headers()
    ) as r:
        assert (r.status, r.headers["Retry-After"]) == (429, "7")
    async with api.session.get(
        f"{emu.api}/file", params={"uri": "cloudreve://my"}, headers=api.headers()
    ) as r:
        assert r.status == 429
        when = parsedate_to_datetime(r.headers["Retry-After"]).timestamp()
        assert 8 <= when - time.time() <= 11


async def test_fault_delay(api: Api, emu: EmulatorHandle) -> None:
    """A delay rule holds the answer for the given time."""
    emu.faults.fail("GET", "/api/v4/site/ping", delay_s=0.3)
    start = time.monotonic()
    await api.ok("GET", "/site/ping")
    assert time.monotonic() - start >= 0.3


async def test_fault_cut_response_body(api: Api, emu: EmulatorHandle) -> None:
    """Cutting a download after N bytes drops the connection mid-body."""
    await api.upload("cloudreve://my/f", b"0123456789")
    url = (await api.ok("POST", "/file/url", json={"uris": ["cloudreve://my/f"]}))["urls"][0]["url"]
    emu.faults.fail("GET", "/api/v4/file/content/*", cut_response_after=3)
    with pytest.raises(aiohttp.ClientPayloadError):
        async with api.session.get(url) as resp:
            await resp.read()
    async with api.session.get(url) as resp:
        assert await resp.read() == b"0123456789"


async def test_fault_cut_json_response(api: Api, emu: EmulatorHandle) -> None:
    """Cutting a JSON answer also drops the connection mid-body."""
    emu.faults.fail("GET", "/api/v4/site/ping", cut_response_after=5)
    with pytest.raises(aiohttp.ClientPayloadError):
        await api.call("GET", "/site/ping")


async def test_fault_cut_request_body(api: Api, emu: EmulatorHandle) -> None:
    """Cutting a chunk upload after N request bytes drops the connection; a retry succeeds."""
    sess = await api.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/a", "size": 4})
    emu.faults.fail("POST", "/api/v4/file/upload/{id}/{index}", cut_request_after=2)
    with pytest.raises(aiohttp.ClientError):
        await api.call("POST", f"/file/upload/{sess['session_id']}/0", data=b"0123")
    await api.ok("POST", f"/file/upload/{sess['session_id']}/0", data=b"0123")


async def test_fault_bandwidth_cap_slows_downloads(api: Api, emu: EmulatorHandle) -> None:
    """A bandwidth cap makes a download take size / rate seconds."""
    await api.upload("cloudreve://my/f", b"x" * 40)
    emu.faults.cap_bandwidth(100)
    start = time.monotonic()
    assert await api.download("cloudreve://my/f") == b"x" * 40
    assert time.monotonic() - start >= 0.35


async def test_fault_http_api_is_admin_only(
    emu: EmulatorHandle, http: aiohttp.ClientSession
) -> None:
    """The admin endpoint adds, lists and clears rules and runs actions; users get 403."""
    user = Api(http, emu.url)
    await user.sign_in(USER, emu.users[USER])
    _, body = await user.call("POST", "/admin/faults", json={"path": "/x", "status": 500})
    assert body["code"] == 403
    admin = Api(http, emu.url)
    await admin.sign_in(ADMIN, emu.users[ADMIN])
    rule = await admin.ok(
        "POST", "/admin/faults", json={"method": "GET", "path": "/api/v4/site/ping", "status": 503}
    )
    assert rule["id"] >= 1
    assert len(await admin.ok("GET", "/admin/faults")) == 1
    status, _ = await user.call("GET", "/site/ping")
    assert status == 503
    _, body = await admin.call("POST", "/admin/faults", json={"bogus": 1})
    assert body["code"] == 40001
    await admin.ok(
        "POST", "/admin/faults/actions", json={"action": "set_quota", "email": USER, "bytes": 5}
    )
    assert (await user.ok("GET", "/user/capacity"))["total"] == 5
    await admin.ok("POST", "/admin/faults/actions", json={"action": "expire_tokens"})
    _, body = await user.call("GET", "/user/capacity")
    assert body["code"] == 401
    await admin.sign_in(ADMIN, emu.users[ADMIN])
    await admin.ok("DELETE", "/admin/faults")
    assert await admin.ok("GET", "/admin/faults") == []


async def test_fault_expire_session_by_http(
    api: Api, emu: EmulatorHandle, http: aiohttp.ClientSession
) -> None:
    """The expire_session action makes the session's chunks answer 40011."""
    sess = await api.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/a", "size": 4})
    admin = Api(http, emu.url)
    await admin.sign_in(ADMIN, emu.users[ADMIN])
    await admin.ok(
        "POST",
        "/admin/faults/actions",
        json={"action": "expire_session", "session_id": sess["session_id"]},
    )
    _, body = await api.call("POST", f"/file/upload/{sess['session_id']}/0", data=b"0123")
    assert body["code"] == 40011
