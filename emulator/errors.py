"""API errors of the emulator, raised anywhere and turned into envelopes by the app.

``ApiError`` carries the Cloudreve ``code`` (contract 1.5), the ``msg``, optional ``data`` (lock
conflicts put their list there), the HTTP status (200 for almost everything, contract 1.2) and
whether the envelope gets a ``correlation_id`` (request-validation errors have none, 1.4).
"""

from __future__ import annotations

from typing import Any

SUCCESS = 0
NOT_SET = -1
NOT_FULLY_SUCCESS = 203
CHECK_LOGIN = 401
NO_PERMISSION = 403
NOT_FOUND = 404
CONFLICT = 409
PARAM_ERR = 40001
OBJECT_EXIST = 40004
SIGN_EXPIRED = 40005
POLICY_NOT_ALLOWED = 40006
GROUP_NOT_ALLOWED = 40007
UPLOAD_SESSION_EXPIRED = 40011
INVALID_CHUNK_INDEX = 40012
INVALID_CONTENT_LENGTH = 40013
PARENT_NOT_EXIST = 40016
USER_BANED = 40017
USER_NOT_ACTIVATED = 40018
FEATURE_NOT_ENABLED = 40019
CREDENTIAL_INVALID = 40020
TWO_FA_CODE_ERR = 40022
FILE_TOO_LARGE = 40049
INSUFFICIENT_CAPACITY = 40051
ILLEGAL_OBJECT_NAME = 40052
META_MISMATCH = 40055
INVALID_SIGN = 40071
LOCK_CONFLICT = 40073
TOO_MANY_URIS = 40074
STALE_VERSION = 40076
ENTITY_NOT_EXIST = 40077
FILE_COUNT_LIMITED = 40079
INVALID_PASSWORD = 40080
BATCH_NOT_FULLY_COMPLETED = 40081
OWNER_ONLY = 40082
DB_ERROR = 50001
IO_FAILED = 50004
INTERNAL_SETTING = 50005
CALLBACK_ERROR = 50007


class ApiError(Exception):
    """An error answered to the client as a Cloudreve envelope.

    Args:
        code: the envelope ``code``.
        msg: the envelope ``msg``.
        data: optional ``data`` (e.g. the lock-conflict list of 40073).
        status: the HTTP status; 200 unless the contract names another (1.2).
        correlation: False for request-validation errors, which carry no ``correlation_id``.
        aggregated: per-resource errors of a 40081 batch failure (``aggregated_error``).
    """

    def __init__(
        self,
        code: int,
        msg: str = "",
        *,
        data: Any = None,
        status: int = 200,
        correlation: bool = True,
        aggregated: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.data = data
        self.status = status
        self.correlation = correlation
        self.aggregated = aggregated


def param_error(msg: str = "Parameter error") -> ApiError:
    """Return the 40001 of a request-validation failure (no correlation id)."""
    return ApiError(PARAM_ERR, msg, correlation=False)


def not_found_path() -> ApiError:
    """Return the file system's "not found": 40016 ``Path not exist``."""
    return ApiError(PARENT_NOT_EXIST, "Path not exist")
