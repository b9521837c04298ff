"""One conformance suite for both signer backends (memory and file)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

from chain.crypto import Domain, PrivateKey
from chain.vote import Proposal, Vote, VoteType
from consensus.events import Step
from consensus.signer import (
    ConflictError,
    LockRecord,
    MemorySignerBackend,
    PersistError,
    RegressionError,
    Signer,
    SignerBackend,
    SignerState,
    SignerStateError,
)
from node.store.signer_file import FileSignerBackend

CHAIN = "test-chain"
KEY = PrivateKey(bytes(range(32)))
B1 = b"\x01" * 32
B2 = b"\x02" * 32

# A backend factory returns a function that opens the backend over the same storage each
# time it is called, so "a restart" is a new Signer over a freshly opened backend.
Opener = Callable[[], SignerBackend]


@pytest.fixture(params=["memory", "file"])
def opener(request: pytest.FixtureRequest, tmp_path) -> Opener:
    if request.param == "memory":
        backend = MemorySignerBackend()
        return lambda: backend
    path = tmp_path / "signer_state.json"
    return lambda: FileSignerBackend(path)


def vote(h: int, r: int, t: VoteType = VoteType.PREVOTE, block: bytes | None = B1,
         ts: int = 1000) -> Vote:
    return Vote(t, h, r, block, ts, 0)


def test_signatures_are_valid_and_records_advance(opener: Opener) -> None:
    s = Signer(KEY, opener())
    v = s.sign_vote(vote(1, 0), CHAIN)
    assert KEY.public_key.verify(Domain.PREVOTE, CHAIN, v.sign_payload(), v.sig)
    p = s.sign_proposal(Proposal(1, 1, -1, B1, 5, 0), CHAIN)
    assert KEY.public_key.verify(Domain.PROPOSAL, CHAIN, p.sign_payload(), p.sig)
    last = s.state.last
    assert last is not None and (last.height, last.round, last.step) == (1, 1, Step.PROPOSE)
    assert last.message() == p


def test_identical_bytes_return_the_stored_signature_even_after_restart(opener: Opener) -> None:
    s = Signer(KEY, opener())
    first = s.sign_vote(vote(3, 2, VoteType.PRECOMMIT), CHAIN)
    again = Signer(KEY, opener()).sign_vote(vote(3, 2, VoteType.PRECOMMIT), CHAIN)
    assert again.sig == first.sig


@pytest.mark.parametrize("later", [
    lambda: vote(3, 2, VoteType.PRECOMMIT, B2),       # other block, same step
    lambda: vote(3, 2, VoteType.PRECOMMIT, None),     # nil, same step
    lambda: vote(3, 2, VoteType.PRECOMMIT, B1, ts=1001),  # same block, other timestamp
])
def test_different_bytes_at_the_same_step_are_refused(opener: Opener, later) -> None:
    s = Signer(KEY, opener())
    s.sign_vote(vote(3, 2, VoteType.PRECOMMIT), CHAIN)
    before = s.state
    with pytest.raises(ConflictError) as err:
        Signer(KEY, opener()).sign_vote(later(), CHAIN)
    assert (err.value.height, err.value.round, err.value.step) == (3, 2, Step.PRECOMMIT)
    assert Signer(KEY, opener()).state == before


@pytest.mark.parametrize("msg", [
    lambda: vote(3, 2, VoteType.PREVOTE),             # earlier step
    lambda: vote(3, 1, VoteType.PRECOMMIT),           # earlier round
    lambda: vote(2, 9, VoteType.PRECOMMIT),           # earlier height
    lambda: Proposal(3, 2, -1, B1, 5, 0),             # proposal after the precommit
])
def test_regressions_are_refused_with_the_numbers(opener: Opener, msg) -> None:
    s = Signer(KEY, opener())
    s.sign_vote(vote(3, 2, VoteType.PRECOMMIT), CHAIN)
    m = msg()
    with pytest.raises(RegressionError) as err:
        if isinstance(m, Proposal):
            s.sign_proposal(m, CHAIN)
        else:
            s.sign_vote(m, CHAIN)
    e = err.value
    assert (e.last_height, e.last_round, e.last_step) == (3, 2, Step.PRECOMMIT)
    assert (e.height, e.round) == (m.height, m.round)
    assert "height 3 round 2" in str(e)


def test_restart_refuses_what_the_first_instance_signed(opener: Opener) -> None:
    Signer(KEY, opener()).sign_vote(vote(5, 0, VoteType.PREVOTE, B1), CHAIN)
    with pytest.raises(ConflictError):
        Signer(KEY, opener()).sign_vote(vote(5, 0, VoteType.PREVOTE, B2), CHAIN)


def test_lock_record_follows_non_nil_precommits(opener: Opener) -> None:
    s = Signer(KEY, opener())
    s.sign_vote(vote(4, 0, VoteType.PRECOMMIT, B1), CHAIN)
    s.sign_vote(vote(4, 1, VoteType.PREVOTE, B2), CHAIN)
    s.sign_vote(vote(4, 1, VoteType.PRECOMMIT, None), CHAIN)
    assert Signer(KEY, opener()).state.lock == LockRecord(4, 0, B1)
    s.sign_vote(vote(4, 2, VoteType.PRECOMMIT, B2), CHAIN)
    assert Signer(KEY, opener()).state.lock == LockRecord(4, 2, B2)


def test_persist_happens_before_release_and_failure_withholds_the_signature() -> None:
    class Failing(MemorySignerBackend):
        fail = False

        def save(self, state: SignerState) -> None:
            if self.fail:
                raise OSError("disk full")
            super().save(state)

    backend = Failing()
    s = Signer(KEY, backend)
    s.sign_vote(vote(1, 0), CHAIN)
    assert backend.saves == 1 and backend.load().last is not None
    before = s.state
    backend.fail = True
    with pytest.raises(PersistError):
        s.sign_vote(vote(1, 0, VoteType.PRECOMMIT), CHAIN)
    assert s.state == before
    backend.fail = False
    # the refused step can still be signed once storage works again
    s.sign_vote(vote(1, 0, VoteType.PRECOMMIT), CHAIN)
    assert backend.load().last.step == Step.PRECOMMIT


def test_file_backend_atomic_files_and_corruption(tmp_path) -> None:
    path = tmp_path / "state.json"
    backend = FileSignerBackend(path)
    assert backend.load() == SignerState()
    s = Signer(KEY, backend)
    s.sign_vote(vote(7, 1), CHAIN)
    assert not (tmp_path / "state.json.tmp").exists()
    doc = json.loads(path.read_text())
    assert doc["last"]["height"] == 7 and doc["version"] == 1
    # a crash between writing the temporary file and the rename leaves the old state
    (tmp_path / "state.json.tmp").write_text("garbage")
    assert FileSignerBackend(path).load() == s.state
    path.write_text("{not json")
    with pytest.raises(SignerStateError):
        FileSignerBackend(path).load()
    path.write_text(json.dumps({"version": 1, "last": {"height": -1}, "lock": None}))
    with pytest.raises(SignerStateError):
        FileSignerBackend(path).load()


def test_state_map_round_trip() -> None:
    s = Signer(KEY, MemorySignerBackend())
    s.sign_vote(vote(2, 3, VoteType.PRECOMMIT), CHAIN)
    assert SignerState.from_map(s.state.to_map()) == s.state
    bad = s.state.to_map()
    bad["last"]["signature"] = "00"
    with pytest.raises(SignerStateError):
        SignerState.from_map(bad)


def test_file_backend_syncs_the_file_and_the_folder_before_save_returns(tmp_path,
                                                                        monkeypatch) -> None:
    """The file's data is synced before the rename and the folder after it, both before
    ``save`` returns: without either, a power cut could lose a state the signer relied on."""
    events: list[tuple[str, str]] = []
    real_fsync, real_fdatasync, real_replace = os.fsync, os.fdatasync, os.replace

    def target(fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    def fsync(fd: int) -> None:
        events.append(("sync", target(fd)))
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        events.append(("sync", target(fd)))
        real_fdatasync(fd)

    def replace(src, dst) -> None:
        events.append(("rename", str(dst)))
        real_replace(src, dst)

    path = tmp_path / "signer_state.json"
    backend = FileSignerBackend(path)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "replace", replace)
    state = Signer(KEY, MemorySignerBackend())
    state.sign_vote(vote(3, 0), CHAIN)
    backend.save(state.state)
    monkeypatch.undo()
    tmp = str(tmp_path / "signer_state.json.tmp")
    assert events == [("sync", tmp), ("rename", str(path)), ("sync", str(tmp_path))]
    assert FileSignerBackend(path).load() == state.state
