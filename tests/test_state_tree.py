"""The authenticated state tree: roots against an independent reference, proofs,
all-or-nothing transactions through ``Overlay``, persistence through both KV backends,
and the fixed proof vector in tests/vectors/.

Regenerate the vector file (only if the format changes on purpose) with
``python -m tests.test_state_tree --write-vectors``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import tree as tree_mod
from contracts.kv import MemoryKV
from contracts.memstate import Overlay
from contracts.proof import EMPTY, Proof, ProofError, verify_proof
from contracts.tree import StateError, StateTree, node_record_ok
from node.store.kvstore import LevelKV

VECTORS = Path(__file__).parent / "vectors" / "state_proof.json"


@pytest.fixture(autouse=True, params=["native", "python"])
def implementation(request, monkeypatch) -> str:
    """Every test here runs twice: with the C commit (where built) and with the pure-Python
    reference that tree.py falls back to."""
    if request.param == "python":
        monkeypatch.setattr(tree_mod, "_treecore", None)
    elif tree_mod._treecore is None:
        pytest.skip("the native core is not built (tests/test_tree_native.py says so)")
    return request.param


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_root(items: dict[bytes, bytes]) -> bytes:
    """Reference root, computed from scratch straight from the definition in docs/state.md."""

    def bit_of(h: bytes, i: int) -> int:
        return (h[i // 8] >> (7 - i % 8)) & 1

    def build(depth: int, leaves: list[tuple[bytes, bytes]]) -> bytes:
        if not leaves:
            return bytes(32)
        if len(leaves) == 1:
            return leaves[0][1]
        left = [x for x in leaves if not bit_of(x[0], depth)]
        right = [x for x in leaves if bit_of(x[0], depth)]
        return H(b"\x01" + build(depth + 1, left) + build(depth + 1, right))

    leaves = [(H(k), H(b"\x00" + H(k) + H(v))) for k, v in items.items()]
    return build(0, leaves)


def commit(tree: StateTree, kv) -> bytes:
    batch = kv.batch()
    root = tree.commit(batch)
    kv.write(batch)
    return root


def fresh(items: dict[bytes, bytes]) -> StateTree:
    kv = MemoryKV()
    tree = StateTree(kv)
    for k, v in items.items():
        tree.set(k, v)
    commit(tree, kv)
    return tree


# -- roots and reads --------------------------------------------------------------------


def test_empty_tree() -> None:
    tree = StateTree(MemoryKV())
    assert tree.root() == EMPTY == ref_root({})
    assert tree.get(b"k") is None
    proof = tree.prove(b"k")
    assert proof.depth == 0 and proof.leaf is None
    assert verify_proof(EMPTY, b"k", None, proof)
    assert not verify_proof(EMPTY, b"k", b"v", proof)


def test_single_key_root_is_its_leaf() -> None:
    tree = fresh({b"k": b"v"})
    assert tree.root() == H(b"\x00" + H(b"k") + H(b"v")) == ref_root({b"k": b"v"})
    assert verify_proof(tree.root(), b"k", b"v", tree.prove(b"k"))
    assert verify_proof(tree.root(), b"other", None, tree.prove(b"other"))


def test_root_independent_of_insertion_order_and_batching() -> None:
    items = {b"key%d" % i: b"value%d" % i for i in range(300)}
    a = fresh(items)
    kv = MemoryKV()
    b = StateTree(kv)
    for i, (k, v) in enumerate(reversed(list(items.items()))):
        b.set(k, v)
        if i % 37 == 0:
            commit(b, kv)
    commit(b, kv)
    assert a.root() == b.root() == ref_root(items)


def test_uncommitted_writes_are_visible_but_not_in_root() -> None:
    kv = MemoryKV()
    tree = StateTree(kv)
    tree.set(b"a", b"1")
    assert tree.get(b"a") == b"1"
    assert tree.get_committed(b"a") is None
    assert tree.root() == EMPTY
    assert tree.dirty == 1
    tree.discard()
    assert tree.get(b"a") is None
    assert commit(tree, kv) == EMPTY


def test_delete_collapses_back_to_same_root() -> None:
    base = {b"m%d" % i: b"x" * (i % 5) for i in range(64)}
    kv = MemoryKV()
    tree = StateTree(kv)
    for k, v in base.items():
        tree.set(k, v)
    r0 = commit(tree, kv)
    for i in range(200):
        tree.set(b"extra%d" % i, b"e")
    commit(tree, kv)
    for i in range(200):
        tree.delete(b"extra%d" % i)
    assert commit(tree, kv) == r0
    for k in list(base):
        tree.delete(k)
    assert commit(tree, kv) == EMPTY


def test_reopen_latest_and_historical_roots() -> None:
    kv = MemoryKV()
    tree = StateTree(kv)
    tree.set(b"a", b"1")
    tree.set(b"b", b"2")
    r1 = commit(tree, kv)
    tree.set(b"a", b"changed")
    tree.delete(b"b")
    tree.set(b"c", b"3")
    r2 = commit(tree, kv)
    assert StateTree.stored_root(kv) == r2
    latest = StateTree(kv, r2)
    old = StateTree(kv, r1)
    assert [latest.get(k) for k in (b"a", b"b", b"c")] == [b"changed", None, b"3"]
    assert [old.get(k) for k in (b"a", b"b", b"c")] == [b"1", b"2", None]
    assert verify_proof(r1, b"b", b"2", old.prove(b"b"))
    assert verify_proof(r2, b"b", None, latest.prove(b"b"))
    # writing on top of a historical root works and leaves the latest flat copy alone
    old.set(b"d", b"4")
    batch = kv.batch()
    r3 = old.commit(batch)
    kv.write(batch)
    assert r3 == ref_root({b"a": b"1", b"b": b"2", b"d": b"4"})
    assert StateTree(kv, r2).get(b"a") == b"changed"
    assert StateTree(kv, r3).get(b"d") == b"4"


def test_unknown_root_is_refused() -> None:
    with pytest.raises(StateError):
        StateTree(MemoryKV(), H(b"nothing"))
    with pytest.raises(StateError):
        StateTree(MemoryKV(), b"short")


def test_bad_types_are_refused_and_change_nothing() -> None:
    tree = StateTree(MemoryKV())
    for bad in ("text", 3, None):
        with pytest.raises(StateError):
            tree.set(bad, b"v")  # type: ignore[arg-type]
        with pytest.raises(StateError):
            tree.set(b"k", bad)  # type: ignore[arg-type]
        with pytest.raises(StateError):
            tree.delete(bad)  # type: ignore[arg-type]
        with pytest.raises(StateError):
            tree.prove(bad)  # type: ignore[arg-type]
    for bad in ("text", bytearray(b"k"), ["k"]):
        with pytest.raises(StateError):
            tree.get(bad)  # type: ignore[arg-type]
        with pytest.raises(StateError):
            tree.get_committed(bad)  # type: ignore[arg-type]
    assert tree.dirty == 0


def test_reads_see_a_committed_but_unwritten_batch() -> None:
    kv = MemoryKV()
    tree = StateTree(kv, node_cache=16, value_cache=16)
    for i in range(100):
        tree.set(b"k%d" % i, b"v%d" % i)
    batch = kv.batch()
    root = tree.commit(batch)
    assert tree.get(b"k5") == b"v5"
    assert verify_proof(root, b"k7", b"v7", tree.prove(b"k7"))
    tree.set(b"k100", b"v100")
    batch2 = kv.batch()
    root2 = tree.commit(batch2)  # a second commit may run before the first write
    assert tree.get(b"k99") == b"v99" and tree.get(b"k100") == b"v100"
    assert verify_proof(root2, b"k1", b"v1", tree.prove(b"k1"))
    tree.set(b"k101", b"v101")
    with pytest.raises(StateError):
        tree.commit(kv.batch())  # but not a third
    assert tree.root() == root2 and tree.get(b"k101") == b"v101"
    kv.write(batch)
    kv.write(batch2)
    batch3 = kv.batch()
    tree.commit(batch3)
    kv.write(batch3)
    reopened = StateTree(kv, tree.root())
    assert reopened.get(b"k100") == b"v100" and reopened.get(b"k3") == b"v3"


# -- all-or-nothing transactions ----------------------------------------------------------


def test_overlay_makes_a_transaction_all_or_nothing_over_the_tree() -> None:
    """The rules apply each transaction through an ``Overlay`` over the tree
    (contracts/app.py): its writes reach the tree only on ``commit()``, so a rejected
    transaction leaves no trace and an accepted one lands whole."""
    kv = MemoryKV()
    tree = StateTree(kv)
    tree.set(b"a", b"0")
    commit(tree, kv)
    tree.set(b"b", b"block")  # written by an earlier transaction of the block
    rejected = Overlay(tree)
    rejected.set(b"a", b"1")
    rejected.delete(b"b")
    rejected.set(b"c", b"new")
    assert (rejected.get(b"a"), rejected.get(b"b"), rejected.get(b"c")) == (b"1", None, b"new")
    assert (tree.get(b"a"), tree.get(b"b"), tree.get(b"c")) == (b"0", b"block", None)
    assert tree.dirty == 1  # dropping the overlay is the whole rollback
    accepted = Overlay(tree)
    accepted.set(b"d", b"ok")
    accepted.set(b"a", b"2")
    accepted.set(b"a", b"0")  # the last write of a key wins
    accepted.delete(b"b")
    assert tree.get(b"d") is None
    accepted.commit()
    assert (tree.get(b"a"), tree.get(b"b"), tree.get(b"d")) == (b"0", None, b"ok")
    assert commit(tree, kv) == ref_root({b"a": b"0", b"d": b"ok"})


# -- proofs -----------------------------------------------------------------------------


def test_proofs_for_every_key_and_absent_keys() -> None:
    items = {b"k%d" % i: b"v%d" % i for i in range(500)}
    tree = fresh(items)
    root = tree.root()
    for k, v in list(items.items())[:100]:
        proof = Proof.decode(tree.prove(k).encode())
        assert verify_proof(root, k, v, proof)
        assert not verify_proof(root, k, v + b"x", proof)
        assert not verify_proof(root, k, None, proof)
        assert not verify_proof(H(b"other root"), k, v, proof)
    kinds = set()
    for i in range(100):
        k = b"absent%d" % i
        proof = Proof.decode(tree.prove(k).encode())
        kinds.add(proof.leaf is None)
        assert verify_proof(root, k, None, proof)
        assert not verify_proof(root, k, b"", proof)
    assert kinds == {True, False}  # both kinds of non-inclusion were exercised


def test_a_proof_does_not_transfer_to_another_key() -> None:
    items = {b"k%d" % i: b"v" for i in range(50)}
    tree = fresh(items)
    proof = tree.prove(b"k1")
    assert not verify_proof(tree.root(), b"k2", b"v", proof)
    # a leaf that ends another key's path is no evidence of this key's absence elsewhere
    assert not verify_proof(tree.root(), b"k2", None, proof)


def test_tampered_proofs_fail() -> None:
    tree = fresh({b"k%d" % i: b"v%d" % i for i in range(64)})
    root = tree.root()
    proof = tree.prove(b"k9")
    sibs = list(proof.siblings)
    for i in range(len(sibs)):
        bad = sibs.copy()
        bad[i] = H(bad[i])
        assert not verify_proof(root, b"k9", b"v9", Proof(tuple(bad), proof.leaf))
    assert not verify_proof(root, b"k9", b"v9", Proof(proof.siblings[1:], proof.leaf))
    assert not verify_proof(root, b"k9", b"v9", Proof(proof.siblings + (EMPTY,), proof.leaf))
    assert not verify_proof(root, b"k9", b"v9", Proof(proof.siblings, None))
    assert not verify_proof(b"short", b"k9", b"v9", proof)
    with pytest.raises(ProofError):
        verify_proof(root, "k9", b"v9", proof)  # type: ignore[arg-type]


def test_proof_decode_rejects_malformed() -> None:
    tree = fresh({b"k%d" % i: b"v" for i in range(40)})
    good = tree.prove(b"k3").encode()
    assert Proof.decode(good).encode() == good
    from chain import encoding

    obj = encoding.decode(good)
    cases = [
        b"",
        b"\xc1",
        good + b"\x00",
        encoding.encode({**obj, "depth": obj["depth"] + 1}),
        encoding.encode({**obj, "bitmap": obj["bitmap"] + b"\x00"}),
        encoding.encode({**obj, "siblings": obj["siblings"][:-1]}),
        encoding.encode({**obj, "siblings": [EMPTY] + obj["siblings"][1:]}),
        encoding.encode({**obj, "leaf": [b"x" * 31, obj["leaf"][1]]}),
        encoding.encode({**obj, "leaf": b"\x00" * 64}),
        encoding.encode({**obj, "extra": 1}),
        encoding.encode([1, 2]),
    ]
    for data in cases:
        with pytest.raises(ProofError):
            Proof.decode(data)
    # bits beyond depth
    depth = obj["depth"]
    if depth % 8:
        bm = bytearray(obj["bitmap"])
        bm[-1] |= 1
        with pytest.raises(ProofError):
            Proof.decode(encoding.encode({**obj, "bitmap": bytes(bm)}))


# -- property tests against a dict model, on both backends -------------------------------

_keys = st.binary(min_size=0, max_size=3)
_op = st.tuples(_keys, st.one_of(st.none(), st.binary(max_size=4)), st.booleans())


@settings(max_examples=120, deadline=None)
@given(ops=st.lists(_op, max_size=60), probes=st.lists(_keys, max_size=8))
def test_matches_model(ops, probes) -> None:
    kv = MemoryKV()
    tree = StateTree(kv, node_cache=32, value_cache=16)
    model: dict[bytes, bytes] = {}
    for key, value, do_commit in ops:
        if value is None:
            tree.delete(key)
            model.pop(key, None)
        else:
            tree.set(key, value)
            model[key] = value
        assert tree.get(key) == model.get(key)
        if do_commit:
            assert commit(tree, kv) == ref_root(model)
    root = commit(tree, kv)
    assert root == ref_root(model)
    reopened = StateTree(kv, root)
    for key in list(model)[:10] + probes:
        value = model.get(key)
        assert reopened.get(key) == value
        assert verify_proof(root, key, value, Proof.decode(reopened.prove(key).encode()))


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=40))
def test_leveldb_backend_gives_same_roots(tmp_path_factory, ops) -> None:
    db = LevelKV(tmp_path_factory.mktemp("state"))
    try:
        state = db.prefixed(b"state/")
        tree = StateTree(state)
        mem_kv = MemoryKV()
        mem = StateTree(mem_kv)
        for key, value, do_commit in ops:
            for t in (tree, mem):
                if value is None:
                    t.delete(key)
                else:
                    t.set(key, value)
            if do_commit:
                batch = db.batch()  # the node's batch: spans prefixes
                batch.prefixed(b"blocks/").put(b"1", b"block")
                assert tree.commit(batch) == commit(mem, mem_kv)
                db.write(batch, sync=True)
        batch = db.batch()
        root = tree.commit(batch)
        db.write(batch)
        assert root == commit(mem, mem_kv)
        again = StateTree(db.prefixed(b"state/"), root)
        for key, _, _ in ops:
            assert again.get(key) == mem.get(key)
    finally:
        db.close()


# -- many keys: several groups deep ------------------------------------------------------


def _check_history(kv, history: list[tuple[bytes, dict[bytes, bytes]]], probes: list[bytes]):
    """Every committed root reopens, reads and proves what the model held then."""
    for root, model in history:
        tree = StateTree(kv, root, node_cache=16, value_cache=16)
        for key in probes:
            value = model.get(key)
            assert tree.get(key) == value
            assert verify_proof(root, key, value, Proof.decode(tree.prove(key).encode()))


def _check_records(kv) -> None:
    n = 0
    for k, rec in kv.iterate(b"n"):
        assert len(k) == 37 and node_record_ok(k[-32:], rec), k.hex()
        n += 1
    assert n


def test_large_random_history_matches_reference() -> None:
    """Thousands of keys (paths five groups deep), batches from one key to most of the
    tree, inserts, rewrites and deletes, with small caches so records are re-read."""
    import random

    rnd = random.Random(7)
    kv = MemoryKV()
    tree = StateTree(kv, node_cache=64, value_cache=64)
    model: dict[bytes, bytes] = {}
    history = []
    keyspace = 4000
    for batch in (1, 2000, 1, 3, 40, 1, 700, 2, 1500, 1, 5):
        for _ in range(batch):
            key = b"key-%d" % rnd.randrange(keyspace)
            if model and rnd.random() < 0.35:
                tree.delete(key)
                model.pop(key, None)
            else:
                value = b"value-%d" % rnd.randrange(10**9)
                tree.set(key, value)
                model[key] = value
        root = commit(tree, kv)
        assert root == ref_root(model)
        history.append((root, dict(model)))
        if rnd.random() < 0.5:  # a restarted node continues from the stored root
            tree = StateTree(kv, root, node_cache=64, value_cache=64)
    # delete everything in two steps: the tree collapses back to EMPTY
    keys = sorted(model)
    for key in keys[: len(keys) // 2]:
        tree.delete(key)
        del model[key]
    assert commit(tree, kv) == ref_root(model)
    history.append((tree.root(), dict(model)))
    for key in keys[len(keys) // 2 :]:
        tree.delete(key)
    assert commit(tree, kv) == EMPTY
    probes = [b"key-%d" % rnd.randrange(keyspace) for _ in range(25)] + [b"never"]
    _check_history(kv, rnd.sample(history, 4), probes)
    _check_records(kv)


def _deep_pair(n: int = 20000) -> tuple[bytes, bytes, int]:
    """Two keys whose hashes share the longest prefix among ``n`` candidates (about
    2·log2(n) ≈ 28 bits: their leaves sit seven groups deep) and its length in bits."""
    hashed = sorted((H(b"deep-%d" % i), b"deep-%d" % i) for i in range(n))
    best = (-1, b"", b"")
    for (ha, ka), (hb, kb) in zip(hashed, hashed[1:], strict=False):
        shared = 256 - (int.from_bytes(ha, "big") ^ int.from_bytes(hb, "big")).bit_length()
        if shared > best[0]:
            best = (shared, ka, kb)
    return best[1], best[2], best[0]


def test_leaves_move_down_and_up_across_groups() -> None:
    """Two keys sharing ~28 bits hang under a chain of one-child inner nodes through
    several groups; adding and removing them moves leaves down into new groups and back
    up again, one key at a time and in batches."""
    a, b, shared = _deep_pair()
    assert shared >= 20
    kv = MemoryKV()
    tree = StateTree(kv, node_cache=16, value_cache=16)
    base = {b"other-%d" % i: b"o" for i in range(40)}
    model = dict(base)
    for k, v in base.items():
        tree.set(k, v)
    history = [(commit(tree, kv), dict(model))]
    steps = [[(a, b"A")], [(b, b"B")], [(a, None)], [(a, b"A2"), (b, None)],
             [(b, b"B2")], [(a, None), (b, None)], [(a, b"A3"), (b, b"B3")], [(b, None)]]
    for step in steps:
        for key, value in step:
            if value is None:
                tree.delete(key)
                model.pop(key, None)
            else:
                tree.set(key, value)
                model[key] = value
        root = commit(tree, kv)
        assert root == ref_root(model)
        history.append((root, dict(model)))
    assert history[-1][0] == ref_root({**base, a: b"A3"})
    _check_history(kv, history, [a, b, b"other-3", b"absent"])
    # both keys present: the proof of one ends at its leaf below a long chain
    both = next(root for root, m in history if a in m and b in m)
    assert StateTree(kv, both).prove(a).depth > shared
    _check_records(kv)


def test_group_and_leaf_records_are_as_documented() -> None:
    """docs/state.md §3 byte for byte, for two keys that differ in their first bit: one
    group at the root holding both leaves in slots 2 and 3."""
    k0 = next(b"doc-%d" % i for i in range(100) if H(b"doc-%d" % i)[0] < 0x80)
    k1 = next(b"doc-%d" % i for i in range(100) if H(b"doc-%d" % i)[0] >= 0x80)
    kv = MemoryKV()
    tree = StateTree(kv)
    tree.set(k0, b"zero")
    tree.set(k1, b"one")
    root = commit(tree, kv)
    l0 = H(b"\x00" + H(k0) + H(b"zero"))
    l1 = H(b"\x00" + H(k1) + H(b"one"))
    assert root == H(b"\x01" + l0 + l1)
    slots = (1 << 2) | (1 << 3)
    assert kv.get(b"n" + bytes(4) + root) == (
        b"\x02" + slots.to_bytes(4, "big") + slots.to_bytes(4, "big") + l0 + l1
        + H(k0) + H(k1))
    assert kv.get(b"n" + H(k0)[:4] + l0) == b"\x00" + H(k0) + H(b"zero") + b"zero"
    assert kv.get(b"n" + H(k1)[:4] + l1) == b"\x00" + H(k1) + H(b"one") + b"one"
    assert kv.get(b"r" + root) == b"\x01"
    assert kv.get(b"v" + k0) == b"zero" and kv.get(b"m") == root
    assert sorted(k[:1] for k, _ in kv.iterate()) == [b"m", b"n", b"n", b"n", b"r", b"v", b"v"]
    tree.delete(k1)
    single = commit(tree, kv)
    assert single == l0 and kv.get(b"r" + l0) == b"\x00" + H(k0)


def test_damaged_records_are_detected() -> None:
    kv = MemoryKV()
    tree = StateTree(kv)
    for i in range(300):
        tree.set(b"k%d" % i, b"v%d" % i)
    root = commit(tree, kv)
    records = dict(kv.iterate(b"n"))
    group_key = b"n" + bytes(4) + root
    group = records[group_key]
    leaf_key, leaf = next((k, v) for k, v in records.items() if v[0] == 0)
    assert node_record_ok(root, group) and node_record_ok(leaf_key[-32:], leaf)
    flipped_hash = group[:20] + bytes([group[20] ^ 1]) + group[21:]
    bad_masks = group[:4] + bytes([group[4] ^ 0x10]) + group[5:]
    for bad in (flipped_hash, bad_masks, group[:-1], group + b"\x00", b"", b"\x07" + group[1:]):
        assert not node_record_ok(root, bad)
    assert not node_record_ok(leaf_key[-32:], leaf[:-1] + bytes([leaf[-1] ^ 1]))
    assert not node_record_ok(H(b"elsewhere"), group)
    # a malformed group makes reads at that root fail loudly, not answer wrongly
    batch = kv.batch()
    batch.put(group_key, group[:-1])
    kv.write(batch)
    with pytest.raises(StateError):
        StateTree(kv, root, node_cache=16).prove(b"k1")


# -- the fixed vector -------------------------------------------------------------------


def build_vectors() -> dict:
    """A small tree and proofs of each kind, all derived from fixed inputs."""
    items = {b"member/%04d" % i: b"record-%d" % (i * i) for i in range(1, 13)}
    tree = fresh(items)
    root = tree.root()

    def case(key: bytes, value: bytes | None, note: str) -> dict:
        proof = tree.prove(key)
        assert verify_proof(root, key, value, proof)
        return {
            "note": note,
            "key": key.hex(),
            "value": None if value is None else value.hex(),
            "proof": proof.encode().hex(),
            "valid": True,
        }

    cases = [
        case(b"member/0001", items[b"member/0001"], "inclusion"),
        case(b"member/0007", items[b"member/0007"], "inclusion"),
    ]
    found = {}
    for i in range(1000):
        key = b"absent/%d" % i
        kind = "empty" if tree.prove(key).leaf is None else "leaf"
        found.setdefault(kind, key)
        if len(found) == 2:
            break
    cases.append(case(found["empty"], None, "non-inclusion: path ends at an empty subtree"))
    cases.append(case(found["leaf"], None, "non-inclusion: path ends at another key's leaf"))
    wrong = dict(cases[0], note="wrong value for an inclusion proof", valid=False)
    wrong["value"] = b"forged".hex()
    cases.append(wrong)
    absent = dict(cases[1], note="inclusion proof presented as non-inclusion", valid=False)
    absent["value"] = None
    cases.append(absent)
    return {
        "description": "state tree proofs (docs/state.md); root over the listed items",
        "items": {k.hex(): v.hex() for k, v in items.items()},
        "root": root.hex(),
        "cases": cases,
    }


def test_vector_file_matches_and_verifies() -> None:
    stored = json.loads(VECTORS.read_text())
    assert stored == build_vectors()
    items = {bytes.fromhex(k): bytes.fromhex(v) for k, v in stored["items"].items()}
    root = bytes.fromhex(stored["root"])
    assert ref_root(items) == root
    for c in stored["cases"]:
        value = None if c["value"] is None else bytes.fromhex(c["value"])
        proof = Proof.decode(bytes.fromhex(c["proof"]))
        assert verify_proof(root, bytes.fromhex(c["key"]), value, proof) is c["valid"]


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-vectors"]:
        VECTORS.parent.mkdir(exist_ok=True)
        VECTORS.write_text(json.dumps(build_vectors(), indent=2) + "\n")
        print(f"wrote {VECTORS}")
    else:
        sys.exit("usage: python -m tests.test_state_tree --write-vectors")
