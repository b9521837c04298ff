"""The state bench's chain and members: its genesis and keys, deterministic member keys
and identities, transactions, and the bulk loader that writes N members' records straight
into the tree exactly as ``register_member`` would (``devnet/bench_state.py`` measures)."""

from __future__ import annotations

from array import array
from concurrent.futures import Future, ThreadPoolExecutor
from hashlib import sha256
from typing import Any

import msgpack

from chain.crypto import PrivateKey
from chain.genesis import GENESIS_FORMAT, Genesis
from chain.tx import Transaction
from contracts import params as params_mod
from contracts import records
from contracts.app import Application
from contracts.kv import KV
from contracts.memstate import MemState
from contracts.tree import VALUE_PREFIX, StateTree

CHAIN_ID = "mutual-bench"
REGISTRAR = PrivateKey(sha256(b"bench registrar").digest())
ASSESSOR = PrivateKey(sha256(b"bench assessor").digest())
OPERATOR = PrivateKey(sha256(b"bench operator").digest())
VALIDATOR = PrivateKey(sha256(b"bench validator").digest())
GENESIS_TIME = "2024-01-01T00:00:00+00:00"
SECOND = 1000
LOAD_TIME = 1 * SECOND       # bulk members join at genesis + 1 s (period 1)
APPLY_START = 61 * SECOND    # period 2, after the waiting period, before notice 2
# settlements measured per size (the figure is their median): period 2 pays the claims filed
# during apply, each later period as many claims again
DEFAULT_SETTLE_ROUNDS = 9
# keys per bulk-load commit: two chunks' batches are alive at once (one hashed, one being
# written) and what they free fragments the heap; 10,000 loaded as fast as 25,000 and
# peaked ~50 MB lower at 1M members, 5,000 as fast again (62-71k members/s) and ~5 MB lower
CHUNK_KEYS = 5_000
COMPACTION_WAIT_S = 300.0
# apply blocks per size: enough for LevelDB to flush and compact what apply itself writes
# (~5 MB per block at 1M members), so the figure is a node's sustained rate; the first five
# blocks after the import's compaction ran ~12 % faster and mapped ~350 MB fewer table pages
DEFAULT_BLOCKS = 20
BUCKET_BITS = 12
STATE_PREFIX = b"state/"
RECORDS_PER_MEMBER = 2  # member/<pk> and ident/<hash>: all a join writes besides counters
_MARK_A = sha256(b"bench template field a").digest()
_MARK_B = sha256(b"bench template field b").digest()


class AnonPeak:
    """The largest anonymous resident memory (heap: Python objects, caches, batches)
    seen at the sampling points; None where /proc is not available."""

    peak_kb: int | None = None

    @classmethod
    def sample(cls) -> None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        kb = int(line.split()[1])
                        cls.peak_kb = max(cls.peak_kb or 0, kb)
                        return
        except OSError:
            return

    @classmethod
    def mb(cls) -> float | None:
        return None if cls.peak_kb is None else round(cls.peak_kb / 1024, 1)


def genesis() -> Genesis:
    return Genesis.from_doc({
        "format": GENESIS_FORMAT,
        "chain_id": CHAIN_ID,
        "genesis_time": GENESIS_TIME,
        "validators": [{"name": "v0", "pub_key": VALIDATOR.public_key.hex(), "power": 10}],
        "registrars": [REGISTRAR.public_key.hex()],
        "assessors": [ASSESSOR.public_key.hex()],
        "operator": OPERATOR.public_key.hex(),
        "params": params_mod.profile("devnet"),
    })


# odd 256-bit multipliers: i -> i * M mod 2**256 is a bijection whose bytes look random
_PK_MIX = int.from_bytes(sha256(b"bench member pk").digest(), "big") | 1
_ID_MIX = int.from_bytes(sha256(b"bench identity").digest(), "big") | 1
_MASK256 = (1 << 256) - 1


def bulk_pk(i: int) -> bytes:
    """Bulk members' ids: 32-byte stand-ins for public keys (their transactions count as
    already verified). Cheap to derive, so the import measures loading, not synthesis, yet
    with bytes as incompressible as real keys', so the database has a real key's size."""
    return (((i + 1) * _PK_MIX) & _MASK256).to_bytes(32, "big")


def bulk_identity(i: int) -> bytes:
    return (((i + 1) * _ID_MIX) & _MASK256).to_bytes(32, "big")


def new_member_pk(j: int) -> bytes:
    """The id of the j-th member who joins during apply."""
    return sha256(b"bench new member" + j.to_bytes(8, "big")).digest()


