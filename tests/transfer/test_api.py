"""Contract 1: the envelope, error codes and typed decoding."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from transfer.api import (
    decode_response,
    parse_entry,
    parse_retry_after,
    parse_time,
    parse_upload_session,
)
from transfer.errors import (
    ApiError,
    AuthError,
    LockConflict,
    NotFound,
    ObjectExists,
    QuotaExceeded,
    RateLimited,
    ServerError,
    SessionExpired,
)


def _body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def _decode(status: int, body: bytes, headers: dict[str, str] | None = None) -> object:
    return decode_response(status, headers or {}, body, "GET", "http://h/api/v4/file")


def test_s1_1_success_returns_data() -> None:
    """code 0 returns the data field (None when omitted)."""
    assert _decode(200, _body(code=0, data={"a": 1}, msg="")) == {"a": 1}
    assert _decode(200, _body(code=0, msg="")) is None


@pytest.mark.parametrize(
    ("code", "cls", "retryable", "fatal"),
    [
        (-1, ServerError, True, False),
        (409, ServerError, True, False),
        (40004, ObjectExists, False, False),
        (40011, SessionExpired, False, False),
        (40016, NotFound, False, False),
        (40020, AuthError, False, True),
        (40051, QuotaExceeded, False, True),
        (40073, LockConflict, False, False),
        (40080, AuthError, False, True),
        (50001, ServerError, True, False),
        (50004, ServerError, True, False),
        (50007, ServerError, True, False),
        (40052, ApiError, False, False),
    ],
)
def test_s1_5_codes_map_to_typed_errors(code: int, cls: type, retryable: bool, fatal: bool) -> None:
    """Each contract 1.5 code becomes its typed error with the right flags, even in HTTP 200."""
    with pytest.raises(ApiError) as info:
        _decode(200, _body(code=code, msg="m", correlation_id="cid-1"))
    err = info.value
    assert type(err) is cls
    assert (err.retryable, err.fatal) == (retryable, fatal)
    assert err.code == code
    assert err.request_id == "cid-1"
    assert err.method == "GET"
    assert "cid-1" in str(err)


def test_s1_2_html_from_a_proxy_becomes_server_error() -> None:
    """A 502 HTML page is a retryable ServerError, never a JSON decode crash."""
    with pytest.raises(ServerError) as info:
        _decode(502, b"<html><body>Bad Gateway</body></html>")
    assert info.value.status == 502
    assert "Bad Gateway" in info.value.message


def test_s1_2_413_plain_text_is_a_permanent_error() -> None:
    """A 413 with a text body is a non-retryable ApiError."""
    with pytest.raises(ApiError) as info:
        _decode(413, b"Request Entity Too Large")
    assert not info.value.retryable
    assert info.value.code == 413


def test_s1_2_gin_404_text_is_not_found() -> None:
    """An unknown route's text 404 is NotFound."""
    with pytest.raises(NotFound):
        _decode(404, b"404 page not found")


def test_s1_4_aggregated_error_surfaces_the_item_code() -> None:
    """A 40081 whose failed items agree on a code raises that code's error."""
    body = _body(
        code=40081,
        msg="x",
        aggregated_error={"cloudreve://my/a": {"code": 40016, "msg": "Path not exist"}},
    )
    with pytest.raises(NotFound) as info:
        _decode(200, body)
    assert info.value.code == 40016


def test_s5_13_lock_conflict_keeps_conflict_list() -> None:
    """40073 carries the conflict list from data."""
    data = [{"path": "/a", "token": "t1", "owner": {"application": {"type": "upload"}}, "type": 0}]
    with pytest.raises(LockConflict) as info:
        _decode(200, _body(code=40073, msg="locked", data=data))
    assert info.value.conflicts[0]["token"] == "t1"


def test_429_retry_after_seconds_and_http_date() -> None:
    """429 gives RateLimited with retry_after from seconds or an HTTP-date measured from Date."""
    with pytest.raises(RateLimited) as info:
        _decode(429, b"slow down", {"Retry-After": "7"})
    assert info.value.retry_after == 7
    headers = {
        "Retry-After": "Thu, 03 Dec 2026 12:00:10 GMT",
        "Date": "Thu, 03 Dec 2026 12:00:00 GMT",
    }
    with pytest.raises(RateLimited) as info:
        _decode(429, b"", headers)
    assert info.value.retry_after == 10


def test_retry_after_garbage_is_none() -> None:
    """An unparsable Retry-After is ignored (None)."""
    assert parse_retry_after("soon", datetime.now(UTC)) is None
    assert parse_retry_after(None, datetime.now(UTC)) is None


def test_s2_2_go_timestamps_with_nanoseconds_parse() -> None:
    """Go time.Time JSON with 9 fractional digits and an offset parses to aware UTC."""
    when = parse_time("2025-04-26T16:19:38.833494123+08:00")
    assert when == datetime(2025, 4, 26, 8, 19, 38, 833494, tzinfo=UTC)
    assert parse_time("2025-04-26T08:19:38Z").tzinfo is not None


def test_s5_1_file_response_decodes_to_remote_entry() -> None:
    """A FileResponse becomes a RemoteEntry with the decoded path and the upload flag."""
    entry = parse_entry(
        {
            "type": 0,
            "id": "f1",
            "name": "a b#1.txt",
            "created_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-02T00:00:00Z",
            "size": 3,
            "metadata": {"sys:upload_session_id": "s"},
            "path": "cloudreve://my/d/a%20b%231.txt",
            "primary_entity": "e1",
        }
    )
    assert entry.path == "/d/a b#1.txt"
    assert entry.uploading
    assert entry.primary_entity == "e1"


def test_malformed_success_body_is_typed() -> None:
    """A success envelope with the wrong shape raises ApiError, not KeyError/TypeError."""
    with pytest.raises(ApiError, match="malformed"):
        parse_entry({"type": "x"})


def test_s6_2_upload_session_relay_uses_local_writer() -> None:
    """A relay policy's session is journaled with policy type 'local'."""
    data = {
        "session_id": "s1",
        "upload_id": "",
        "chunk_size": 0,
        "expires": 100,
        "storage_policy": {"id": "p", "type": "s3", "relay": True, "chunk_concurrency": 3},
        "uri": "cloudreve://my/a",
        "callback_secret": "k",
    }
    session = parse_upload_session(data, 10)
    assert session.saved.policy_type == "local"
    assert session.chunk_concurrency == 3
    assert session.relay
