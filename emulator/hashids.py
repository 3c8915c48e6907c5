"""Short opaque ids per object type, in the spirit of Cloudreve's hashids (contract 3).

Each id encodes ``(numeric_id, type)``; decoding an id as the wrong type fails, as the real
server answers 40001 for a hash id of another type.
"""

from __future__ import annotations

SHARE = 0
USER = 1
FILE = 2
FOLDER = 3
POLICY = 5
SOURCE_LINK = 6
GROUP = 7
ENTITY = 8
NODE = 10
TASK = 11
DAV_ACCOUNT = 12

_ALPHABET = "9KqXmB2vLwZ4cRtY7nJ0pHsD3gFk8xVbN1aQ5rCzW6eMhTyG"
_BASE = len(_ALPHABET)
_MOD = 1 << 48
_MUL = 0x5DEECE66D  # odd, so invertible modulo 2**48
_INV = pow(_MUL, -1, _MOD)
_MASK = 0x3A5C_91E7_2B4D


class HashIdError(ValueError):
    """A hash id is malformed or of another type."""


def encode(numeric_id: int, kind: int) -> str:
    """Return the hash id of ``numeric_id`` for object type ``kind``."""
    if numeric_id < 0 or numeric_id >= 1 << 40:
        raise HashIdError(f"id out of range: {numeric_id}")
    value = (((numeric_id << 4) | kind) * _MUL % _MOD) ^ _MASK
    digits = []
    while value:
        value, rem = divmod(value, _BASE)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits)) or _ALPHABET[0]


def decode(hash_id: str, kind: int) -> int:
    """Return the numeric id behind ``hash_id``.

    Raises:
        HashIdError: the string is not a hash id of type ``kind``.
    """
    value = 0
    for char in hash_id:
        pos = _ALPHABET.find(char)
        if pos < 0:
            raise HashIdError(f"bad hash id {hash_id!r}")
        value = value * _BASE + pos
    if value >= _MOD or not hash_id:
        raise HashIdError(f"bad hash id {hash_id!r}")
    plain = ((value ^ _MASK) * _INV) % _MOD
    if plain & 0xF != kind:
        raise HashIdError(f"hash id {hash_id!r} is not of type {kind}")
    return plain >> 4
