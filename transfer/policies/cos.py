"""Chunk writer for the ``cos`` policy (Tencent COS, contract 6.3).

The server presigns the complete URL with ``x-cos-forbid-overwrite: true``, so the complete POST
sends that header with the parts XML; then ``GET /callback/cos/{session_id}/{secret}``. The part
URLs sign ``Content-Type: application/octet-stream`` and the exact ``Content-Length``, which every
multipart writer sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from transfer.policies._multipart import MultipartWriter

__all__ = ["CosWriter"]


class CosWriter(MultipartWriter):
    """Tencent COS: multipart upload refusing to overwrite, then a client GET callback."""

    policy_type = "cos"
    complete_headers: ClassVar[Mapping[str, str]] = {"x-cos-forbid-overwrite": "true"}
