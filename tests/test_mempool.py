"""Mempool: every rejection code, nonce ordering, caps, eviction and re-check, and the
guarantee that each signature is verified at most once on a node."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain import encoding
from chain.crypto import PrivateKey
from chain.hashing import sha256
from chain.tx import Transaction
from node.mempool import AddResult, Mempool, MempoolConfig, TxRejected

CHAIN = "test-chain"
KEYS = [PrivateKey(bytes([i + 1]) * 32) for i in range(4)]


def signed(key: PrivateKey, nonce: int, body: dict | None = None, chain: str = CHAIN) -> bytes:
    return Transaction.create(key, chain, "join", nonce, body or {"n": nonce}).encode()


def fake_tx(sender: int, nonce: int, pad: int = 0) -> bytes:
    """An envelope with a dummy signature, for tests that inject a fake verifier."""
    tx = Transaction(CHAIN, "join", bytes([sender + 1]) * 32, nonce, {"p": b"x" * pad},
                     b"\x00" * 64)
    return tx.encode()


class Committed:
    """A stand-in for committed state: next nonce per sender, and a refusal list."""

    def __init__(self) -> None:
        self.nonces: dict[bytes, int] = {}
        self.refuse: set[bytes] = set()
        self.check_calls = 0

    def next_nonce(self, sender: bytes) -> int:
        return self.nonces.get(sender, 1)

    def check(self, tx: Transaction) -> tuple[str, str]:
        self.check_calls += 1
        if tx.hash in self.refuse:
            return "unknown_member", "sender is not a member"
        return "ok", ""

    def commit(self, txs: list[bytes]) -> None:
        for data in txs:
            tx = Transaction.decode(data)
            assert tx.nonce == self.next_nonce(tx.sender)
            self.nonces[tx.sender] = tx.nonce + 1


class CountingVerifier:
    def __init__(self, real: bool = True) -> None:
        self.calls: Counter[bytes] = Counter()
        self.real = real
        self.lock = threading.Lock()

    def __call__(self, tx: Transaction) -> bool:
        with self.lock:
            self.calls[tx.hash] += 1
        return tx.verify_signature() if self.real else True


def make_pool(config: MempoolConfig | None = None, real: bool = True):
    state = Committed()
    verifier = CountingVerifier(real)
    pool = Mempool(CHAIN, state.check, state.next_nonce, config, verify=verifier)
    return pool, state, verifier


def assert_rejected(result: AddResult, code: str, pool: Mempool, size: int) -> None:
    assert result.code == code, result
    assert not result.ok
    assert pool.size() == size


# ---- accepting -------------------------------------------------------------------------


def test_add_valid_transaction_is_ready_and_reapable() -> None:
    pool, _, _ = make_pool()
    data = signed(KEYS[0], 1)
    result = pool.add(data)
    assert result.ok and result.ready
    assert result.tx_hash == sha256(data)
    assert pool.size() == 1 and pool.bytes() == len(data)
    assert pool.has(sha256(data)) and pool.get(sha256(data)) == data
    assert pool.get(b"\x00" * 32) is None and not pool.has(b"\x00" * 32)
    assert pool.reap(10, 1 << 20) == [data]
    assert pool.size() == 1  # reaping does not remove


def test_future_nonce_waits_and_is_promoted_in_nonce_order() -> None:
    pool, _, _ = make_pool()
    tx2, tx3, tx1 = signed(KEYS[0], 2), signed(KEYS[0], 3), signed(KEYS[0], 1)
    other = signed(KEYS[1], 1)
    r2 = pool.add(tx2)
    assert r2.ok and not r2.ready and "waiting for nonce 1" in r2.reason
    assert pool.add(tx3).ok
    assert pool.add(other).ready
    assert pool.reap(10, 1 << 20) == [other]
    assert pool.ready_count() == 1
    assert pool.add(tx1).ready
    # tx2 and tx3 arrived before `other` but could not go before tx1.
    assert pool.reap(10, 1 << 20) == [other, tx1, tx2, tx3]
    assert pool.sender_nonces(KEYS[0].public_key.raw) == [1, 2, 3]


# ---- every rejection code --------------------------------------------------------------


def test_bad_encoding() -> None:
    pool, _, verifier = make_pool()
    assert_rejected(pool.add(b"\xc1garbage"), "bad_encoding", pool, 0)
    assert_rejected(pool.add("text"), "bad_encoding", pool, 0)  # type: ignore[arg-type]
    assert_rejected(pool.add(encoding.encode({"a": 1})), "bad_encoding", pool, 0)
    # A non-canonical encoding of a valid transaction (map keys out of order).
    tx = Transaction.decode(signed(KEYS[0], 1))
    import msgpack
    m = {**tx.unsigned_map(), "sig": tx.sig}
    noncanon = msgpack.packb(dict(reversed(list(m.items()))), use_bin_type=True)
    assert_rejected(pool.add(noncanon), "bad_encoding", pool, 0)
    assert sum(verifier.calls.values()) == 0


def test_envelope_field_errors_keep_their_code() -> None:
    pool, _, _ = make_pool()
    m = {"body": {}, "chain_id": CHAIN, "nonce": 0, "sender": b"\x01" * 32,
         "sig": b"\x00" * 64, "type": "join"}
    assert_rejected(pool.add(encoding.encode(m)), "bad_nonce", pool, 0)
    assert_rejected(pool.add(encoding.encode({**m, "nonce": 1, "sig": b"\x00"})),
                    "bad_signature", pool, 0)


def test_too_large() -> None:
    pool, _, _ = make_pool(MempoolConfig(max_tx_bytes=300))
    big = signed(KEYS[0], 1, {"blob": b"x" * 400})
    result = pool.add(big)
    assert_rejected(result, "too_large", pool, 0)
    assert result.tx_hash is None


def test_bad_chain_id() -> None:
    pool, _, verifier = make_pool()
    result = pool.add(signed(KEYS[0], 1, chain="other-chain"))
    assert_rejected(result, "bad_chain_id", pool, 0)
    assert sum(verifier.calls.values()) == 0  # refused before the expensive check


def test_bad_signature() -> None:
    pool, _, _ = make_pool()
    tx = Transaction.decode(signed(KEYS[0], 1))
    forged = Transaction(CHAIN, tx.type, KEYS[1].public_key.raw, 1, tx.body, tx.sig).encode()
    result = pool.add(forged)
    assert_rejected(result, "bad_signature", pool, 0)
    assert not pool.verified(result.tx_hash)
    wrong_sig = bytes([tx.sig[0] ^ 1]) + tx.sig[1:]
    tampered = Transaction(CHAIN, tx.type, tx.sender, 1, tx.body, wrong_sig).encode()
    assert_rejected(pool.add(tampered), "bad_signature", pool, 0)


def test_duplicate_of_pooled_transaction() -> None:
    pool, state, _ = make_pool()
    data = signed(KEYS[0], 1)
    assert pool.add(data).ok
    checks = state.check_calls
    assert_rejected(pool.add(data), "duplicate", pool, 1)
    assert state.check_calls == checks


def test_nonce_too_low() -> None:
    pool, state, _ = make_pool()
    state.nonces[KEYS[0].public_key.raw] = 5
    assert_rejected(pool.add(signed(KEYS[0], 4)), "nonce_too_low", pool, 0)
    assert pool.add(signed(KEYS[0], 5)).ready


def test_nonce_in_use() -> None:
    pool, _, _ = make_pool()
    assert pool.add(signed(KEYS[0], 1, {"v": 1})).ok
    assert_rejected(pool.add(signed(KEYS[0], 1, {"v": 2})), "nonce_in_use", pool, 1)


def test_nonce_gap_too_large() -> None:
    pool, _, _ = make_pool(MempoolConfig(max_nonce_gap=2))
    assert pool.add(signed(KEYS[0], 3)).ok  # 2 missing: 1, 2
    assert_rejected(pool.add(signed(KEYS[0], 5)), "nonce_gap_too_large", pool, 1)
    assert pool.add(signed(KEYS[0], 1)).ready
    # Now the run is 1; 3 waits; 2 missing is allowed, so nonce 5 (gap 3, 4 missing... )
    assert pool.add(signed(KEYS[0], 4)).ok  # usable nonce is 2, gap of 2 → allowed
    assert_rejected(pool.add(signed(KEYS[0], 6)), "nonce_gap_too_large", pool, 3)
    pool_zero, _, _ = make_pool(MempoolConfig(max_nonce_gap=0))
    assert_rejected(pool_zero.add(signed(KEYS[0], 2)), "nonce_gap_too_large", pool_zero, 0)


def test_sender_full() -> None:
    pool, _, _ = make_pool(MempoolConfig(max_per_sender=2))
    assert pool.add(signed(KEYS[0], 1)).ok
    assert pool.add(signed(KEYS[0], 2)).ok
    assert_rejected(pool.add(signed(KEYS[0], 3)), "sender_full", pool, 2)
    assert pool.add(signed(KEYS[1], 1)).ok


def test_mempool_full_by_count() -> None:
    pool, state, _ = make_pool(MempoolConfig(max_txs=2))
    assert pool.add(signed(KEYS[0], 1)).ok
    assert pool.add(signed(KEYS[1], 1)).ok
    result = pool.add(signed(KEYS[2], 1))
    assert_rejected(result, "mempool_full", pool, 2)
    # The refusal is not remembered as seen: the same tx gets in once there is room.
    committed = pool.reap(1, 1 << 20)
    state.commit(committed)
    pool.update([sha256(d) for d in committed])
    assert pool.add(signed(KEYS[2], 1)).ok


def test_mempool_full_by_bytes() -> None:
    one = len(signed(KEYS[0], 1))
    pool, _, _ = make_pool(MempoolConfig(max_bytes=2 * one + 10))
    assert pool.add(signed(KEYS[0], 1)).ok
    assert pool.add(signed(KEYS[1], 1)).ok
    assert_rejected(pool.add(signed(KEYS[2], 1)), "mempool_full", pool, 2)
    assert pool.bytes() <= 2 * one + 10


def test_checker_code_is_passed_through_and_changes_nothing() -> None:
    pool, state, _ = make_pool()
    data = signed(KEYS[0], 1)
    state.refuse.add(sha256(data))
    result = pool.add(data)
    assert result.code == "unknown_member" and result.reason == "sender is not a member"
    assert pool.size() == 0 and pool.bytes() == 0 and not pool.seen(sha256(data))
    state.refuse.clear()
    assert pool.add(data).ok


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        MempoolConfig(max_txs=0)
    with pytest.raises(ValueError):
        MempoolConfig(max_nonce_gap=-1)


# ---- reaping ---------------------------------------------------------------------------


def test_reap_respects_count_and_bytes_and_stops_at_first_misfit() -> None:
    pool, _, _ = make_pool(real=False)
    small = [fake_tx(s, 1) for s in range(3)]
    big = fake_tx(3, 1, pad=500)
    for data in (small[0], big, small[1], small[2]):
        assert pool.add(data).ok
    assert pool.reap(2, 1 << 20) == [small[0], big]
    assert pool.reap(10, len(small[0]) + 10) == [small[0]]  # big does not fit: stop there
    assert pool.reap(0, 1 << 20) == []
    assert pool.reap(10, 1 << 20) == [small[0], big, small[1], small[2]]


# ---- update after a block ------------------------------------------------------------


def test_update_evicts_committed_and_keeps_them_seen() -> None:
    pool, state, _ = make_pool()
    txs = [signed(KEYS[0], n) for n in (1, 2, 3)]
    for data in txs:
        assert pool.add(data).ok
    block = pool.reap(2, 1 << 20)
    state.commit(block)
    dropped = pool.update([sha256(d) for d in block])
    assert dropped == []
    assert pool.size() == 1 and pool.bytes() == len(txs[2])
    assert pool.reap(10, 1 << 20) == [txs[2]]
    assert_rejected(pool.add(txs[0]), "duplicate", pool, 1)


def test_update_drops_nonce_too_low_and_failing_check_and_demotes_after_gap() -> None:
    pool, state, _ = make_pool(MempoolConfig(max_nonce_gap=1))
    a = [signed(KEYS[0], n) for n in (1, 2, 3, 4)]
    b = [signed(KEYS[1], n) for n in (1, 2)]
    for data in a + b:
        assert pool.add(data).ok
    # Another node's block committed a different tx with KEYS[1]'s nonce 1, and
    # KEYS[0]'s nonce 2 now fails the application's check.
    state.nonces[KEYS[1].public_key.raw] = 2
    state.refuse.add(sha256(a[1]))
    dropped = pool.update([])
    assert set(dropped) == {sha256(b[0]), sha256(a[1]), sha256(a[3])}
    # a[2] (nonce 3) waits for nonce 2 again; a[3] was beyond the window (gap 1).
    assert pool.reap(10, 1 << 20) == [a[0], b[1]]
    assert pool.sender_nonces(KEYS[0].public_key.raw) == [1, 3]
    assert pool.size() == 3
    # A dropped transaction is forgotten by the seen-cache so it may be offered again.
    state.refuse.clear()
    assert pool.add(a[1]).ready
    assert pool.reap(10, 1 << 20) == [a[0], b[1], a[1], a[2]]


def test_update_promotes_when_committed_state_skips_ahead() -> None:
    pool, state, _ = make_pool()
    tx3 = signed(KEYS[0], 3)
    assert not pool.add(tx3).ready
    # Nonces 1 and 2 were committed from another node's mempool.
    state.nonces[KEYS[0].public_key.raw] = 3
    assert pool.update([]) == []
    assert pool.reap(10, 1 << 20) == [tx3]


def test_update_replaces_next_nonce_and_check() -> None:
    pool, _, _ = make_pool()
    data = signed(KEYS[0], 1)
    assert pool.add(data).ok
    dropped = pool.update([], next_nonce=lambda s: 1, check=lambda tx: ("closed", "no"))
    assert dropped == [sha256(data)] and pool.size() == 0 and pool.bytes() == 0
    assert pool.add(data).code == "closed"


# ---- signatures verified once ----------------------------------------------------------


def test_each_signature_is_verified_at_most_once() -> None:
    pool, state, verifier = make_pool()
    good = signed(KEYS[0], 1)
    tx = Transaction.decode(good)
    forged = Transaction(CHAIN, tx.type, KEYS[2].public_key.raw, 1, tx.body, tx.sig).encode()
    for _ in range(3):
        pool.add(good)
        assert pool.add(forged).code == "bad_signature"
    # Committed, then gossiped again: refused as duplicate, no verification.
    state.commit([good])
    pool.update([sha256(good)])
    assert pool.add(good).code == "duplicate"
    # The executor asks the cache, and check_signature does not verify again either.
    assert pool.verified(sha256(good)) and not pool.verified(sha256(forged))
    assert pool.check_signature(Transaction.decode(good))
    assert not pool.check_signature(Transaction.decode(forged))
    assert verifier.calls[sha256(good)] == 1 and verifier.calls[sha256(forged)] == 1


def test_precheck_then_add_checked_and_executor_path() -> None:
    pool, _, verifier = make_pool()
    data = signed(KEYS[0], 1)
    tx = pool.precheck(data)
    assert pool.verified(tx.hash)
    assert pool.add_checked(tx).ok
    # A block from another proposer brings a transaction this node never saw.
    unseen = Transaction.decode(signed(KEYS[1], 1))
    assert not pool.verified(unseen.hash)
    assert pool.check_signature(unseen) and pool.verified(unseen.hash)
    assert pool.add(unseen.encode()).ok  # late gossip of it: no second verification
    # add_checked straight away (no precheck) still verifies, once.
    direct = Transaction.decode(signed(KEYS[2], 1))
    assert pool.add_checked(direct).ok
    assert all(n == 1 for n in verifier.calls.values()) and len(verifier.calls) == 3


def test_precheck_raises_typed_rejection() -> None:
    pool, _, _ = make_pool()
    with pytest.raises(TxRejected) as info:
        pool.precheck(b"\x90")
    assert info.value.code == "bad_encoding"
    assert info.value.result().code == "bad_encoding"
    data = signed(KEYS[0], 1)
    assert pool.add(data).ok
    with pytest.raises(TxRejected) as info:
        pool.precheck(data)
    assert info.value.code == "duplicate" and info.value.tx_hash == sha256(data)


def test_concurrent_prechecks_verify_once() -> None:
    state = Committed()
    started = threading.Event()
    release = threading.Event()
    calls: list[bytes] = []

    def slow_verify(tx: Transaction) -> bool:
        calls.append(tx.hash)
        started.set()
        release.wait(timeout=10)
        return tx.verify_signature()

    pool = Mempool(CHAIN, state.check, state.next_nonce, verify=slow_verify)
    data = signed(KEYS[0], 1)
    results: list[Transaction] = []
    threads = [threading.Thread(target=lambda: results.append(pool.precheck(data)))
               for _ in range(4)]
    threads[0].start()
    assert started.wait(timeout=10)
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(timeout=10)
    assert len(results) == 4 and len(calls) == 1
    assert [pool.add_checked(tx).code for tx in results].count("ok") == 1


def test_verifier_failure_leaves_no_verdict() -> None:
    state = Committed()
    attempts = []

    def flaky(tx: Transaction) -> bool:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("boom")
        return tx.verify_signature()

    pool = Mempool(CHAIN, state.check, state.next_nonce, verify=flaky)
    data = signed(KEYS[0], 1)
    with pytest.raises(RuntimeError):
        pool.add(data)
    assert pool.size() == 0 and not pool.verified(sha256(data))
    assert pool.add(data).ok and len(attempts) == 2


def test_caches_are_bounded() -> None:
    pool, _, verifier = make_pool(
        MempoolConfig(seen_cache_size=2, verified_cache_size=2), real=False)
    txs = [fake_tx(s, 1) for s in range(4)]
    for data in txs:
        assert pool.add(data).ok
    hashes = [sha256(d) for d in txs]
    assert [pool.verified(h) for h in hashes] == [False, False, True, True]
    assert [pool.seen(h) for h in hashes] == [False, False, True, True]
    # Still a duplicate while pooled, even after the seen-cache forgot it.
    assert pool.add(txs[0]).code == "duplicate"
    assert sum(verifier.calls.values()) == 4


# ---- properties ------------------------------------------------------------------------

SENDERS = 3
# nonce = the sender's next usable nonce + offset (so mostly that nonce or a small gap;
# negative offsets hit nonce_in_use / nonce_too_low)
ADD = st.tuples(st.just("add"), st.integers(0, SENDERS - 1), st.integers(-3, 3),
                st.integers(0, 200))
OPS = st.lists(
    st.one_of(
        ADD, ADD, ADD,
        st.tuples(st.just("block"), st.integers(1, 8), st.integers(300, 3000)),
        st.tuples(st.just("refuse"), st.integers(0, SENDERS - 1), st.integers(0, 3)),
        # another node's block commits a sender's next nonce(s) with other transactions
        st.tuples(st.just("external"), st.integers(0, SENDERS - 1), st.integers(1, 3)),
    ),
    min_size=25,
    max_size=80,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, max_txs=st.integers(3, 30), max_bytes=st.integers(600, 6000),
       per_sender=st.integers(2, 8), gap=st.integers(0, 3), recheck_all=st.booleans())
def test_reap_keeps_nonce_order_and_caps_always_hold(
    ops: list[tuple], max_txs: int, max_bytes: int, per_sender: int, gap: int,
    recheck_all: bool,
) -> None:
    config = MempoolConfig(max_txs=max_txs, max_bytes=max_bytes, max_per_sender=per_sender,
                           max_nonce_gap=gap, recheck_all=recheck_all)
    pool, state, verifier = make_pool(config, real=False)

    model: dict[bytes, bytes] = {}  # what the pool should hold: hash -> bytes

    def check_invariants() -> None:
        assert pool.size() <= max_txs and pool.bytes() <= max_bytes
        assert pool.size() == len(model) and pool.bytes() == sum(map(len, model.values()))
        assert all(pool.get(h) == d for h, d in model.items())
        everything = pool.reap(10**6, 10**9)
        assert len(everything) == pool.ready_count()
        reaped: dict[bytes, list[int]] = {}
        for data in everything:
            tx = Transaction.decode(data)
            reaped.setdefault(tx.sender, []).append(tx.nonce)
        total = 0
        for s in range(SENDERS):
            sender = bytes([s + 1]) * 32
            nonces = pool.sender_nonces(sender)
            assert len(nonces) <= per_sender
            assert all(n >= state.next_nonce(sender) for n in nonces)
            # ready = exactly the contiguous run from the committed next nonce
            run = []
            while state.next_nonce(sender) + len(run) in nonces:
                run.append(state.next_nonce(sender) + len(run))
            assert reaped.get(sender, []) == run
            total += len(nonces)
        assert total == pool.size()

    for op in ops:
        if op[0] == "add":
            _, s, offset, pad = op
            sender = bytes([s + 1]) * 32
            waiting = set(pool.sender_nonces(sender))
            base = state.next_nonce(sender)
            while base in waiting:
                base += 1
            nonce = max(1, base + offset)
            data = fake_tx(s, nonce, pad)
            before = (pool.size(), pool.bytes())
            result = pool.add(data)
            if result.ok:
                model[result.tx_hash] = data
            else:
                assert (pool.size(), pool.bytes()) == before
        elif op[0] == "refuse":
            sender = bytes([op[1] + 1]) * 32
            state.refuse.add(sha256(fake_tx(op[1], state.next_nonce(sender) + op[2])))
        elif op[0] == "external":
            sender = bytes([op[1] + 1]) * 32
            state.nonces[sender] = state.next_nonce(sender) + op[2]
            for dropped in pool.update([]):
                del model[dropped]
        else:
            _, n, nbytes = op
            block = pool.reap(n, nbytes)
            assert len(block) <= n and sum(map(len, block)) <= nbytes
            # Each sender's nonces are contiguous from its committed next nonce.
            expected = {}
            for data in block:
                tx = Transaction.decode(data)
                want = expected.get(tx.sender, state.next_nonce(tx.sender))
                assert tx.nonce == want
                expected[tx.sender] = want + 1
            state.commit(block)
            for dropped in pool.update([sha256(d) for d in block]):
                del model[dropped]
            for data in block:
                del model[sha256(data)]
        check_invariants()
    assert all(n == 1 for n in verifier.calls.values())


def test_nonce_order_survives_committed_state_moving_backwards() -> None:
    # Defensive: if next_nonce ever reports a lower nonce than the pool assumed (it should
    # not, finality is instant), a lower nonce that becomes ready still goes first.
    pool, state, _ = make_pool()
    sender = KEYS[0].public_key.raw
    state.nonces[sender] = 3
    tx3, tx4 = signed(KEYS[0], 3), signed(KEYS[0], 4)
    assert pool.add(tx3).ready and pool.add(tx4).ready
    state.nonces[sender] = 2
    tx2 = signed(KEYS[0], 2)
    assert pool.add(tx2).ready
    assert pool.reap(10, 1 << 20) == [tx2, tx3, tx4]


def test_recheck_only_moved_senders_when_configured() -> None:
    pool, state, _ = make_pool(MempoolConfig(recheck_all=False))
    a1, a2, b1 = signed(KEYS[0], 1), signed(KEYS[0], 2), signed(KEYS[1], 1)
    for data in (a1, a2, b1):
        assert pool.add(data).ok
    state.refuse.update({sha256(a2), sha256(b1)})
    calls = state.check_calls
    state.commit([a1])
    # KEYS[0]'s nonce moved: a2 is re-checked and dropped; KEYS[1] did not move: kept.
    assert pool.update([sha256(a1)]) == [sha256(a2)]
    assert state.check_calls == calls + 1
    assert pool.reap(10, 1 << 20) == [b1]
    # With the default, every waiting transaction is re-checked.
    pool_all, state_all, _ = make_pool()
    assert pool_all.add(b1).ok
    state_all.refuse.add(sha256(b1))
    assert pool_all.update([]) == [sha256(b1)]


# ---- with the real application's check_tx ---------------------------------------------


def test_checker_nonce_verdict_is_ignored_for_queued_transactions() -> None:
    state = Committed()

    def strict(tx: Transaction) -> tuple[str, str]:
        # like contracts' check_tx: judges the nonce against committed state, last
        if tx.nonce != state.next_nonce(tx.sender):
            return "bad_nonce", "not the next nonce"
        return "ok", ""

    pool = Mempool(CHAIN, strict, state.next_nonce)
    assert pool.add(signed(KEYS[0], 1)).ready
    assert pool.add(signed(KEYS[0], 2)).ready
    assert pool.add(signed(KEYS[0], 4)).ok  # waiting for 3
    assert pool.update([]) == []  # re-check keeps the queued ones too
    assert pool.size() == 3
    off = Mempool(CHAIN, strict, state.next_nonce, MempoolConfig(checker_nonce_code=None))
    assert off.add(signed(KEYS[0], 1)).ok
    assert off.add(signed(KEYS[0], 2)).code == "bad_nonce"


def test_with_the_application_check_tx() -> None:
    from tests.test_contracts_harness import (
        CHAIN_ID,
        REGISTRAR,
        Harness,
        member_key,
        register_body,
    )

    h = Harness()
    pool = Mempool(CHAIN_ID, h.app.check_tx, h.app.next_nonce)
    reg = REGISTRAR.public_key.raw
    txs = [Transaction.create(REGISTRAR, CHAIN_ID, "register_member", n,
                              register_body(member_key(n), n)).encode() for n in (1, 2, 3)]
    for data in reversed(txs):
        assert pool.add(data).ok
    # A member key may not register members: the application's code comes through.
    intruder = Transaction.create(member_key(9), CHAIN_ID, "register_member", 1,
                                  register_body(member_key(10), 10)).encode()
    assert pool.add(intruder).code == "not_permitted"
    block = pool.reap(10, 1 << 20)
    assert block == txs
    with h.block(h.g0 + 1000):
        receipts = [h.app.deliver_tx(Transaction.decode(d)) for d in block]
    assert [r.code for r in receipts] == ["ok"] * 3
    assert h.app.next_nonce(reg) == 4
    assert pool.update([sha256(d) for d in block]) == []
    assert pool.size() == 0 and pool.add(txs[0]).code == "duplicate"
