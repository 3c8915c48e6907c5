"""Chunk writer for the ``obs`` policy (Huawei OBS, contract 6.3 and 12.4).

The complete POST carries the parts XML with ``Content-Type: application/octet-stream`` (signed
into the complete URL by the server). The URL embeds a callback policy: OBS calls Cloudreve
itself, so the client makes no callback after a successful complete, as the web client does.
"""

from __future__ import annotations

from transfer.policies._multipart import MultipartWriter

__all__ = ["ObsWriter"]


class ObsWriter(MultipartWriter):
    """Huawei OBS: multipart upload; OBS calls Cloudreve back."""

    policy_type = "obs"
    complete_content_type = "application/octet-stream"
    client_callback = False
