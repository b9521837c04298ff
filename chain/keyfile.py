"""Key files: one Ed25519 key per JSON file, written with mode 0600.

Format: ``{"type": "ed25519", "pub_key": "<64 hex>", "priv_key": "<64 hex seed>"}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from chain.crypto import CryptoError, PrivateKey
from chain.durable import atomic_write


class KeyFileError(ValueError):
    """A key file is missing, unreadable, malformed or too widely readable."""


def write_key(path: str | Path, key: PrivateKey, overwrite: bool = False) -> None:
    """Write ``key`` to ``path`` atomically with mode 0600."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path} already exists (refusing to overwrite a key)")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"type": "ed25519", "pub_key": key.public_key.hex(), "priv_key": key.seed.hex()}
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o600)


def read_key(path: str | Path) -> PrivateKey:
    """Read a key file; refuse group/world-readable files and mismatched public keys."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} not found") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise KeyFileError(f"key file {path} is open to its group or others (mode "
                           f"{mode & 0o777:04o}; chmod 600 {path})")
    try:
        doc = json.loads(text)
        key = PrivateKey.from_hex(doc["priv_key"])
    except (json.JSONDecodeError, KeyError, TypeError, CryptoError):
        raise KeyFileError(f"key file {path} is not a valid ed25519 key file") from None
    if doc.get("pub_key") not in (None, key.public_key.hex()):
        raise KeyFileError(f"key file {path}: pub_key does not match priv_key")
    return key
