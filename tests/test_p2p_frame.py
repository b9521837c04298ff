"""Sans-I/O frame codec: round trips, arbitrary splitting, oversize and garbage."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p.errors import FrameError
from p2p.frame import FrameDecoder, encode_frame, parse_header


def test_round_trip_and_header_layout() -> None:
    frame = encode_frame(b"abc")
    assert frame == b"\x00\x00\x00\x03abc"
    assert FrameDecoder().feed(frame) == [b"abc"]


def test_partial_input_waits_for_the_rest() -> None:
    dec = FrameDecoder()
    frame = encode_frame(b"hello world")
    assert dec.feed(frame[:2]) == []
    assert dec.feed(frame[2:7]) == []
    assert dec.buffered == 3
    assert dec.feed(frame[7:] + encode_frame(b"x")[:1]) == [b"hello world"]
    assert dec.feed(encode_frame(b"x")[1:]) == [b"x"]
    assert dec.buffered == 0


def test_oversize_frame_is_refused_from_the_header_alone() -> None:
    dec = FrameDecoder(max_frame_size=10)
    with pytest.raises(FrameError, match="exceeds"):
        dec.feed((11).to_bytes(4, "big"))
    # the stream cannot be resynchronised: everything after is refused too
    with pytest.raises(FrameError, match="already failed"):
        dec.feed(encode_frame(b"ok"))


def test_frames_before_the_bad_header_are_delivered_in_an_earlier_feed() -> None:
    dec = FrameDecoder(max_frame_size=10)
    assert dec.feed(encode_frame(b"fine")) == [b"fine"]
    with pytest.raises(FrameError):
        dec.feed(b"\xff\xff\xff\xff")


def test_empty_frames_are_refused() -> None:
    with pytest.raises(FrameError, match="empty"):
        FrameDecoder().feed(b"\x00\x00\x00\x00")
    with pytest.raises(FrameError, match="empty"):
        encode_frame(b"")


def test_encoder_refuses_oversize_payload() -> None:
    with pytest.raises(FrameError):
        encode_frame(b"x" * 11, max_frame_size=10)
    assert encode_frame(b"x" * 10, max_frame_size=10)[4:] == b"x" * 10


def test_parse_header_checks() -> None:
    assert parse_header(b"\x00\x00\x01\x00", 256) == 256
    with pytest.raises(FrameError):
        parse_header(b"\x00\x00\x01\x01", 256)
    with pytest.raises(FrameError):
        parse_header(b"\x00\x01", 256)


def test_bad_limits_are_refused() -> None:
    for bad in (0, -1, 1 << 32, True, 1.5):
        with pytest.raises(ValueError):
            FrameDecoder(bad)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(payloads=st.lists(st.binary(min_size=1, max_size=300), max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20))
def test_any_split_yields_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p, 300) for p in payloads)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    dec = FrameDecoder(300)
    out: list[bytes] = []
    for a, b in zip(points, points[1:], strict=False):
        out.extend(dec.feed(stream[a:b]))
    assert out == payloads
    assert dec.buffered == 0


@settings(max_examples=150, deadline=None)
@given(garbage=st.binary(min_size=1, max_size=200))
def test_garbage_either_decodes_or_raises_typed_error(garbage: bytes) -> None:
    dec = FrameDecoder(64)
    try:
        frames = dec.feed(garbage)
    except FrameError:
        return
    # whatever decoded must re-encode to a prefix of the garbage, the rest buffered
    consumed = b"".join(encode_frame(f, 64) for f in frames)
    assert garbage.startswith(consumed)
    assert dec.buffered == len(garbage) - len(consumed)
    assert dec.buffered < 4 + 64
