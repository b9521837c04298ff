"""Pruning the state tree (``StateTree(..., keep=K)``): after every commit exactly the last K
roots are readable with every value they held, the store holds no record that only older
roots need (no leak), older roots are refused as unknown, content that comes back (a value
set back, a state repeated) survives, a reopened tree carries on where the last one
stopped, and the C and Python commits leave byte-identical stores."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import tree as tree_mod
from contracts.kv import MemoryKV
from contracts.proof import EMPTY, Proof, verify_proof
from contracts.tree import StateError, StateTree

# test_tree_native.py fails the run when the C core is missing; here both impls run if built
IMPLS = [False] + ([True] if tree_mod.NATIVE_AVAILABLE else [])

KEYS = [b"k%d" % i for i in range(24)]
VALUES = [b"a", b"b", b"c" * 40]


def reachable(kv: MemoryKV, root: bytes) -> set[bytes]:
    """Every node record key (relative to the tree's view) that ``root`` references."""
    if root == EMPTY:
        return set()
    desc = kv.get(tree_mod.ROOT_PREFIX + root)
    assert desc is not None, "a kept root lost its descriptor"
    if desc[0] == 0:
        return {tree_mod.NODE_PREFIX + desc[1:5] + root}
    out: set[bytes] = set()
    stack = [(root, bytes(4), 0)]
    while stack:
        h, pos, depth = stack.pop()
        key = tree_mod.NODE_PREFIX + pos + h
        rec = kv.get(key)
        assert rec is not None, f"a kept root needs the pruned group {h.hex()}"
        out.add(key)
        g = tree_mod._decode(rec, h)
        for j in range(2, tree_mod.SLOTS):
            if g.s[j] == EMPTY:
                continue
            if g.k[j] is not None:
                leaf = tree_mod.NODE_PREFIX + g.k[j][:4] + g.s[j]
                assert kv.get(leaf) is not None, "a kept root needs a pruned leaf"
                out.add(leaf)
            elif j >= tree_mod.EDGE:
                nib = j - tree_mod.EDGE
                if depth + 4 <= 32:
                    cpos = (int.from_bytes(pos, "big") | nib << (28 - depth)).to_bytes(4, "big")
                else:
                    cpos = pos
                stack.append((g.s[j], cpos, depth + 4))
    return out


def stored(kv: MemoryKV, prefix: bytes) -> set[bytes]:
    return {k for k, _ in kv.iterate(prefix)}


def run(history: list[list[tuple[int, int | None]]], keep: int, native: bool,
        reopen_at: set[int]) -> tuple[MemoryKV, list[tuple[bytes, dict]]]:
    kv = MemoryKV()
    tree = StateTree(kv, native=native, keep=keep)
    model: dict[bytes, bytes] = {}
    versions: list[tuple[bytes, dict]] = []
    for step, writes in enumerate(history):
        if step in reopen_at:
            tree = StateTree(kv, tree.root(), native=native, keep=keep)
        for ki, vi in writes:
            key = KEYS[ki]
            if vi is None:
                tree.delete(key)
                model.pop(key, None)
            else:
                tree.set(key, VALUES[vi])
                model[key] = VALUES[vi]
        batch = kv.batch()
        root = tree.commit(batch)
        kv.write(batch)
        versions.append((root, dict(model)))
        check(kv, versions, keep)
    return kv, versions


def check(kv: MemoryKV, versions: list[tuple[bytes, dict]], keep: int) -> None:
    kept = versions[-keep:]
    kept_roots = {root for root, _ in kept}
    need: set[bytes] = set()
    for root, model in kept:
        need |= reachable(kv, root)
        view = StateTree(kv, root)
        for key in KEYS:
            assert view.get(key) == model.get(key)
        key = KEYS[len(model) % len(KEYS)]
        assert verify_proof(root, key, model.get(key),
                            Proof.decode(view.prove(key).encode()))
    assert stored(kv, tree_mod.NODE_PREFIX) == need  # nothing missing, nothing leaked
    assert stored(kv, tree_mod.ROOT_PREFIX) == {
        tree_mod.ROOT_PREFIX + r for r in kept_roots if r != EMPTY}
    assert len(stored(kv, tree_mod.STALE_PREFIX)) <= keep
    for root, _ in versions[:-keep]:
        if root not in kept_roots and root != EMPTY:
            with pytest.raises(StateError, match="unknown state root"):
                StateTree(kv, root)


writes = st.lists(st.tuples(st.integers(0, len(KEYS) - 1),
                            st.one_of(st.none(), st.integers(0, len(VALUES) - 1))),
                  min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(history=st.lists(writes, min_size=1, max_size=14), keep=st.integers(1, 3),
       reopen_at=st.sets(st.integers(0, 13), max_size=3))
def test_pruning_keeps_exactly_the_last_roots(history, keep, reopen_at) -> None:
    kvs = [run(history, keep, native, reopen_at)[0] for native in IMPLS]
    dumps = [list(kv.iterate(b"")) for kv in kvs]
    assert all(d == dumps[0] for d in dumps)  # the C and Python commits prune alike


def test_values_set_back_and_states_repeated_survive() -> None:
    """Content-addressed records come back with their content: a value set back to an
    earlier one, a key deleted and re-added, a whole state repeated."""
    flip = [[(0, 0), (1, 0), (2, 0)], [(0, 1)], [(0, 0)], [(1, None)], [(1, 0)],
            [(0, 1)], [(0, 0)], [(2, 1)], [(2, 0)], [(0, 0), (1, 0), (2, 0)]]
    for native in IMPLS:
        for keep in (1, 2, 3):
            kv, versions = run(flip, keep, native, set())
            assert versions[-1][1] == {KEYS[0]: b"a", KEYS[1]: b"a", KEYS[2]: b"a"}


def test_many_keys_deep_tree_prunes_to_the_live_size() -> None:
    """Thousands of keys rewritten over and over: the store keeps the two last trees'
    records and nothing else."""
    for native in IMPLS:
        kv = MemoryKV()
        tree = StateTree(kv, native=native, keep=2)
        roots = []
        for round_ in range(6):
            for i in range(3000):
                if round_ == 0 or i % 3 == round_ % 3:
                    tree.set(b"m%d" % i, b"v%d-%d" % (i, round_))
            batch = kv.batch()
            roots.append(tree.commit(batch))
            kv.write(batch)
            need = reachable(kv, roots[-1])
            if len(roots) > 1:
                need |= reachable(kv, roots[-2])
            assert stored(kv, tree_mod.NODE_PREFIX) == need
        assert StateTree(kv, roots[-2]).get(b"m4") == b"v4-4"
        assert tree.get(b"m4") == b"v4-4" and tree.get(b"m5") == b"v5-5"


def test_keep_is_checked() -> None:
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(StateError, match="keep"):
            StateTree(MemoryKV(), keep=bad)  # type: ignore[arg-type]


def test_an_archive_tree_never_deletes() -> None:
    kv = MemoryKV()
    tree = StateTree(kv)
    roots = []
    for i in range(5):
        tree.set(b"k", b"v%d" % i)
        batch = kv.batch()
        roots.append(tree.commit(batch))
        kv.write(batch)
    for i, root in enumerate(roots):
        assert StateTree(kv, root).get(b"k") == b"v%d" % i
    assert not stored(kv, tree_mod.STALE_PREFIX)


@pytest.mark.parametrize("bad_key, bad_value", [
    (tree_mod.STALE_PREFIX + b"\x01", b"\x00"),                   # key is not 8 bytes
    (tree_mod.STALE_PREFIX + bytes(8), b"\x02"),                  # unknown head
    (tree_mod.STALE_PREFIX + bytes(8), b"\x00" + bytes(35)),      # a cut entry
    (tree_mod.STALE_PREFIX + bytes(8), b"\x01" + bytes(31)),      # a cut root
])
def test_a_damaged_stale_list_is_refused_on_open(bad_key, bad_value) -> None:
    kv = MemoryKV()
    tree = StateTree(kv, keep=2)
    tree.set(b"k", b"v")
    batch = kv.batch()
    root = tree.commit(batch)
    batch.put(bad_key, bad_value)
    kv.write(batch)
    with pytest.raises(StateError, match="malformed"):
        StateTree(kv, root, keep=2)
    assert StateTree(kv, root).get(b"k") == b"v"  # an archive reader does not look


@pytest.mark.parametrize("native", IMPLS)
def test_switching_to_archive_and_back_never_deletes_a_live_record(native) -> None:
    """An operator turns pruning off (state_history = 0) and later on again: records that
    were waiting in stale lists and came back while pruning was off must survive."""
    kv = MemoryKV()

    def commit(tree: StateTree, writes: dict[bytes, bytes]) -> bytes:
        for k, v in writes.items():
            tree.set(k, v)
        batch = kv.batch()
        root = tree.commit(batch)
        kv.write(batch)
        return root

    tree = StateTree(kv, native=native, keep=3)
    commit(tree, {b"a": b"1", b"b": b"1"})
    root = commit(tree, {b"a": b"2"})  # a's leaf with value 1 waits in a stale list
    archive = StateTree(kv, root, native=native)
    root = commit(archive, {b"a": b"1"})  # ... and comes back while nothing prunes
    assert not stored(kv, tree_mod.STALE_PREFIX)  # the archive forgot the pending lists
    pruning = StateTree(kv, root, native=native, keep=2)
    for i in range(4):
        root = commit(pruning, {b"b": b"x%d" % i})
    assert reachable(kv, root)  # asserts every record it needs is there
    assert StateTree(kv, root).get(b"a") == b"1"
