"""Chunk writer for the ``oss`` policy (Aliyun OSS, contract 6.3).

The complete POST has an EMPTY body with ``x-oss-complete-all: yes`` (OSS lists the parts
itself) and ``x-oss-forbid-overwrite: true``; both headers and
``Content-Type: application/octet-stream`` are signed into the complete URL by the server. The
URL embeds a callback: OSS calls Cloudreve before answering, so the client makes no callback and
a failed storage callback shows up in the complete answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from transfer.policies._multipart import MultipartWriter

__all__ = ["OssWriter"]


class OssWriter(MultipartWriter):
    """Aliyun OSS: multipart upload completed with complete-all; OSS calls Cloudreve back."""

    policy_type = "oss"
    complete_content_type = "application/octet-stream"
    complete_with_parts = False
    complete_headers: ClassVar[Mapping[str, str]] = {
        "x-oss-forbid-overwrite": "true",
        "x-oss-complete-all": "yes",
    }
    client_callback = False
