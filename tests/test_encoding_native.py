"""The C canonical encoder (chain/_canonical.c) against the Python reference in
chain/encoding.py: the same bytes for every value, the same refusals, and the fallback to
the reference for types the C encoder leaves to it.

The extension is optional at install time (setup.py); a run where it did not build fails
here unless MUTUAL_ALLOW_PURE=1 says that is intended.
"""

from __future__ import annotations

import enum
import os
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain import encoding
from chain.encoding import EncodingError, encode, encode_reference

native = pytest.mark.skipif(not encoding.NATIVE_AVAILABLE, reason="the C encoder is not built")


def test_c_encoder_is_built() -> None:
    if os.environ.get("MUTUAL_ALLOW_PURE") == "1":
        pytest.skip("MUTUAL_ALLOW_PURE=1: the pure-Python encoder is accepted")
    assert encoding.NATIVE_AVAILABLE, (
        "chain/_canonical.c did not build (a C compiler is needed); `pip install -e .` "
        "printed why")


def _outcome(fn, value):
    try:
        return fn(value)
    except EncodingError:
        return EncodingError


def _c(value):
    try:
        return encoding._canonical.encode(value)
    except encoding._canonical.Unsupported:
        return "unsupported"
    except EncodingError:
        return EncodingError


_ints = st.one_of(st.integers(-40, 300), st.integers(-(1 << 70), 1 << 70),
                  st.sampled_from([-(1 << 63), -(1 << 63) - 1, (1 << 64) - 1, 1 << 64, -33,
                                   -32, -129, -128, -32769, -32768, 1 << 31, -(1 << 31) - 1,
                                   0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0xFFFFFFFF]))
_text = st.one_of(st.text(max_size=40), st.sampled_from(["\ud800", "a\udfffb", "é", "\U0001f600"]),
                  st.text(min_size=31, max_size=33), st.just("x" * 300), st.just("y" * 70000))
_blobs = st.one_of(st.binary(max_size=40), st.just(b"z" * 300), st.just(b"w" * 70000))
_scalars = st.one_of(st.none(), st.booleans(), _ints, _text, _blobs)
_keys = st.one_of(_text, st.integers(0, 3), st.binary(max_size=2))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=20), st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=6), inner, max_size=20),
        st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=60)


@native
@settings(max_examples=600, deadline=None)
@given(value=_values)
def test_same_bytes_or_same_refusal(value) -> None:
    ref = _outcome(encode_reference, value)
    got = _c(value)
    assert got == ref
    assert _outcome(encode, value) == ref


def _nest(depth: int):
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@native
def test_nesting_limit_matches() -> None:
    for depth in (15, 16, 17, 40):
        assert _c(_nest(depth)) == _outcome(encode_reference, _nest(depth))
    assert _c(_nest(16)) != EncodingError and _c(_nest(17)) is EncodingError


class Colour(enum.IntEnum):
    RED = 7


@native
@pytest.mark.parametrize("value", [
    Colour.RED, bytearray(b"ab"), memoryview(b"cd"), OrderedDict(b=1, a=2),
    {"x": [Colour.RED, bytearray(b"q")]}, type("S", (str,), {})("sub"), 1.5, {1.5},
])
def test_other_types_go_to_the_reference(value) -> None:
    assert _c(value) == "unsupported"
    assert _outcome(encode, value) == _outcome(encode_reference, value)


@native
def test_map_keys_sort_by_utf8_bytes() -> None:
    value = {"b": 1, "a": 2, "é": 3, "z": 4, "ab": 5, "": 6, "\U0001f600": 7}
    assert encode(value) == encode_reference(value)
    assert list(encoding.decode(encode(value))) == ["", "a", "ab", "b", "z", "é", "\U0001f600"]


_plain = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(1 << 63), (1 << 64) - 1),
              st.binary(max_size=20), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=6),
                            st.dictionaries(st.text(max_size=4), inner, max_size=6)),
    max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(value=_plain, data=st.data())
def test_decode_accepts_exactly_the_canonical_bytes(value, data) -> None:
    """decode(encode(v)) == v, and any other byte string is refused unless it is itself
    the canonical encoding of what it decodes to (the re-encoding check is the whole
    canonical check: duplicates, order, forms, key types)."""
    blob = encode(value)
    assert encoding.decode(blob) == value
    i = data.draw(st.integers(0, len(blob)))
    how = data.draw(st.sampled_from(["flip", "insert", "cut"]))
    if how == "flip" and i < len(blob):
        mutated = blob[:i] + bytes([blob[i] ^ data.draw(st.integers(1, 255))]) + blob[i + 1:]
    elif how == "insert":
        mutated = blob[:i] + bytes([data.draw(st.integers(0, 255))]) + blob[i:]
    else:
        mutated = blob[:i]
    try:
        decoded = encoding.decode(mutated)
    except EncodingError:
        return
    assert encode(decoded) == mutated
