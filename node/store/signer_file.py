"""The signer's file backend: the last-signed record survives crashes and restarts.

The state is one small JSON file (format in docs/consensus.md, "Signer state file").
``save`` writes it with ``chain.durable.atomic_write`` (tmp file, sync, rename, folder
sync), so after a crash the file holds either the old or the new state, whole, and a
state that ``save`` returned from is on disk. A missing file is a fresh signer; an
unreadable or malformed one is an error (resetting it could allow a double sign).
"""

from __future__ import annotations

import json
from pathlib import Path

from chain.crypto import PublicKey
from chain.durable import atomic_write
from consensus.signer import SignerState, SignerStateError

# the state file of the node's first consensus key (the name from before key rotation)
PRIMARY_STATE_FILE = "signer_state.json"


def state_file_for(data_dir: str | Path, pub_key: bytes, primary: bool) -> Path:
    """Where the double-sign state of consensus key ``pub_key`` lives in ``data_dir``.

    Every key may have a file of its own, ``signer_state_<64-hex pub_key>.json``; the
    one ``signer_state.json`` (the name from before key rotation) belongs to the key whose
    signature its last record carries, or, while it has none, to the key of
    ``validator_key_file`` (``primary``). So a node keeps its state across the upgrade,
    and swapping the two key files after a rotation moves no state to the wrong key.
    Order: the key's own file if it exists; else ``signer_state.json`` if it is this
    key's (as above); else the key's own file (a fresh state)."""
    data_dir = Path(data_dir)
    own = data_dir / f"signer_state_{pub_key.hex()}.json"
    if own.exists():
        return own
    shared = data_dir / PRIMARY_STATE_FILE
    if shared.exists():
        last = FileSignerBackend(shared).load().last
        if last is None:
            return shared if primary else own
        if PublicKey(pub_key).verify_raw(last.signature, last.sign_bytes):
            return shared
        return own
    return shared if primary else own


def check_owner(state: SignerState, pub_key: bytes, path: Path) -> None:
    """Raise ``SignerStateError`` if ``state``'s last signature is not by ``pub_key``
    (the file belongs to another key: e.g. key files swapped after a rotation)."""
    last = state.last
    if last is not None and not PublicKey(pub_key).verify_raw(last.signature,
                                                              last.sign_bytes):
        raise SignerStateError(f"signer state {path} was signed by another key than "
                               f"{pub_key.hex()}: move it to that key's file (docs/node.md, "
                               "\"Consensus keys and key rotation\")")


class FileSignerBackend:
    """``consensus.signer.SignerBackend`` over a JSON file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> SignerState:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return SignerState()
        except OSError as exc:
            raise SignerStateError(f"cannot read signer state {self.path}: {exc}") from exc
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SignerStateError(f"signer state {self.path} is not JSON: {exc}") from exc
        return SignerState.from_map(doc)

    def save(self, state: SignerState) -> None:
        atomic_write(self.path, (json.dumps(state.to_map(), sort_keys=True, indent=1)
                                 + "\n").encode())
