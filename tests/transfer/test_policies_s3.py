"""The s3 chunk writer against a real moto S3 behind a checking proxy (contract 6.3, 6.9)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.transfer.test_policies_support import (
    FakeCallbackApi,
    S3Proxy,
    Seen,
    assert_no_cloudreve_secrets,
    drive_upload,
    moto_endpoint,
    s3_proxy,
)
from transfer.backend import PartResult, SavedUpload, WriterContext
from transfer.errors import ApiError, NetworkError, ServerError, UploadFailed
from transfer.policies._storage import (
    BadUploadSession,
    PartUrlExpired,
    StorageError,
    presigned_expiry,
    redact,
)
from transfer.policies.s3 import S3Writer

__all__ = ["moto_endpoint"]

pytestmark = pytest.mark.anyio
CHUNK = 5 << 20  # S3's minimum part size for every part but the last


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[S3Proxy]:
    async with s3_proxy(moto_endpoint) as p:
        yield p


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def payload(size: int) -> bytes:
    return os.urandom(size)


async def test_s6_3_s3_multipart_upload_roundtrip(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """Parts go to their presigned URLs, the complete XML is sorted, the GET callback follows."""
    data = payload(2 * CHUNK + 1234)
    api = FakeCallbackApi()

    result = await drive_upload(
        data, lambda: proxy.open_session("s3", len(data), CHUNK), S3Writer, http, api
    )

    session = result.sessions[0]
    assert await proxy.stored(session.uri) == data
    assert api.calls == [("s3", session.session_id, session.callback_secret)]
    puts = proxy.parts_of("PUT")
    assert sorted(int(p.query["partNumber"]) for p in puts) == [1, 2, 3]
    for put in puts:
        assert put.headers["Content-Type"] == "application/octet-stream"
        assert int(put.headers["Content-Length"]) == len(put.body)
    (complete,) = proxy.completes()
    assert complete.headers["Content-Type"] == "application/xml"
    numbers = re.findall(rb"<PartNumber>(\d+)</PartNumber>", complete.body)
    assert numbers == [b"1", b"2", b"3"]
    assert_no_cloudreve_secrets(proxy.seen)


async def test_s6_3_s3_etag_kept_exactly_with_quotes(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """The ETag header reaches the complete XML byte for byte, quotes included."""
    data = payload(1000)
    api = FakeCallbackApi()

    result = await drive_upload(
        data, lambda: proxy.open_session("s3", len(data), CHUNK), S3Writer, http, api
    )

    (part,) = result.parts
    assert part.etag.startswith('"')
    assert part.etag.endswith('"')
    assert f"<ETag>{part.etag}</ETag>".encode() in proxy.completes()[0].body


async def test_br30_expired_part_url_opens_new_session(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """A 403 "Request has expired" on a part is not retried; a new session finishes the file."""
    data = payload(CHUNK + 10)
    api = FakeCallbackApi()
    proxy.session_ttl_s = 60

    def expire_after_first_part(seen: Seen) -> web.Response | None:
        if seen.method == "PUT" and len(proxy.parts_of()) == 2:
            proxy.now += 70  # the first chunk took 70 s; the storage clock moves on
        return None

    proxy.faults.append(expire_after_first_part)
    opened = 0

    async def open_session() -> SavedUpload:
        nonlocal opened
        opened += 1
        return await proxy.open_session("s3", len(data), CHUNK)

    def writer(ctx: WriterContext) -> S3Writer:
        # The client clock lags the storage's: only the storage's answer reveals the expiry.
        return S3Writer(ctx)

    result = await drive_upload(data, open_session, writer, http, api, clock=lambda: 0.0)

    first, second = result.sessions
    assert await proxy.stored(second.uri) == data
    tried = [
        p.query["partNumber"] for p in proxy.parts_of() if p.query["uploadId"] == first.upload_id
    ]
    assert sorted(tried) == ["1", "2"], "the expired URL is never retried"
    assert api.calls == [("s3", second.session_id, second.callback_secret)]


async def test_br30_part_url_past_expiry_is_not_sent(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """When the clock is past the URL's expiry the writer raises PartUrlExpired, sending nothing."""
    session = await proxy.open_session("s3", 100, CHUNK)
    expiry = presigned_expiry(session.upload_urls[0])
    assert expiry is not None
    writer = S3Writer(WriterContext(session, http, FakeCallbackApi(), lambda: expiry + 1))

    with pytest.raises(PartUrlExpired) as caught:
        await writer.write_chunk(0, 0, b"x" * 100)

    assert not caught.value.retryable
    assert proxy.seen == []


