"""Chunk writer for the ``ks3`` policy (Kingsoft KS3, contract 6.3).

As s3, except that the server presigns the complete URL with
``Content-Type: application/octet-stream`` (KS3 signs the type), so the complete POST must send
that type; then ``GET /callback/ks3/{session_id}/{secret}``.
"""

from __future__ import annotations

from transfer.policies._multipart import S3_MIN_PART, MultipartWriter

__all__ = ["Ks3Writer"]


class Ks3Writer(MultipartWriter):
    """Kingsoft KS3: multipart upload, then a client GET callback."""

    policy_type = "ks3"
    min_part_size = S3_MIN_PART
    complete_content_type = "application/octet-stream"
