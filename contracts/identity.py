"""Identity tags: what the chain knows of a member's identity (docs/privacy.md).

A registrar reads the identity document off chain and sends only its *tags*: for each
identity key ``k`` in use (rule parameter ``identity_key_ids``), tag = HMAC-SHA256(key k,
canonical identity text). The keys are a plan secret kept by the registrars and never
put on chain, so a reader who guesses identity numbers cannot test a guess against a tag.

The canonical text of a Chinese resident identity number (GB 11643-1999) is its 18
characters with an upper-case ``X`` check digit; ``canonical_resident_id`` checks the
check digit and refuses anything else. Pure functions: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

# GB 11643-1999: weights of the first 17 digits, and the check character for each sum mod 11
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


class IdentityError(ValueError):
    """An identity text or identity key is malformed."""


def check_digit(first17: str) -> str:
    """The GB 11643 check character of the first 17 digits of a resident ID."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise IdentityError("a resident ID starts with 17 digits")
    return _CHECK[sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def canonical_resident_id(text: str) -> str:
    """The canonical text of a resident ID: 18 characters, upper-case X, valid check digit."""
    s = text.strip().upper()
    if len(s) != 18:
        raise IdentityError("a resident ID has 18 characters")
    if check_digit(s[:17]) != s[17]:
        raise IdentityError("the resident ID's check digit is wrong")
    return s


def identity_tag(key: bytes, canonical_text: str) -> bytes:
    """HMAC-SHA256(key, canonical identity text): 32 bytes."""
    if not isinstance(key, bytes) or len(key) < 32:
        raise IdentityError("an identity key is at least 32 bytes")
    return hmac.new(key, canonical_text.encode("utf-8"), hashlib.sha256).digest()


def identity_tags(keys: Mapping[int, bytes], key_ids: Sequence[int],
                  canonical_text: str) -> list[list]:
    """The ``identity_tags`` body field: ``[[key_id, tag], ...]`` in the order of
    ``key_ids`` (the chain's ``identity_key_ids``); every key must be held."""
    missing = [k for k in key_ids if k not in keys]
    if missing:
        raise IdentityError(f"identity keys {missing} are not held")
    return [[k, identity_tag(keys[k], canonical_text)] for k in key_ids]
