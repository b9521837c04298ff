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

from chain.durable import atomic_write
from consensus.signer import SignerState, SignerStateError


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
