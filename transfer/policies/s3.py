"""Chunk writer for the ``s3`` policy (contract 6.3).

Parts go to presigned ``upload_urls``; the complete POST carries the parts XML as
``application/xml`` (the server's SigV4 presign does not sign the type; moto requires an XML or
binary type); then ``GET /callback/s3/{session_id}/{secret}``.
"""

from __future__ import annotations

from transfer.policies._multipart import S3_MIN_PART, MultipartWriter

__all__ = ["S3Writer"]


class S3Writer(MultipartWriter):
    """Amazon S3 and S3-compatible storage: multipart upload, then a client GET callback."""

    policy_type = "s3"
    min_part_size = S3_MIN_PART