def register_body(pk: bytes, identity: bytes) -> dict[str, Any]:
    # ``identity``: stands for the member's identity tag under key 1 (an HMAC: opaque bytes)
    return {
        "member": pk, "identity_tags": [[1, identity]], "birth_date": "1990-05-01",
        "health_commitment": sha256(b"health").digest(),
        "credit_attestation": sha256(b"credit").digest(), "credit_passed": True,
    }


def signed_tx(sender: PrivateKey | bytes, type_: str, nonce: int, body: dict[str, Any]) -> Transaction:
    pk = sender if isinstance(sender, bytes) else sender.public_key.raw
    return Transaction(CHAIN_ID, type_, pk, nonce, body)


def seed(height: int) -> bytes:
    return sha256(b"bench seed" + height.to_bytes(8, "big")).digest()


# -- bulk loading ------------------------------------------------------------------------


class MemberTemplate:
    """The records one ``register_member`` writes, captured from a real delivery."""

    def __init__(self, g: Genesis) -> None:
        state = MemState()
        app = Application(g, state)
        app.init_chain()
        pk, ident = bulk_pk(0), bulk_identity(0)
        app.begin_block(1, g.genesis_time_ms + LOAD_TIME, seed(1))
        before = dict(state.data)
        receipt = app.deliver_tx(signed_tx(REGISTRAR, "register_member", 1, register_body(pk, ident)))
        app.end_block()
        if not receipt.ok:
            raise RuntimeError(f"template register_member failed: {receipt.code}")
        self.member = records.load(state, records.member_key(pk))
        self.identity = records.load(state, records.identity_key(ident))
        if self.member is None or self.identity is None:
            raise RuntimeError("register_member no longer writes member/ident records")
        self.cohort = self.member["cohort"]
        # the upper age (docs/rules.md rule 1): every bulk member has the same birth date,
        # so the same aging notice and the same entry in its age/ record
        self.aging = self.member.get("age_out_period")
        self.aging_late = (None if self.aging is None else
                           records.load(state, records.aging_key(self.aging))["late"])
        written = {k for k, v in state.data.items() if before.get(k) != v}
        expected = {records.member_key(pk), records.identity_key(ident)}
        if self.aging is not None:
            expected.add(records.aging_key(self.aging))
        if not written <= expected | {records.META_KEY, records.cohort_key(self.cohort),
                                     records.account_key(REGISTRAR.public_key.raw)}:
            raise RuntimeError(f"register_member writes records the bulk loader does not: "
                               f"{sorted(written - expected)}")
        # the loader's records differ only in two 32-byte fields, so each is the template's
        # bytes with those spliced in (the import measures loading, not msgpack)
        self._member_parts = self._split(dict(self.member, pubkey=_MARK_A, identity_tags=[[1, _MARK_B]]),
                                         (_MARK_B, _MARK_A))
        self._identity_parts = self._split(dict(self.identity, member=_MARK_A), (_MARK_A,))
        for i in (0, 7, 123456):
            pk, ident = bulk_pk(i), bulk_identity(i)
            if (self.record(i, 0)[1] != self._pack(dict(self.member, pubkey=pk,
                                                              identity_tags=[[1, ident]]))
                    or self.record(i, 1)[1] != self._pack(dict(self.identity, member=pk))):
                raise RuntimeError("spliced bulk records differ from packed ones")
        # records are packed straight with msgpack: the decoded maps keep their canonical
        # key order and substituting values keeps it; check once that the bytes are the
        # canonical ones the rules would store
        for r in range(RECORDS_PER_MEMBER):
            key, value = self.record(12345, r)
            if value != records.encode_record(records.decode_record(value)):
                raise RuntimeError(f"bulk record {key!r} does not pack canonically")

    @staticmethod
    def _pack(record: dict[str, Any]) -> bytes:
        return msgpack.packb(record, use_bin_type=True)

    @classmethod
    def _split(cls, record: dict[str, Any], marks: tuple[bytes, ...]) -> list[bytes]:
        """The packed record cut around each mark, in the order they appear."""
        data = cls._pack(record)
        parts = []
        for mark in marks:
            if data.count(mark) != 1:
                raise RuntimeError("a template marker is not unique in the packed record")
            head, data = data.split(mark)
            parts.append(head)
        parts.append(data)
        return parts

    def record(self, i: int, r: int) -> tuple[bytes, bytes]:
        """Record ``r`` (0 member, 1 identity) of bulk member ``i``."""
        pk = bulk_pk(i)
        if r == 0:
            ident = bulk_identity(i)
            a, b, c = self._member_parts  # identity_tags sorts before pubkey
            return records.member_key(pk), b"".join((a, ident, b, pk, c))
        a, b = self._identity_parts
        return records.identity_key(bulk_identity(i)), b"".join((a, pk, b))


