"""contracts._treecore.GroupCache (the state tree's group caches in C) against a dict model."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import tree as tree_mod

pytestmark = pytest.mark.skipif(tree_mod._treecore is None, reason="C extension not built")


def _cache():  # type: ignore[no-untyped-def]
    return tree_mod._treecore.GroupCache()


def _key(i: int) -> bytes:
    return i.to_bytes(4, "big") * 8


class Model:
    """What GroupCache must behave like: a mapping whose evict(n) drops the n entries
    set longest ago (setting a key again makes it the newest)."""

    def __init__(self) -> None:
        self.d: dict[bytes, bytes] = {}

    def set(self, k: bytes, v: bytes) -> None:
        self.d.pop(k, None)
        self.d[k] = v

    def evict(self, n: int) -> None:
        for k in list(self.d)[:max(n, 0)]:
            del self.d[k]


ops = st.lists(st.tuples(st.sampled_from(["set", "pop", "get", "del", "has", "evict"]),
                         st.integers(0, 300), st.binary(max_size=40)), max_size=400)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_matches_the_model(script: list[tuple[str, int, bytes]]) -> None:
    c, m = _cache(), Model()
    for op, i, v in script:
        k = _key(i)
        if op == "set":
            c[k] = v
            m.set(k, v)
        elif op == "pop":
            assert c.pop(k, None) == m.d.pop(k, None)
        elif op == "get":
            assert c.get(k) == m.d.get(k)
            assert c.get(k, b"dflt") == m.d.get(k, b"dflt")
        elif op == "del":
            if k in m.d:
                del c[k]
                del m.d[k]
            else:
                with pytest.raises(KeyError):
                    del c[k]
        elif op == "has":
            assert (k in c) == (k in m.d)
        else:
            n = i % (len(m.d) + 2)
            c.evict(n)
            m.evict(n)
        assert len(c) == len(m.d)
    for k, v in m.d.items():
        assert c[k] == v


def test_many_entries_grow_and_evict_in_insertion_order() -> None:
    rng = random.Random(7)
    c, m = _cache(), Model()
    keys = [rng.randbytes(32) for _ in range(20_000)]
    for n, k in enumerate(keys):
        c[k] = k[:n % 50]
        m.set(k, k[:n % 50])
        if n % 997 == 0:
            victim = keys[rng.randrange(n + 1)]
            assert c.pop(victim, None) == m.d.pop(victim, None)
    c.evict(len(c) // 4)
    m.evict(len(m.d) // 4)
    assert len(c) == len(m.d) > 10_000
    assert all(c.get(k) == m.d.get(k) for k in keys)
    assert c.nbytes() > len(c) * 32
    c.clear()
    assert len(c) == 0 and c.get(keys[0]) is None


def test_refuses_bad_keys_and_values() -> None:
    c = _cache()
    for bad in (b"short", "x" * 32, 5):
        with pytest.raises(TypeError):
            c[bad] = b"v"  # type: ignore[index]
        with pytest.raises(TypeError):
            c.get(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c[_key(1)] = "not bytes"  # type: ignore[assignment]
    with pytest.raises(KeyError):
        c[_key(1)]
    with pytest.raises(KeyError):
        c.pop(_key(1))
    with pytest.raises(TypeError):
        c.get()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        tree_mod._treecore.GroupCache(5)  # type: ignore[call-arg]
