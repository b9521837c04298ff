"""One conformance suite for every KV backend: the in-memory dict and LevelDB (plyvel)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.kv import KV, KVError, MemoryKV, prefix_upper_bound
from node.store.kvstore import LevelKV


@pytest.fixture(params=["memory", "leveldb"])
def kv(request: pytest.FixtureRequest, tmp_path) -> Iterator[KV]:
    if request.param == "memory":
        store: KV = MemoryKV()
    else:
        store = LevelKV(tmp_path / "db")
    yield store
    store.close()


def put_all(kv: KV, items: dict[bytes, bytes], sync: bool = False) -> None:
    b = kv.batch()
    for k, v in items.items():
        b.put(k, v)
    kv.write(b, sync=sync)


def test_get_missing_is_none(kv: KV) -> None:
    assert kv.get(b"nope") is None


def test_put_get_delete_roundtrip(kv: KV) -> None:
    b = kv.batch()
    b.put(b"a", b"1")
    b.put(b"b", b"")
    kv.write(b, sync=True)
    assert kv.get(b"a") == b"1"
    assert kv.get(b"b") == b""  # empty value is a value, not absence
    b = kv.batch()
    b.delete(b"a")
    b.delete(b"never-there")
    kv.write(b)
    assert kv.get(b"a") is None
    assert kv.get(b"b") == b""


def test_batch_is_not_visible_until_written(kv: KV) -> None:
    b = kv.batch()
    b.put(b"k", b"v")
    assert kv.get(b"k") is None
    assert b.staged(b"k") == (True, b"v")
    assert b.staged(b"other") == (False, None)
    kv.write(b)
    assert kv.get(b"k") == b"v"


def test_later_operation_on_same_key_wins(kv: KV) -> None:
    b = kv.batch()
    b.put(b"k", b"1")
    b.delete(b"k")
    b.put(b"j", b"1")
    b.delete(b"j")
    b.put(b"j", b"2")
    kv.write(b)
    assert kv.get(b"k") is None
    assert kv.get(b"j") == b"2"
    assert len(b) == 2


def test_iteration_order_prefix_and_bounds(kv: KV) -> None:
    keys = [b"a", b"a\x00", b"a\xff", b"ab", b"b", b"ba", b"\xff", b"\xff\xff"]
    put_all(kv, {k: k * 2 for k in keys})
    assert [k for k, _ in kv.iterate()] == sorted(keys)
    assert [k for k, _ in kv.iterate(reverse=True)] == sorted(keys, reverse=True)
    assert [k for k, _ in kv.iterate(b"a")] == [b"a", b"a\x00", b"ab", b"a\xff"]
    assert [k for k, _ in kv.iterate(b"\xff")] == [b"\xff", b"\xff\xff"]
    assert [k for k, _ in kv.iterate(start=b"ab", stop=b"ba")] == [b"ab", b"a\xff", b"b"]
    assert [k for k, _ in kv.iterate(b"a", start=b"a\x01")] == [b"ab", b"a\xff"]
    assert [k for k, _ in kv.iterate(b"a", stop=b"a\xff", reverse=True)] == [b"ab", b"a\x00", b"a"]
    assert list(kv.iterate(start=b"b", stop=b"a")) == []
    assert list(kv.iterate(b"c")) == []
    assert dict(kv.iterate(b"b")) == {b"b": b"bb", b"ba": b"baba"}


def test_iterator_is_a_snapshot(kv: KV) -> None:
    put_all(kv, {b"k1": b"1", b"k2": b"2", b"k3": b"3"})
    it = kv.iterate(b"k")
    assert next(it) == (b"k1", b"1")
    b = kv.batch()
    b.put(b"k2", b"changed")
    b.put(b"k25", b"new")
    b.delete(b"k3")
    kv.write(b)
    assert list(it) == [(b"k2", b"2"), (b"k3", b"3")]
    assert list(kv.iterate(b"k")) == [(b"k1", b"1"), (b"k2", b"changed"), (b"k25", b"new")]


def test_prefixed_views_are_isolated_and_nest(kv: KV) -> None:
    state = kv.prefixed(b"s/")
    blocks = kv.prefixed(b"b/")
    put_all(state, {b"x": b"state-x"})
    put_all(blocks, {b"x": b"block-x", b"y": b"block-y"})
    assert state.get(b"x") == b"state-x"
    assert blocks.get(b"x") == b"block-x"
    assert state.get(b"y") is None
    assert kv.get(b"s/x") == b"state-x"
    assert list(state.iterate()) == [(b"x", b"state-x")]
    assert [k for k, _ in blocks.iterate(reverse=True)] == [b"y", b"x"]
    nested = state.prefixed(b"n/")
    assert nested.prefix == b"s/n/"
    put_all(nested, {b"1": b"one"})
    assert state.get(b"n/1") == b"one"
    assert [k for k, _ in state.iterate()] == [b"n/1", b"x"]


def test_empty_key_in_both_directions(kv: KV) -> None:
    put_all(kv, {b"": b"empty"})
    assert list(kv.iterate()) == [(b"", b"empty")]
    assert list(kv.iterate(reverse=True)) == [(b"", b"empty")]
    put_all(kv, {b"a": b"1"})
    assert [k for k, _ in kv.iterate(reverse=True)] == [b"a", b""]
    assert [k for k, _ in kv.iterate(stop=b"a", reverse=True)] == [b""]


def test_prefix_view_with_ff_bytes(kv: KV) -> None:
    top = kv.prefixed(b"\xff")
    put_all(kv, {b"\xfe": b"before", b"\xff\x00": b"in", b"\xff\xff": b"in2"})
    assert list(top.iterate()) == [(b"\x00", b"in"), (b"\xff", b"in2")]
    assert list(top.iterate(reverse=True)) == [(b"\xff", b"in2"), (b"\x00", b"in")]


def test_one_batch_spans_prefixes_atomically(kv: KV) -> None:
    state = kv.prefixed(b"s/")
    blocks = kv.prefixed(b"b/")
    b = kv.batch()
    state.within(b).put(b"root", b"R")
    b.prefixed(b"b/").put(b"1", b"block1")
    blocks.within(b).put(b"2", b"block2")
    assert kv.get(b"s/root") is None
    blocks.write(b, sync=True)  # any view of the store may write it
    assert state.get(b"root") == b"R"
    assert blocks.get(b"1") == b"block1"
    assert blocks.get(b"2") == b"block2"


def test_foreign_batch_is_refused(kv: KV, tmp_path) -> None:
    other = MemoryKV()
    b = other.batch()
    b.put(b"k", b"v")
    with pytest.raises(KVError):
        kv.write(b)
    with pytest.raises(KVError):
        kv.within(b)
    assert kv.get(b"k") is None


@pytest.mark.parametrize("bad", ["text", 1, None, bytearray(b"x")])
def test_bad_types_are_refused(kv: KV, bad) -> None:
    with pytest.raises(KVError):
        kv.get(bad)
    b = kv.batch()
    with pytest.raises(KVError):
        b.put(bad, b"v")
    with pytest.raises(KVError):
        b.put(b"k", bad)
    with pytest.raises(KVError):
        b.delete(bad)
    with pytest.raises(KVError):
        kv.prefixed(bad)
    assert len(b) == 0


def test_closed_store_refuses_use(kv: KV) -> None:
    put_all(kv, {b"k": b"v"})
    kv.close()
    with pytest.raises(KVError):
        kv.get(b"k")
    with pytest.raises(KVError):
        kv.write(kv.batch())
    with pytest.raises(KVError):
        list(kv.iterate())


def test_clear_drops_all_views_operations(kv: KV) -> None:
    b = kv.batch()
    b.put(b"a", b"1")
    b.prefixed(b"p/").put(b"b", b"2")
    b.clear()
    kv.write(b)
    assert list(kv.iterate()) == []


def test_prefix_upper_bound() -> None:
    assert prefix_upper_bound(b"") is None
    assert prefix_upper_bound(b"\xff\xff") is None
    assert prefix_upper_bound(b"a") == b"b"
    assert prefix_upper_bound(b"a\xff") == b"b"
    assert prefix_upper_bound(b"a\x00\xff\xff") == b"a\x01"


def test_leveldb_reopens_with_data(tmp_path) -> None:
    path = tmp_path / "db"
    db = LevelKV(path)
    put_all(db.prefixed(b"s/"), {b"k": b"v"}, sync=True)
    db.close()
    db = LevelKV(path)
    try:
        assert db.prefixed(b"s/").get(b"k") == b"v"
    finally:
        db.close()


def test_leveldb_missing_dir_without_create(tmp_path) -> None:
    with pytest.raises(KVError):
        LevelKV(tmp_path / "absent", create_if_missing=False)


_key = st.binary(min_size=0, max_size=4)
_ops = st.lists(st.tuples(_key, st.one_of(st.none(), st.binary(max_size=3))), max_size=40)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(_ops, max_size=5), prefix=_key, rev=st.booleans())
def test_backends_agree_with_a_model(tmp_path_factory, batches, prefix, rev) -> None:
    model: dict[bytes, bytes] = {}
    mem = MemoryKV()
    lvl = LevelKV(tmp_path_factory.mktemp("db"))
    try:
        for ops in batches:
            for store in (mem, lvl):
                b = store.batch()
                for k, v in ops:
                    if v is None:
                        b.delete(k)
                    else:
                        b.put(k, v)
                store.write(b)
            for k, v in ops:
                if v is None:
                    model.pop(k, None)
                else:
                    model[k] = v
        expect = sorted(((k, v) for k, v in model.items() if k.startswith(prefix)), reverse=rev)
        for store in (mem, lvl):
            assert list(store.iterate(prefix, reverse=rev)) == expect
            for k in list(model)[:10]:
                assert store.get(k) == model[k]
    finally:
        lvl.close()


def test_leveldb_compact_covers_the_whole_database(tmp_path) -> None:
    """compact() must merge every level-0 table (a bare plyvel compact_range() would only
    flush the memtable), and keep every key."""
    db = LevelKV(tmp_path / "db", write_buffer_bytes=64 << 10)
    items = {b"k%06d" % i: bytes([i % 251]) * 200 for i in range(3000)}
    keys = list(items)
    raw = db._store.db  # type: ignore[attr-defined]
    for r in range(6):  # each batch spans the whole key range, so flushes stay in level 0
        put_all(db, {k: items[k] for k in keys[r::6]})

    def levels() -> list[int]:
        return [int(raw.get_property(b"leveldb.num-files-at-level%d" % i)) for i in range(7)]

    db.compact()
    # everything merged into one level (a flush alone would leave the last memtable's
    # table in level 0 beside the older ones)
    after = levels()
    assert after[0] == 0 and sum(1 for n in after if n) == 1, after
    assert not db.compaction_pending()
    assert dict(db.iterate()) == items
    db.close()
    LevelKV(tmp_path / "empty").compact()  # nothing to compact is fine


def test_leveldb_options_are_checked_and_old_data_reads(tmp_path) -> None:
    with pytest.raises(KVError, match="compression"):
        LevelKV(tmp_path / "x", compression="zlib")
    snappy = LevelKV(tmp_path / "db", compression="snappy")
    put_all(snappy, {b"a": b"x" * 1000})
    snappy.close()
    plain = LevelKV(tmp_path / "db")  # blocks carry their own compression flag
    assert plain.get(b"a") == b"x" * 1000
    plain.close()


def test_leveldb_compaction_debt_is_reported(tmp_path, monkeypatch) -> None:
    db = LevelKV(tmp_path / "db")
    assert not db.compaction_pending()
    stats = ("Level  Files Size(MB) Time(sec) Read(MB) Write(MB)\n"
             "--------------------------------------------------\n"
             "  0        {l0}        1         0        0         1\n"
             "  1        3       {l1}         0        0         0\n")

    class FakeDB:
        closed = False

        def __init__(self, text: str) -> None:
            self.text = text

        def get_property(self, name: bytes) -> bytes:
            assert name == b"leveldb.stats"
            return self.text.encode()

    real = db._store.db  # type: ignore[attr-defined]
    for l0, l1, pending in ((3, 9, False), (4, 9, True), (0, 11, True), (0, 10, False)):
        monkeypatch.setattr(db._store, "db", FakeDB(stats.format(l0=l0, l1=l1)))
        assert db.compaction_pending() is pending, (l0, l1)
    monkeypatch.setattr(db._store, "db", real)
    db.close()
