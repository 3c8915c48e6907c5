"""The obfuscated-thumbnail codec (contract 9.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.obfuscate import InvalidTimeFlowString, decode, decode_at, encode, time_key
from transfer.thumbs import decode_obfuscated

# The "Obfuscated" example of the official apifox page for GET /file/thumb.
DOC_EXAMPLE = (
    "/3ppoD:|h0a5V1e1E1sacovtn71:Cle2/i44ttD5T7?//p1/t/1fpl3/toht0nl9iJmc0/a/9Sn03g73Cj1goj61-"
    "sc41=QBE27ygbvl0wUsABeN2l4Hku.N9weiuj%Eic3p551-.%Y"
)
DOC_KEY = 1749526
DOC_URL_PREFIX = "http://localhost:5173/api/v4/file/content/1JecE/0/DSC01903.jpg.jpg?sign="


def test_s9_5_doc_example_decodes_with_its_key() -> None:
    """The doc's obfuscated string decodes under k = 1749526 to a content URL."""
    url = decode_at(DOC_EXAMPLE, DOC_KEY)

    assert url.startswith(DOC_URL_PREFIX)
    assert url.endswith("%3D%3A1749530110")


def test_s9_5_doc_example_reencodes_to_the_original() -> None:
    """Encoding the decoded URL under the same key gives the doc's string back."""
    assert encode(decode_at(DOC_EXAMPLE, DOC_KEY), DOC_KEY) == DOC_EXAMPLE


@pytest.mark.parametrize("offset_keys", [0, -1, 1])
def test_s9_5_decode_falls_back_to_neighbour_keys(offset_keys: int) -> None:
    """A client at key k decodes strings made under k, k-1 (rolled over) and k+1 (clock skew)."""
    now_s = DOC_KEY * 1000 + 500
    made = encode("http://x/y", DOC_KEY + offset_keys)

    assert decode(made, now_s) == "http://x/y"


def test_s9_5_decode_rejects_a_string_two_keys_away() -> None:
    """A string made two keys earlier does not decode and raises a typed error."""
    made = encode("http://x/y", DOC_KEY - 2)

    with pytest.raises(InvalidTimeFlowString):
        decode(made, DOC_KEY * 1000)


def test_s9_5_key_is_seconds_divided_by_1000() -> None:
    """The key comes from unix seconds; milliseconds would give a different key."""
    assert time_key(1749526123.9) == DOC_KEY
    assert time_key(1749526123900) != DOC_KEY


@given(url=st.text(min_size=0, max_size=300), key=st.integers(min_value=0, max_value=10**7))
def test_s9_5_encode_decode_round_trip(url: str, key: int) -> None:
    """Any URL (including '|' and non-ASCII) survives encode then decode under the same key."""
    assert decode_at(encode(url, key), key) == url


@given(
    url=st.text(min_size=1, max_size=200),
    now_s=st.integers(min_value=1_000_000, max_value=3_000_000_000),
)
def test_s9_5_client_decoder_reads_what_the_emulator_encodes(url: str, now_s: int) -> None:
    """The transfer client's independent decoder recovers URLs the emulator encoded at now."""
    assert decode_obfuscated(encode(url, time_key(now_s)), now_s) == url
