"""The "time flow" codec Cloudreve Pro uses for obfuscated thumbnail URLs (contract 9.5).

``GET /file/thumb`` may answer ``{url, obfuscated: true, expires}``. The ``url`` is then a
position permutation of ``"<k>|<real url>"`` where ``k = unix_seconds // 1000``. The permutation
depends only on the string length and the decimal digits of ``k``, never on the content, so
encoding places each character where the decoder will look for it.

Clients decode with ``k`` first and fall back to ``k - 1`` and ``k + 1``, which covers a key that
rolled over between the server's encoding and the client's decoding.
"""

from __future__ import annotations

__all__ = ["InvalidTimeFlowString", "decode", "decode_at", "encode", "time_key"]

KEY_PERIOD_S = 1000
"""Seconds per key: the key changes about every 16.7 minutes."""


class InvalidTimeFlowString(ValueError):
    """Raised when a string does not decode to ``"<k>|<url>"`` under any key tried."""


def time_key(unix_s: float) -> int:
    """Return the key ``k`` for a moment given in unix **seconds** (not milliseconds)."""
    return int(unix_s) // KEY_PERIOD_S


def _digits(key: int) -> list[int]:
    """Decimal digits of ``key``, least significant first; ``[0]`` for zero."""
    if key < 0:
        raise ValueError(f"time key must be >= 0, got {key}")
    if key == 0:
        return [0]
    digits = []
    while key > 0:
        digits.append(key % 10)
        key //= 10
    return digits


def _permutation(length: int, key: int) -> list[int]:
    """Return ``out`` such that ``plain[t] == obfuscated[out[t]]`` for strings of ``length``."""
    digits = _digits(key)
    pool = list(range(length))
    out = [0] * length
    add = length % 2 == 0
    j = (length - 1) % len(digits)
    for t in range(length - 1, -1, -1):
        n = t + digits[j] * j if add else 2 * j * digits[j] - t
        n = abs(n) % len(pool)
        out[t] = pool[n]
        pool[n], pool[-1] = pool[-1], pool[n]
        pool.pop()
        add = not add
        j = j - 1 if j > 0 else len(digits) - 1
    return out


def encode(url: str, key: int) -> str:
    """Obfuscate ``url`` under ``key`` so that :func:`decode_at` with the same key returns it."""
    plain = f"{key}|{url}"
    out = _permutation(len(plain), key)
    chars = [""] * len(plain)
    for t, src in enumerate(out):
        chars[src] = plain[t]
    return "".join(chars)


def decode_at(obfuscated: str, key: int) -> str:
    """Decode ``obfuscated`` with exactly ``key``.

    Raises:
        InvalidTimeFlowString: the decoded text does not start with ``"<key>|"``.
    """
    if not obfuscated:
        return ""
    out = _permutation(len(obfuscated), key)
    plain = "".join(obfuscated[src] for src in out)
    prefix, sep, url = plain.partition("|")
    if not sep or prefix != str(key):
        raise InvalidTimeFlowString(f"string does not decode under key {key}")
    return url


def decode(obfuscated: str, unix_s: float) -> str:
    """Decode ``obfuscated`` as a client does at ``unix_s``: key ``k``, then ``k-1``, then ``k+1``.

    Raises:
        InvalidTimeFlowString: none of the three keys decodes the string.
    """
    key = time_key(unix_s)
    for candidate in (key, key - 1, key + 1):
        if candidate < 0:
            continue
        try:
            return decode_at(obfuscated, candidate)
        except InvalidTimeFlowString:
            continue
    raise InvalidTimeFlowString(f"string does not decode under keys {key - 1}..{key + 1}")
