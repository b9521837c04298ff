"""The validator's signer: the only code that uses the private key, and it never double-signs.

It remembers the last thing it signed as a ``SignRecord`` (height, round, step, exact sign
bytes, signature) and, for crash recovery of the consensus lock, the last non-nil
precommit it signed (``LockRecord``). Signing at (h, r, s):

* (h, r, s) lower than the last record, lexicographically → ``RegressionError``;
* (h, r, s) equal and the sign bytes differ → ``ConflictError`` (a double sign);
* (h, r, s) equal and the bytes identical → the stored signature (a restart re-sends);
* higher → the new state is saved through the backend, atomically and durably, and only
  then is the signature returned. If saving fails (``PersistError``) no signature leaves.

Steps order a round: proposal (1) < prevote (2) < precommit (3), the ``Step`` enum.

This module does no I/O itself: persistence is the ``SignerBackend`` interface. The
in-memory backend lives here; the file backend (write, fsync, rename, fsync dir) is
``node.store.signer_file.FileSignerBackend``. Both pass tests/test_consensus_signer.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from chain import encoding
from chain.crypto import SIGNATURE_SIZE, Domain, sign_bytes
from chain.vote import Proposal, Vote, VoteType
from consensus.events import Step


class SignerError(Exception):
    """The signer refused to sign. Nothing was signed and its state is unchanged."""


class RegressionError(SignerError):
    """Asked to sign at a (height, round, step) below the last one signed."""

    def __init__(self, height: int, round: int, step: int,
                 last_height: int, last_round: int, last_step: int) -> None:
        self.height, self.round, self.step = height, round, step
        self.last_height, self.last_round, self.last_step = last_height, last_round, last_step
        super().__init__(
            f"refusing to sign at height {height} round {round} step {step}: already signed "
            f"at height {last_height} round {last_round} step {last_step}")


class ConflictError(SignerError):
    """Asked to sign different bytes at the (height, round, step) already signed."""

    def __init__(self, height: int, round: int, step: int) -> None:
        self.height, self.round, self.step = height, round, step
        super().__init__(
            f"refusing to double-sign at height {height} round {round} step {step}: "
            "different bytes were already signed there")


class PersistError(SignerError):
    """The backend could not save the new state, so the signature was not released."""


class SignerStateError(ValueError):
    """A stored signer state is malformed (never silently reset: that allows double signs)."""


@dataclass(frozen=True, slots=True)
class SignRecord:
    height: int
    round: int
    step: Step
    sign_bytes: bytes
    signature: bytes

    def payload(self) -> bytes:
        """The signed payload: ``sign_bytes`` minus the domain prefix (see chain.crypto)."""
        parts = self.sign_bytes.split(b"\x00", 2)
        if len(parts) != 3:
            raise SignerStateError("sign bytes lack the domain and chain id prefix")
        return parts[2]

    def message(self) -> Vote | Proposal:
        """The signed vote or proposal, rebuilt from the record (used after a restart)."""
        try:
            m = encoding.decode(self.payload(), max_size=512)
            if not isinstance(m, dict):
                raise SignerStateError("signed payload is not a map")
            m = {**m, "sig": self.signature}
            return Proposal.from_map(m) if self.step == Step.PROPOSE else Vote.from_map(m)
        except (ValueError, KeyError) as exc:
            raise SignerStateError(f"cannot rebuild the signed message: {exc}") from exc


@dataclass(frozen=True, slots=True)
class LockRecord:
    """The last non-nil precommit signed: the consensus lock (round, block) at a height."""

    height: int
    round: int
    block_id: bytes


@dataclass(frozen=True, slots=True)
class SignerState:
    last: SignRecord | None = None
    lock: LockRecord | None = None

    def to_map(self) -> dict[str, Any]:
        """A JSON-friendly map (bytes as lowercase hex); see docs/consensus.md."""
        last = lock = None
        if self.last is not None:
            r = self.last
            last = {"height": r.height, "round": r.round, "step": int(r.step),
                    "sign_bytes": r.sign_bytes.hex(), "signature": r.signature.hex()}
        if self.lock is not None:
            lock = {"height": self.lock.height, "round": self.lock.round,
                    "block_id": self.lock.block_id.hex()}
        return {"version": 1, "last": last, "lock": lock}

    @classmethod
    def from_map(cls, m: Any) -> SignerState:
        try:
            if not isinstance(m, dict) or m.get("version") != 1 or set(m) != {
                    "version", "last", "lock"}:
                raise SignerStateError("signer state must be {version: 1, last, lock}")
            last = lock = None
            if m["last"] is not None:
                r = m["last"]
                _check_keys(r, {"height", "round", "step", "sign_bytes", "signature"})
                sig = bytes.fromhex(r["signature"])
                if len(sig) != SIGNATURE_SIZE:
                    raise SignerStateError("signature must be 64 bytes")
                last = SignRecord(_nat(r["height"]), _nat(r["round"]), Step(r["step"]),
                                  bytes.fromhex(r["sign_bytes"]), sig)
            if m["lock"] is not None:
                k = m["lock"]
                _check_keys(k, {"height", "round", "block_id"})
                block_id = bytes.fromhex(k["block_id"])
                if len(block_id) != 32:
                    raise SignerStateError("lock block_id must be 32 bytes")
                lock = LockRecord(_nat(k["height"]), _nat(k["round"]), block_id)
            return cls(last, lock)
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, SignerStateError):
                raise
            raise SignerStateError(f"malformed signer state: {exc}") from exc


def _check_keys(m: Any, keys: set[str]) -> None:
    if not isinstance(m, dict) or set(m) != keys:
        raise SignerStateError(f"expected fields {sorted(keys)}")


def _nat(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise SignerStateError(f"{v!r} is not a non-negative integer")
    return v


class SignerBackend(Protocol):
    """Where the signer's state lives. ``save`` returns only once the state is durable."""

    def load(self) -> SignerState: ...

    def save(self, state: SignerState) -> None: ...


