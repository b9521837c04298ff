"""The one canonical msgpack encoding for everything that is hashed or signed.

Exactly one byte string encodes a given value, so one transaction has one hash. The
rules (written out in docs/encoding.md):

* allowed types: nil, bool, integers in [-2**63, 2**64 - 1], byte strings (bin family),
  UTF-8 text (str family), arrays, and maps whose keys are text;
* no floats, no ext types, no timestamps;
* every value uses the shortest msgpack form for its length or magnitude (what
  msgpack's reference packer emits), and non-negative integers always use the unsigned
  forms (positive fixint / uint*);
* map keys are unique and sorted by their UTF-8 bytes, ascending (bytewise);
* nesting is at most ``MAX_DEPTH`` deep, and an input is at most the caller's size limit.

``decode`` enforces all of this by re-encoding the decoded value and comparing bytes, so a
non-canonical input is always refused, never normalised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

MAX_DEPTH = 16
DEFAULT_MAX_SIZE = 1 << 20
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1


class EncodingError(ValueError):
    """A value cannot be encoded canonically, or bytes are not a canonical encoding."""


try:  # the same encoder in C; optional, see setup.py
    from chain import _canonical
except ImportError:  # pragma: no cover - only where the extension could not be built
    _canonical = None  # type: ignore[assignment]
else:
    _canonical.set_error(EncodingError)

NATIVE_AVAILABLE = _canonical is not None


def _normalise(value: Any, depth: int) -> Any:
    # Exact-type checks first: this runs for every record the rules store and every
    # message signed, so the common plain types take the shortest path.
    t = type(value)
    if t is str or t is bytes or t is bool or value is None:
        return value
    if t is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise EncodingError(f"integer {value} out of range")
        return value
    if depth >= MAX_DEPTH and isinstance(value, Mapping | list | tuple):
        raise EncodingError(f"more than {MAX_DEPTH} levels of nesting")
    if t is dict:
        # UTF-8 preserves code point order, so sorting the str keys sorts their UTF-8 bytes
        try:
            keys = sorted(value)
        except TypeError:
            keys = list(value)
        for k in keys:
            if type(k) is not str:
                raise EncodingError(f"map key {k!r} is not text")
        d = depth + 1
        return {k: _normalise(value[k], d) for k in keys}
    if t is list or t is tuple:
        d = depth + 1
        return [_normalise(v, d) for v in value]
    return _normalise_slow(value, depth)


def _normalise_slow(value: Any, depth: int) -> Any:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _normalise(int(value), depth)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list | tuple):
        return _normalise(list(value), depth)
    if isinstance(value, Mapping):
        return _normalise(dict(value), depth)
    raise EncodingError(f"type {type(value).__name__} is not encodable")


def encode(value: Any) -> bytes:
    """Return the canonical encoding of ``value``."""
    if _canonical is not None:
        try:
            return _canonical.encode(value)
        except _canonical.Unsupported:
            pass  # a type only the reference below handles (a subclass, bytearray, ...)
    return encode_reference(value)


def encode_reference(value: Any) -> bytes:
    """``encode`` in Python: the reference the C encoder (chain/_canonical.c) must match,
    and the path for values of other types than the plain ones."""
    normalised = _normalise(value, 0)
    try:
        return msgpack.packb(normalised, use_bin_type=True, strict_types=False)
    except (OverflowError, ValueError, TypeError) as exc:  # pragma: no cover - guarded above
        raise EncodingError(str(exc)) from exc


def decode(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Decode canonical bytes; refuse oversize, malformed or non-canonical input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EncodingError("input is not bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise EncodingError(f"input of {len(data)} bytes exceeds limit of {max_size}")
    if not data:
        raise EncodingError("empty input")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=False,
            ext_hook=_refuse_ext,
        )
    except EncodingError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError, RecursionError) as exc:
        raise EncodingError(f"malformed msgpack: {exc}") from exc
    # Re-encoding is the whole canonical check: the encoder emits only canonical bytes and
    # refuses non-text keys and deep nesting, so a duplicate key (the dict keeps one), an
    # unsorted map, a longer-than-shortest form or a float cannot come back identical.
    if encode(value) != data:
        raise EncodingError("not the canonical encoding")
    return value


def _refuse_ext(code: int, data: bytes) -> Any:
    raise EncodingError(f"ext type {code} is not allowed")
