"""Canonical encoding: round trips, one encoding per value, refusal of every non-canonical form."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain import encoding
from chain.encoding import EncodingError

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.binary(max_size=64)
    | st.text(max_size=32)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip_and_stability(value):
    data = encoding.encode(value)
    decoded = encoding.decode(data)
    assert encoding.encode(decoded) == data


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.integers(0, 1000), min_size=2, max_size=6))
def test_key_order_does_not_change_bytes(d):
    reordered = dict(reversed(list(d.items())))
    assert encoding.encode(d) == encoding.encode(reordered)


@pytest.mark.parametrize(
    "data, why",
    [
        (b"\xcc\x05", "uint8 for a fixint"),
        (b"\xd0\x05", "int8 for a positive fixint"),
        (b"\xcd\x00\x05", "uint16 for a fixint"),
        (b"\xd9\x01a", "str8 for a fixstr"),
        (b"\x82\xa1b\x01\xa1a\x01", "unsorted keys"),
        (b"\x82\xa1a\x01\xa1a\x02", "duplicate keys"),
        (b"\x81\x01\x01", "integer key"),
        (b"\xcb\x00\x00\x00\x00\x00\x00\x00\x00", "float64"),
        (b"\xca\x00\x00\x00\x00", "float32"),
        (b"\xd4\x01\x00", "ext"),
        (b"\x01\x02", "trailing bytes"),
        (b"\x92\x01", "truncated"),
        (b"", "empty"),
        (b"\xc1", "never-used byte"),
    ],
)
def test_refuses_non_canonical(data, why):
    with pytest.raises(EncodingError):
        encoding.decode(data)


def test_refuses_oversize():
    data = encoding.encode(b"x" * 100)
    with pytest.raises(EncodingError, match="exceeds"):
        encoding.decode(data, max_size=50)


def test_refuses_unencodable():
    for bad in (1.5, {1: 2}, object(), 1 << 64, -(1 << 63) - 1):
        with pytest.raises(EncodingError):
            encoding.encode(bad)


def test_refuses_deep_nesting():
    value: list = []
    for _ in range(encoding.MAX_DEPTH + 2):
        value = [value]
    with pytest.raises(EncodingError):
        encoding.encode(value)
    with pytest.raises(EncodingError):
        encoding.decode(msgpack.packb(value))


def test_bytes_and_text_are_distinct():
    assert encoding.encode(b"a") != encoding.encode("a")
    assert encoding.decode(encoding.encode(b"a")) == b"a"
    assert encoding.decode(encoding.encode("a")) == "a"


def test_known_bytes():
    assert encoding.encode({"b": 1, "a": [None, True, b"\x00"]}).hex() == "82a16193c0c3c40100a16201"


def test_depth_limit_is_exactly_sixteen_levels():
    ok: list = []
    for _ in range(encoding.MAX_DEPTH - 1):
        ok = [ok]
    data = encoding.encode(ok)  # 16 levels of arrays
    assert encoding.decode(data) == ok
    with pytest.raises(EncodingError):
        encoding.encode([ok])
    with pytest.raises(EncodingError):
        encoding.decode(msgpack.packb([ok]))


def test_subclasses_encode_as_their_base_types():
    from enum import IntEnum

    class Colour(IntEnum):
        RED = 1

    assert encoding.encode({"c": Colour.RED, "b": bytearray(b"x"), "t": (1, 2)}) == \
        encoding.encode({"c": 1, "b": b"x", "t": [1, 2]})


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(0, 5), min_size=1, max_size=8))
def test_key_order_is_utf8_bytewise(d):
    data = encoding.encode(d)
    keys = list(encoding.decode(data))
    assert keys == sorted(keys, key=lambda k: k.encode("utf-8"))
