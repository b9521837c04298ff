"""The state tree's C commit (contracts/_treecore.c) against the pure-Python reference:
for any history of writes both leave byte-identical stores (every node record, root
record, flat value and meta key), report the same roots, and fail the same way on a
damaged store. tests/test_state_tree.py runs its whole suite on both as well.

The extension is optional at install time (setup.py), but the project's figures depend on
it, so a run where it did not build fails here unless MUTUAL_ALLOW_PURE=1 says that
is intended.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import tree as tree_mod
from contracts.kv import MemoryKV
from contracts.tree import StateError, StateTree

native_only = pytest.mark.skipif(not tree_mod.NATIVE_AVAILABLE,
                                 reason="the native core is not built")


def test_native_core_is_built() -> None:
    if os.environ.get("MUTUAL_ALLOW_PURE") == "1":
        pytest.skip("MUTUAL_ALLOW_PURE=1: the pure-Python commit is accepted")
    assert tree_mod.NATIVE_AVAILABLE, (
        "contracts/_treecore.c did not build (a C compiler and OpenSSL headers are needed); "
        "`pip install -e .` printed why")


def test_native_refused_when_asked_for_but_missing(monkeypatch) -> None:
    monkeypatch.setattr(tree_mod, "_treecore", None)
    with pytest.raises(StateError, match="not built"):
        StateTree(MemoryKV(), native=True)


class Pair:
    """The same history applied to a native and a Python tree, each on its own store."""

    def __init__(self, node_cache: int = 16, value_cache: int = 16) -> None:
        self.kvs = (MemoryKV(), MemoryKV())
        self.trees = tuple(StateTree(kv, native=flag, node_cache=node_cache,
                                     value_cache=value_cache)
                           for kv, flag in zip(self.kvs, (True, False), strict=True))

    def write(self, key: bytes, value: bytes | None) -> None:
        for t in self.trees:
            if value is None:
                t.delete(key)
            else:
                t.set(key, value)

    def commit(self) -> bytes:
        roots = []
        for t, kv in zip(self.trees, self.kvs, strict=True):
            batch = kv.batch()
            roots.append(t.commit(batch))
            kv.write(batch)
        assert roots[0] == roots[1]
        assert self.kvs[0]._store.data == self.kvs[1]._store.data
        return roots[0]


_key = st.one_of(st.binary(max_size=2), st.integers(0, 400).map(lambda i: b"k%d" % i))
_block = st.lists(st.tuples(_key, st.one_of(st.none(), st.binary(max_size=3))), max_size=40)


@native_only
@settings(max_examples=150, deadline=None)
@given(blocks=st.lists(_block, min_size=1, max_size=8))
def test_same_store_for_any_history(blocks) -> None:
    pair = Pair()
    for block in blocks:
        for key, value in block:
            pair.write(key, value)
        pair.commit()


@native_only
def test_same_store_for_a_deep_history() -> None:
    """Thousands of keys (paths five groups deep), bulk builds, scattered rewrites and
    deletes down to nothing, with tiny caches so records come from the store."""
    rnd = hashlib.sha256(b"seed").digest()
    pair = Pair()
    live: set[bytes] = set()
    for round_ in range(12):
        size = (5000, 1, 700, 2, 3000)[round_ % 5]
        for _ in range(size):
            rnd = hashlib.sha256(rnd).digest()
            key = b"key-%d" % (int.from_bytes(rnd[:4], "big") % 9000)
            if rnd[5] < 80 and key in live:
                pair.write(key, None)
                live.discard(key)
            else:
                pair.write(key, rnd[6:6 + rnd[7] % 9])
                live.add(key)
        pair.commit()
    for key in sorted(live):
        pair.write(key, None)
    assert pair.commit() == bytes(32)


@native_only
def test_unwritten_batches_are_read_through() -> None:
    """Two commits staged before either batch is written: the second reads the first's
    groups from its batch, in both implementations."""
    kvs = (MemoryKV(), MemoryKV())
    trees = [StateTree(kv, native=f, node_cache=16) for kv, f in zip(kvs, (True, False),
                                                                        strict=True)]
    for t in trees:
        for i in range(500):
            t.set(b"a%d" % i, b"x")
    firsts = [kv.batch() for kv in kvs]
    assert trees[0].commit(firsts[0]) == trees[1].commit(firsts[1])
    for t in trees:
        for i in range(0, 500, 7):
            t.set(b"a%d" % i, b"y")
        t.delete(b"a3")
    seconds = [kv.batch() for kv in kvs]
    assert trees[0].commit(seconds[0]) == trees[1].commit(seconds[1])
    for kv, first, second in zip(kvs, firsts, seconds, strict=True):
        kv.write(first)
        kv.write(second)
    assert kvs[0]._store.data == kvs[1]._store.data


@native_only
def test_damaged_group_fails_the_native_commit_cleanly() -> None:
    kv = MemoryKV()
    tree = StateTree(kv, native=True, node_cache=16)
    for i in range(300):
        tree.set(b"k%d" % i, b"v")
    batch = kv.batch()
    root = tree.commit(batch)
    kv.write(batch)
    group_key = b"n" + bytes(4) + root
    bad = kv.batch()
    bad.put(group_key, kv.get(group_key)[:-1])
    kv.write(bad)
    reopened = StateTree(kv, root, native=True, node_cache=16)
    reopened.set(b"k1", b"changed")
    with pytest.raises(StateError, match="malformed"):
        reopened.commit(kv.batch())
    bad = kv.batch()
    bad.delete(group_key)
    kv.write(bad)
    reopened = StateTree(kv, root, native=True, node_cache=16)
    reopened.set(b"k1", b"changed")
    with pytest.raises(StateError, match="missing"):
        reopened.commit(kv.batch())


def _records() -> list[tuple[bytes, bytes]]:
    kv = MemoryKV()
    tree = StateTree(kv, native=True)
    for i in range(600):
        tree.set(b"r%d" % i, b"value-%d" % i)
    batch = kv.batch()
    tree.commit(batch)
    kv.write(batch)
    return [(k[-32:], rec) for k, rec in kv.iterate(b"n")]


_RECORDS = _records() if tree_mod.NATIVE_AVAILABLE else []


@native_only
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_record_check_matches_the_reference(data) -> None:
    """The auditor's record check (C) against the Python reference, on real records and
    on records with a byte flipped, cut, extended, or checked against another address."""
    address, rec = data.draw(st.sampled_from(_RECORDS))
    how = data.draw(st.sampled_from(["as is", "flip", "cut", "extend", "address", "masks"]))
    if how == "flip" and rec:
        i = data.draw(st.integers(0, len(rec) - 1))
        rec = rec[:i] + bytes([rec[i] ^ data.draw(st.integers(1, 255))]) + rec[i + 1:]
    elif how == "cut":
        rec = rec[:data.draw(st.integers(0, len(rec)))]
    elif how == "extend":
        rec = rec + data.draw(st.binary(min_size=1, max_size=40))
    elif how == "address":
        address = data.draw(st.sampled_from([bytes(32), b"", b"x" * 31, _RECORDS[0][0]]))
    elif how == "masks" and len(rec) >= 9:
        rec = rec[:1] + data.draw(st.binary(min_size=8, max_size=8)) + rec[9:]
    expected = tree_mod.node_record_ok_reference(address, rec)
    assert tree_mod._treecore.record_ok(address, rec) is expected
    assert tree_mod.node_record_ok(address, rec) is expected
    if how == "as is":
        assert expected


@native_only
@settings(max_examples=60, deadline=None)
@given(n=st.one_of(st.integers(0, 5), st.integers(0, 3000)), probes=st.lists(st.integers(0, 6000), max_size=60),
       cache=st.sampled_from([16, 1000, 150_000]))
def test_cached_lookup_never_contradicts_the_store(n, probes, cache) -> None:
    """lookup() answers from the group caches: absent (0) and present (1) must be true of
    the committed state; where a group on the path is not cached it names that group
    (hash, depth), which the store holds under that position."""
    kv = MemoryKV()
    tree = StateTree(kv, native=True, node_cache=cache)
    for i in range(n):
        tree.set(b"k%d" % i, b"v")
    for i in range(0, n, 3):
        tree.delete(b"k%d" % i)
    batch = kv.batch()
    tree.commit(batch)
    kv.write(batch)
    for p in probes + [0, 1, n - 1, n, n + 1]:
        key = b"k%d" % p
        got = tree_mod._treecore.lookup(key, tree.root(), tree._root_kh, tree._top,
                                        tree._nodes, tree_mod.TOP_DEPTH)
        truth = kv.get(b"v" + key) is not None
        if type(got) is tuple:
            h, depth = got
            assert depth % tree_mod.GROUP_LEVELS == 0
            assert h not in (tree._top if depth < tree_mod.TOP_DEPTH else tree._nodes)
            kh = hashlib.sha256(key).digest()
            assert kv.get(b"n" + tree_mod._pos(kh, depth) + h) is not None
        else:
            assert got == truth, (key, got, truth)
        assert tree.get(key) == (b"v" if truth else None)  # the read path that uses it
        # with empty caches only an empty tree or a single-leaf root can answer
        reopened = StateTree(kv, tree.root(), native=True)
        inner_root = tree.root() != bytes(32) and tree._root_kh is None
        assert tree_mod._treecore.lookup(key, reopened.root(), reopened._root_kh,
                                         reopened._top, reopened._nodes,
                                         tree_mod.TOP_DEPTH) == (
            (tree.root(), 0) if inner_root else truth)


@native_only
def test_absent_reads_fetch_the_path_and_skip_the_flat_copy() -> None:
    """A read on a tree with cold caches walks the path, caching the groups it fetches
    (the commit that creates the key needs them), and answers absent keys from them."""
    flat_reads: list[bytes] = []

    class CountingKV(MemoryKV):
        __slots__ = ()

        def get(self, key: bytes) -> bytes | None:
            if key.startswith(b"v"):
                flat_reads.append(key)
            return super().get(key)

    kv = CountingKV()
    tree = StateTree(kv, native=True, node_cache=16)
    for i in range(3000):
        tree.set(b"k%d" % i, b"v%d" % i)
    batch = kv.batch()
    tree.commit(batch)
    kv.write(batch)
    cold = StateTree(kv, tree.root(), native=True, node_cache=16)
    flat_reads.clear()
    assert [cold.get(b"absent-%d" % i) for i in range(50)] == [None] * 50
    assert flat_reads == []
    assert cold._top  # the walk cached what it fetched
    assert [cold.get(b"k%d" % i) for i in range(0, 3000, 97)] == [
        b"v%d" % i for i in range(0, 3000, 97)]
    # and the commit that creates absent keys after those reads gives the same root
    for i in range(50):
        cold.set(b"absent-%d" % i, b"x")
        tree.set(b"absent-%d" % i, b"x")
    assert cold.commit(kv.batch()) == tree.commit(kv.batch())


@native_only
def test_cached_lookup_answers_most_misses_without_the_store() -> None:
    kv = MemoryKV()
    tree = StateTree(kv, native=True)
    for i in range(3000):
        tree.set(b"k%d" % i, b"v")
    batch = kv.batch()
    tree.commit(batch)
    kv.write(batch)

    def ask(key: bytes) -> int:
        return tree_mod._treecore.lookup(key, tree.root(), tree._root_kh, tree._top,
                                         tree._nodes, tree_mod.TOP_DEPTH)

    assert [ask(b"k%d" % i) for i in range(300)] == [1] * 300  # every group is cached
    assert [ask(b"absent-%d" % i) for i in range(300)] == [0] * 300
    with pytest.raises(TypeError):
        tree_mod._treecore.lookup(b"k", b"short", None, {}, {}, 20)