async def test_br17_5xx_on_one_part_resends_only_that_part(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """A 502 on part 2 is retryable and only part 2 is sent again."""
    data = payload(2 * CHUNK + 5)
    failed: list[int] = []

    def fail_part_2_once(seen: Seen) -> web.Response | None:
        if seen.query.get("partNumber") == "2" and not failed:
            failed.append(2)
            return web.Response(
                status=502, text="<html>Bad Gateway</html>", content_type="text/html"
            )
        return None

    proxy.faults.append(fail_part_2_once)

    result = await drive_upload(
        data, lambda: proxy.open_session("s3", len(data), CHUNK), S3Writer, http, FakeCallbackApi()
    )

    assert await proxy.stored(result.sessions[0].uri) == data
    sent = sorted(int(p.query["partNumber"]) for p in proxy.parts_of())
    assert sent == [1, 2, 2, 3]


async def test_s6_3_html_5xx_body_is_a_retryable_typed_error(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """An HTML error page becomes ServerError with the status, not a parse crash."""
    proxy.faults.append(lambda s: web.Response(status=503, text="<html>down</html>"))
    session = await proxy.open_session("s3", 10, CHUNK)
    writer = S3Writer(WriterContext(session, http, FakeCallbackApi()))

    with pytest.raises(ServerError) as caught:
        await writer.write_chunk(0, 0, b"0123456789")

    assert caught.value.status == 503
    assert caught.value.retryable
    assert "X-Amz-Signature" not in str(caught.value)


async def test_s6_3_access_denied_is_not_retryable(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """A 403 that is not an expiry is a StorageError carrying the S3 code, not retryable."""
    proxy.faults.append(
        lambda s: web.Response(
            status=403,
            body=b"<Error><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error>",
        )
    )
    session = await proxy.open_session("s3", 10, CHUNK)
    writer = S3Writer(WriterContext(session, http, FakeCallbackApi()))

    with pytest.raises(StorageError) as caught:
        await writer.write_chunk(0, 0, b"0123456789")

    assert caught.value.storage_code == "SignatureDoesNotMatch"
    assert not caught.value.retryable


async def test_s6_3_error_xml_inside_200_complete_is_failure(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """A 200 complete answer holding <Error> fails and the callback is not called."""
    api = FakeCallbackApi()
    proxy.faults.append(
        lambda s: (
            web.Response(
                status=200,
                body=b"<?xml version='1.0'?>\n<Error><Code>InvalidPart</Code>"
                b"<Message>One or more parts could not be found.</Message></Error>",
            )
            if s.method == "POST"
            else None
        )
    )
    session = await proxy.open_session("s3", 10, CHUNK)
    writer = S3Writer(WriterContext(session, http, api))
    part = await writer.write_chunk(0, 0, b"0123456789")

    with pytest.raises(StorageError) as caught:
        await writer.finish([part])

    assert caught.value.storage_code == "InvalidPart"
    assert api.calls == []


async def test_s6_3_internal_error_inside_200_complete_is_retryable(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """S3's late InternalError in a 200 complete is retryable; the retry completes the file."""
    api = FakeCallbackApi()
    broke: list[bool] = []

    def late_error(seen: Seen) -> web.Response | None:
        if seen.method == "POST" and not broke:
            broke.append(True)
            return web.Response(
                status=200, body=b"<Error><Code>InternalError</Code><Message>x</Message></Error>"
            )
        return None

    proxy.faults.append(late_error)
    data = payload(77)

    result = await drive_upload(
        data, lambda: proxy.open_session("s3", len(data), CHUNK), S3Writer, http, api
    )

    assert await proxy.stored(result.sessions[0].uri) == data
    assert len(proxy.completes()) == 2
    assert len(api.calls) == 1


async def test_s6_9_complete_answer_lost_then_retried_goes_on_to_callback(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """A complete that succeeded with its answer lost is not failed by the NoSuchUpload retry."""
    api = FakeCallbackApi()
    session = await proxy.open_session("s3", 10, CHUNK)
    writer = S3Writer(WriterContext(session, http, api))
    part = await writer.write_chunk(0, 0, b"0123456789")
    forward = proxy._forward

    async def complete_then_drop(request: web.Request, body: bytes) -> web.Response:
        answer = await forward(request, body)
        if request.method == "POST" and len(proxy.completes()) == 1:
            assert request.transport is not None
            request.transport.close()
        return answer

    proxy._forward = complete_then_drop  # type: ignore[method-assign]

    with pytest.raises(NetworkError):
        await writer.finish([part])
    await writer.finish([part])

    assert await proxy.stored(session.uri) == b"0123456789"
    assert len(proxy.completes()) == 2
    assert api.calls == [("s3", session.session_id, session.callback_secret)]


async def test_s6_9_complete_finding_no_upload_and_no_object_asks_for_new_session(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """NoSuchUpload on the complete plus a failing callback raise PartUrlExpired (new session)."""
    api = FakeCallbackApi(fail_with=ApiError(400, 40055, "size mismatch", method="GET"))
    session = await proxy.open_session("s3", 10, CHUNK)
    writer = S3Writer(WriterContext(session, http, api))
    part = await writer.write_chunk(0, 0, b"0123456789")
    proxy.faults.append(
        lambda s: web.Response(
            status=404,
            body=b"<Error><Code>NoSuchUpload</Code><Message>gone</Message></Error>",
        )
    )

    with pytest.raises(PartUrlExpired) as caught:
        await writer.finish([part])

    assert isinstance(caught.value.__cause__, ApiError)
    assert len(api.calls) == 1


async def test_br12_callback_failure_is_never_done(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """A 404/405 on the callback fails finish; a second finish does not re-send the complete."""
    api = FakeCallbackApi(fail_with=ApiError(405, 405, "Method Not Allowed", method="GET"))
    session = await proxy.open_session("s3", 10, CHUNK)
    writer = S3Writer(WriterContext(session, http, api))
    part = await writer.write_chunk(0, 0, b"0123456789")

    with pytest.raises(ApiError) as caught:
        await writer.finish([part])
    assert caught.value.status == 405
    api.fail_with = None
    await writer.finish([part])

    assert len(proxy.completes()) == 1
    assert len(api.calls) == 2


async def test_s6_3_finish_refuses_missing_parts(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """finish with a chunk missing raises UploadFailed naming it and sends nothing."""
    session = await proxy.open_session("s3", CHUNK + 1, CHUNK)
    writer = S3Writer(WriterContext(session, http, FakeCallbackApi()))

    with pytest.raises(UploadFailed) as caught:
        await writer.finish([PartResult(0, '"abc"')])

    assert caught.value.chunk == 1
    assert caught.value.offset == CHUNK
    assert proxy.seen == []


async def test_s6_3_missing_etag_header_is_an_error(
    proxy: S3Proxy, http: aiohttp.ClientSession
) -> None:
    """A 200 part answer without ETag (CORS not exposing it) is a typed error, not an empty tag."""
    proxy.faults.append(lambda s: web.Response(status=200))
    session = await proxy.open_session("s3", 10, CHUNK)
    writer = S3Writer(WriterContext(session, http, FakeCallbackApi()))

    with pytest.raises(StorageError, match="ETag"):
        await writer.write_chunk(0, 0, b"0123456789")


async def test_s6_3_writer_rejects_bad_sessions(http: aiohttp.ClientSession) -> None:
    """A session of another type, or without URLs, or an index past the URLs is refused."""
    base = SavedUpload("sid", "cloudreve://my/a", 10, 5, 0, "s3", "secret")
    with pytest.raises(BadUploadSession):
        S3Writer(WriterContext(base, http, FakeCallbackApi()))
    other = SavedUpload(
        "sid", "cloudreve://my/a", 10, 5, 0, "cos", "s", upload_urls=("u",), complete_url="c"
    )
    with pytest.raises(BadUploadSession):
        S3Writer(WriterContext(other, http, FakeCallbackApi()))
    good = SavedUpload(
        "sid", "cloudreve://my/a", 10, 5, 0, "s3", "s", upload_urls=("u",), complete_url="c"
    )
    with pytest.raises(BadUploadSession):
        await S3Writer(WriterContext(good, http, FakeCallbackApi())).write_chunk(1, 5, b"x")


def test_presigned_expiry_reads_every_signature_flavour() -> None:
    """SigV4, SigV2 Expires, OSS v4 and COS q-sign-time expiries are understood."""
    v4 = "http://h/b/k?X-Amz-Date=20261203T180000Z&X-Amz-Expires=60&X-Amz-Signature=s"
    assert presigned_expiry(v4) == 1796320800 + 60
    assert presigned_expiry("http://h/k?Expires=1796320900&Signature=x") == 1796320900
    assert presigned_expiry("http://h/k?x-oss-date=20261203T180000Z&x-oss-expires=10") == (
        1796320810
    )
    cos = "http://h/k?q-sign-algorithm=sha1&q-sign-time=1796320800%3B1796324400&q-signature=x"
    assert presigned_expiry(cos) == 1796324400
    assert presigned_expiry("http://h/k?uploadId=1") is None


def test_redact_drops_signature_query() -> None:
    """URLs in errors keep scheme, host and path only."""
    assert redact("https://b.s3.x/k%20y?X-Amz-Signature=abc#f") == "https://b.s3.x/k%20y"
