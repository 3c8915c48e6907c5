"""How storage answers map onto ``transfer.errors`` (shared by every policy writer)."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from transfer.errors import ApiError, NetworkError, RateLimited, ServerError
from transfer.policies._storage import (
    PartUrlExpired,
    StorageError,
    StorageResponse,
    send,
    storage_error,
)

URL = "https://bucket.example/key?X-Amz-Signature=secret-signature"


def answer(status: int, body: bytes, **headers: str) -> StorageResponse:
    return StorageResponse(status, CIMultiDictProxy(CIMultiDict(headers)), body)


@pytest.mark.parametrize(
    ("resp", "kind", "retryable"),
    [
        (answer(429, b"", **{"Retry-After": "7"}), RateLimited, True),
        (answer(408, b"<html>timeout</html>"), ServerError, True),
        (
            answer(502, b"<html>Bad Gateway</html>", **{"Content-Type": "text/html"}),
            ServerError,
            True,
        ),
        (
            answer(400, b"<Error><Code>RequestTimeout</Code><Message>m</Message></Error>"),
            ServerError,
            True,
        ),
        (
            answer(
                403,
                b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
            ),
            PartUrlExpired,
            False,
        ),
        (
            answer(404, b"<Error><Code>NoSuchUpload</Code><Message>gone</Message></Error>"),
            PartUrlExpired,
            False,
        ),
        (
            answer(404, b'{"error": {"code": "itemNotFound", "message": "gone"}}'),
            PartUrlExpired,
            False,
        ),
        (answer(612, b'{"error": "no such uploadId"}'), PartUrlExpired, False),
        (answer(401, b'{"error": "expired token"}'), PartUrlExpired, False),
        (answer(599, b'{"error": "server error"}'), ServerError, True),
        (answer(579, b'{"error": "callback failed"}'), StorageError, False),
        (answer(400, b'{"code": 40000027, "message": "file size too large"}'), StorageError, False),
        (
            answer(403, b"<Error><Code>AccessDenied</Code><Message>Denied</Message></Error>"),
            StorageError,
            False,
        ),
    ],
)
def test_s6_3_storage_answers_become_typed_errors(
    resp: StorageResponse, kind: type[ApiError], retryable: bool
) -> None:
    """Each storage error format maps to one typed error with the right retry flag."""
    error = storage_error(resp, "PUT", URL)

    assert type(error) is kind
    assert error.retryable is retryable
    assert error.status == resp.status
    assert "secret-signature" not in str(error)


def test_s6_3_rate_limit_keeps_retry_after() -> None:
    """A storage 429 carries its Retry-After seconds for the pacer."""
    error = storage_error(answer(429, b"", **{"Retry-After": "7"}), "PUT", URL)

    assert isinstance(error, RateLimited)
    assert error.retry_after == 7


def test_s6_3_storage_codes_are_kept() -> None:
    """S3, Graph and Upyun codes land in storage_code; the message carries the text."""
    s3 = storage_error(
        answer(400, b"<Error><Code>InvalidPart</Code><Message>x</Message></Error>"), "POST", URL
    )
    graph = storage_error(
        answer(409, b'{"error": {"code": "nameAlreadyExists", "message": "exists"}}'), "PUT", URL
    )
    upyun = storage_error(answer(401, b'{"code": 40100005, "msg": "signature error"}'), "POST", URL)

    assert isinstance(s3, StorageError)
    assert s3.storage_code == "InvalidPart"
    assert isinstance(graph, StorageError)
    assert graph.storage_code == "nameAlreadyExists"
    assert isinstance(upyun, StorageError)
    assert upyun.storage_code == "40100005"
    assert "signature error" in str(upyun)


@pytest.mark.anyio
async def test_s6_3_connection_refused_is_a_retryable_network_error() -> None:
    """A storage host that refuses connections gives NetworkError without the signature."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/k?X-Amz-Signature=secret-signature"

    async with aiohttp.ClientSession() as http:
        with pytest.raises(NetworkError) as caught:
            await send(http, "PUT", url, data=b"x")

    assert caught.value.retryable
    assert "secret-signature" not in str(caught.value)