class MemorySignerBackend:
    """Keeps the state in memory (tests, the simulator). Survives a machine restart only
    if the same backend object is handed to the new signer, as a file would be."""

    def __init__(self, state: SignerState | None = None) -> None:
        self._state = state or SignerState()
        self.saves = 0

    def load(self) -> SignerState:
        return self._state

    def save(self, state: SignerState) -> None:
        self._state = state
        self.saves += 1


class SigningKey(Protocol):
    """What the signer needs of a key: ``chain.crypto.PrivateKey`` is one."""

    @property
    def public_key(self) -> Any: ...  # has ``.raw``: the 32-byte public key

    def sign_raw(self, message: bytes) -> bytes: ...


class Signer:
    """Signs votes and proposals for one validator key, never twice for one step."""

    def __init__(self, key: SigningKey, backend: SignerBackend) -> None:
        self._key = key
        self._backend = backend
        state = backend.load()
        if not isinstance(state, SignerState):
            raise SignerStateError("backend returned no SignerState")
        self._state = state

    @property
    def public_key(self) -> bytes:
        return self._key.public_key.raw

    @property
    def state(self) -> SignerState:
        return self._state

    def sign(self, height: int, round: int, step: Step, message: bytes,
             lock: LockRecord | None = None) -> bytes:
        """Sign the exact ``message`` bytes as the step (height, round, step).

        ``lock``, if given, replaces the stored lock record in the same atomic save.
        """
        step = Step(step)
        last = self._state.last
        if last is not None:
            here = (height, round, int(step))
            there = (last.height, last.round, int(last.step))
            if here < there:
                raise RegressionError(height, round, step, last.height, last.round, last.step)
            if here == there:
                if message == last.sign_bytes:
                    return last.signature
                raise ConflictError(height, round, step)
        signature = self._key.sign_raw(message)
        record = SignRecord(height, round, step, message, signature)
        new_state = replace(self._state, last=record,
                            lock=lock if lock is not None else self._state.lock)
        try:
            self._backend.save(new_state)
        except Exception as exc:  # any failure to persist must withhold the signature
            raise PersistError(f"could not persist signer state: {exc}") from exc
        self._state = new_state
        return signature

    def sign_vote(self, vote: Vote, chain_id: str) -> Vote:
        """Return ``vote`` signed; a non-nil precommit also becomes the lock record."""
        step = Step.PREVOTE if vote.type == VoteType.PREVOTE else Step.PRECOMMIT
        message = sign_bytes(vote.type.domain, chain_id, vote.sign_payload())
        lock = None
        if vote.type == VoteType.PRECOMMIT and vote.block_id is not None:
            lock = LockRecord(vote.height, vote.round, vote.block_id)
        sig = self.sign(vote.height, vote.round, step, message, lock)
        return Vote(vote.type, vote.height, vote.round, vote.block_id, vote.timestamp,
                    vote.validator, sig)

    def sign_proposal(self, proposal: Proposal, chain_id: str) -> Proposal:
        message = sign_bytes(Domain.PROPOSAL, chain_id, proposal.sign_payload())
        sig = self.sign(proposal.height, proposal.round, Step.PROPOSE, message)
        return Proposal(proposal.height, proposal.round, proposal.pol_round,
                        proposal.block_id, proposal.timestamp, proposal.validator, sig)
