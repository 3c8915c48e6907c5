"""Envelope, codes and statuses (contract 1.1-1.5) and identifiers (3)."""

from __future__ import annotations

import pytest

from emulator import hashids
from emulator.testing import EmulatorHandle
from tests.emulator.apiclient import Api

pytestmark = pytest.mark.anyio


async def test_s1_1_data_omitted_when_empty(api: Api) -> None:
    """A success without data is exactly ``{"code": 0, "msg": ""}``."""
    sess = await api.ok("PUT", "/file/upload", json={"uri": "cloudreve://my/a", "size": 4})
    status, body = await api.call("POST", f"/file/upload/{sess['session_id']}/0", data=b"0123")
    assert (status, body) == (200, {"code": 0, "msg": ""})


async def test_s1_3_correlation_id_header_is_echoed(api: Api) -> None:
    """A UUID in X-Cr-Correlation-Id comes back in the error body; other values are ignored."""
    cid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    _, body = await api.call(
        "GET", "/file", params={"uri": "cloudreve://my/x"}, headers={"X-Cr-Correlation-Id": cid}
    )
    assert body["correlation_id"] == cid
    _, body = await api.call(
        "GET", "/file", params={"uri": "cloudreve://my/x"}, headers={"X-Cr-Correlation-Id": "no"}
    )
    assert body["correlation_id"] != "no"


async def test_s1_2_wrong_method_is_gin_404(api: Api) -> None:
    """A known path with the wrong method is also ``404 page not found``."""
    status, body = await api.call("PATCH", "/site/ping")
    assert (status, body) == (404, "404 page not found")


async def test_s1_4_malformed_json_is_40001(api: Api) -> None:
    """A body that is not JSON is 40001 without correlation id."""
    _, body = await api.call(
        "POST", "/file/create", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert body["code"] == 40001
    assert "correlation_id" not in body


async def test_s6_2_valid_policy_id_is_ignored(api: Api, emu: EmulatorHandle) -> None:
    """A well-formed policy_id of another policy is ignored; the folder's policy decides."""
    other = emu.policy("remote").hash_id
    sess = await api.ok(
        "PUT", "/file/upload", json={"uri": "cloudreve://my/a", "size": 1, "policy_id": other}
    )
    assert sess["storage_policy"]["type"] == "local"


async def test_s1_4_too_many_uris_is_40074(api: Api) -> None:
    """More than 3000 URIs in one batch is 40074."""
    uris = [f"cloudreve://my/{i}" for i in range(3001)]
    _, body = await api.call("DELETE", "/file", json={"uris": uris})
    assert body["code"] == 40074


def test_s3_hash_ids_are_typed_and_opaque() -> None:
    """An id decodes only as its own type; ids of consecutive numbers look unrelated."""
    first, second = hashids.encode(1, hashids.FILE), hashids.encode(2, hashids.FILE)
    assert first != second
    assert not first.isdigit()
    assert hashids.decode(first, hashids.FILE) == 1
    with pytest.raises(hashids.HashIdError):
        hashids.decode(first, hashids.ENTITY)