def bulk_load(app: Application, tree: StateTree, state: KV, first: int, count: int,
              template: MemberTemplate, writer: ThreadPoolExecutor | None = None) -> bytes:
    """Load members ``first .. first+count-1`` as if registered by ``count`` register_member
    transactions in the open block; commit and write to ``state`` (the store view the tree
    lives in). Returns the new root.

    The tree's records go in key-hash order, one chunk per commit. The flat copy of the
    loaded values (``v`` + key, docs/state.md) is held back from those commits and written
    afterwards in key order: LevelDB takes sorted runs without merging them, while values
    spread over the whole key range with every chunk made each new table overlap all the
    others, so its single compaction thread merged the whole load several times and
    stopped writes for most of it. Nothing reads the loaded keys in between; the store
    holds exactly what the commits would have written once this returns."""
    # pass 1: bucket every key by the top bits of its hash, so pass 2 feeds the tree one
    # contiguous key-hash range per commit (each subtree is then built exactly once), and
    # by the top bits of the key itself for pass 3
    buckets = [array("I") for _ in range(1 << BUCKET_BITS)]
    by_key = [[array("I") for _ in range(1 << BUCKET_BITS)] for _ in range(RECORDS_PER_MEMBER)]
    shift = 8 * 2 - BUCKET_BITS
    for n in range(count):
        i = first + n
        pk = bulk_pk(i)
        ident = bulk_identity(i)
        for r, (key, field) in enumerate(((records.member_key(pk), pk),
                                          (records.identity_key(ident), ident))):
            kh = sha256(key).digest()
            buckets[((kh[0] << 8) | kh[1]) >> shift].append(2 * n + r)
            by_key[r][((field[0] << 8) | field[1]) >> shift].append(n)
    futures: list[Future] = []

    def write(batch: Any) -> None:
        if writer is None:
            state.write(batch)
        else:
            if len(futures) >= 1:
                futures.pop(0).result()  # at most one write in flight while we hash
            futures.append(writer.submit(state.write, batch))

    flat_prefix = state.prefix + VALUE_PREFIX
    held = (flat_prefix + records.member_key(b""), flat_prefix + records.identity_key(b""))

    def flush() -> None:
        batch = state.batch()
        tree.commit(batch)
        ops, _ = batch.sink()
        for k in [k for k in ops if k.startswith(held)]:
            del ops[k]
        AnonPeak.sample()
        write(batch)

    pending = 0
    record = template.record
    tree_set = tree.set
    for bucket in buckets:
        for code in bucket:
            n, r = divmod(code, RECORDS_PER_MEMBER)
            tree_set(*record(first + n, r))
        pending += len(bucket)
        if pending >= CHUNK_KEYS:
            flush()
            pending = 0
    # the counters register_member keeps, updated once for the whole load
    meta = records.load(tree, records.META_KEY)
    meta["active"] += count
    meta["members"] += count
    records.store(tree, records.META_KEY, meta)
    ckey = records.cohort_key(template.cohort)
    cohort = records.load(tree, ckey) or {"active": 0}
    cohort["active"] += count
    records.store(tree, ckey, cohort)
    if template.aging is not None:
        gkey = records.aging_key(template.aging)
        aging = records.load(tree, gkey) or {"active": 0, "late": []}
        late = dict(aging["late"])
        for j, _ in template.aging_late:
            late[j] = late.get(j, 0) + count
        aging.update(active=aging["active"] + count, late=sorted([j, c] for j, c in late.items()))
        records.store(tree, gkey, aging)
    akey = records.account_key(REGISTRAR.public_key.raw)
    acct = records.load(tree, akey) or {"nonce": 0}
    acct["nonce"] += count
    records.store(tree, akey, acct)
    flush()
    # pass 3: the held-back flat values, in key order ("ident/" sorts before "member/")
    flat = state.batch().prefixed(VALUE_PREFIX)
    for r in (1, 0):
        for bucket in by_key[r]:
            for key, value in sorted(record(first + n, r) for n in bucket):
                flat.put(key, value)
            if len(flat) >= CHUNK_KEYS:
                write(flat)
                flat = state.batch().prefixed(VALUE_PREFIX)
    write(flat)
    for f in futures:
        f.result()
    return tree.root()
