"""KS3 policy: the S3 flow on its own moto bucket and proxy prefix (contract 6.3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emulator.test_policies_common import (
    OCTET,
    complete_xml,
    post,
    running_storage,
    xml_code,
)
from tests.emulator.test_policies_s3 import full_flow


@pytest.mark.anyio
async def test_s6_3_multipart_upload_callback_and_download(tmp_path: Path) -> None:
    """Parts to presigned KS3 URLs, XML complete, GET callback: the object downloads intact."""
    await full_flow(tmp_path, "ks3")


@pytest.mark.anyio
async def test_s6_3_ks3_urls_do_not_open_the_s3_bucket(tmp_path: Path) -> None:
    """A KS3 part URL replayed under the S3 prefix is refused; each type has its own bucket."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("ks3", 10)
        assert env.drivers["ks3"].bucket != env.drivers["s3"].bucket  # type: ignore[attr-defined]
        moved = creds.upload_urls[0].replace("/storage/ks3/", "/storage/s3/")
        async with env.http.put(moved, data=b"x" * 10, headers=OCTET) as resp:
            assert (resp.status, xml_code(await resp.text())) == (403, "SignatureDoesNotMatch")


@pytest.mark.anyio
async def test_s11_1_expired_ks3_part_url_is_access_denied(tmp_path: Path) -> None:
    """KS3 part URLs expire with the emulator clock like S3's."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("ks3", 10)
        env.clock.offset = 3700
        async with env.http.put(creds.upload_urls[0], data=b"x" * 10, headers=OCTET) as resp:
            assert (resp.status, xml_code(await resp.text())) == (403, "AccessDenied")


@pytest.mark.anyio
async def test_s6_3_ks3_urls_bind_the_octet_stream_type(tmp_path: Path) -> None:
    """KS3 signs Content-Type application/octet-stream: other types on part or complete get 403."""
    async with running_storage(tmp_path) as env:
        _, creds = await env.open("ks3", 10)
        typed = {"Content-Type": "text/plain"}
        async with env.http.put(creds.upload_urls[0], data=b"x" * 10, headers=typed) as resp:
            assert (resp.status, xml_code(await resp.text())) == (403, "SignatureDoesNotMatch")
        async with env.http.put(creds.upload_urls[0], data=b"x" * 10, headers=OCTET) as resp:
            assert resp.status == 200
            etag = resp.headers["ETag"]
        xml = {"Content-Type": "application/xml"}
        status, body = await post(env, creds.complete_url, complete_xml([etag]), xml)
        assert (status, xml_code(body)) == (403, "SignatureDoesNotMatch")
        status, body = await post(env, creds.complete_url, complete_xml([etag]), OCTET)
        assert status == 200, body
