"""The state interface, the key layout, and how records are encoded.

The rules see state only through ``State``: ``get``/``set``/``delete`` over byte keys and
byte values. A value is the canonical msgpack (chain.encoding) of a map. Keys are an ASCII
prefix followed by fixed-width binary fields, so every key is unambiguous and keys of one
kind sort in numeric order:

    b"meta"                        global counters and queues (see Meta fields in docs)
    b"params"                      the genesis params object
    b"genesis"                     {"chain_id", "genesis_hash", "genesis_time_ms"}
    b"role/" + pk32                {"roles": [text]}  registrar / assessor / operator
    b"acct/" + pk32                {"nonce": last used nonce}
    b"member/" + pk32              member record
    b"ident/" + tag32              {"member": pk32, "status": "live" | "barred"} one per
                                   identity tag (docs/privacy.md)
    b"cohort/" + u64be(j)          {"active": count of active members whose cohort is j}
    b"claim/" + u64be(id)          claim record
    b"period/" + u64be(n)          period record (after its notice)
    b"nq/" + u64be(n)              {"claims": [id]} approved claims waiting for notice n
    b"pq/" + u64be(n)              {"claims": [id]} claims payable at settlement n
    b"obj/" + u64be(id) + pk32     {"reason_hash": bin32} an objection
    b"vote/" + u64be(id) + pk32    {"pay": bool} a juror's vote
    b"panel/" + u64be(id) + pk32   {"seat": uint} a drawn panel seat
    b"pool/" + u64be(i)            {"member": pk32} juror pool slot i (0 <= i < meta.pool)
    b"juryq/" + u64be(i)           {"claim": id} jury closing queue (FIFO by close time)
    b"drawq/" + u64be(i)           {"claim": id} panels waiting for the next block's seed
    b"arrq/" + u64be(n) + u64be(i) {"member": pk32} i-th arrears recorded for period n
    b"arrqn/" + u64be(n)           {"count": uint} number of arrq entries for period n
    b"appq/" + u64be(i)            {"claim": id, "close_ms"} appeal windows of denials that
                                   found no accident (rule 3), FIFO by close time
    b"age/" + u64be(n)             {"active": count, "late": [[cohort, count]]} active members
                                   who age out at notice n (rule 1, "Upper age")
    b"vsets"                       {"heights": [uint]} ascending heights at which the
                                   validator set changed (1: the genesis set)
    b"vset/" + u64be(h)            {"validators": [validator record], "changes": [change]}
                                   the set that signs heights h .. (next entry - 1)
                                   (docs/governance.md)
    b"usedkey/" + pk32             {"height": uint} a consensus key some validator used
                                   (genesis keys at height 1): never usable again
    b"jail/" + pk32                {"evidence": bin32, "height": offence height,
                                   "jailed_height": uint, "validator": validator record,
                                   "restored_height": uint | None}
    b"props"                       {"next": next proposal id, "open": [[id, deadline_ms]]}
    b"prop/" + u64be(id)           proposal record (docs/governance.md, "Records")
    b"paramh"                      {"next_v": uint, "versions": [[from_period, v]]}
                                   parameter history index (absent: genesis params only)
    b"paramv/" + u64be(v)          {"v", "from_period", "params": params object,
                                   "proposal": id, "height": uint} a parameter version

u64be is an unsigned 64-bit big-endian integer; pk32 a 32-byte Ed25519 public key.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgpack

from chain import encoding


class State(Protocol):
    """The key-value view the rules run against."""

    def get(self, key: bytes) -> bytes | None: ...
    def set(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


META_KEY = b"meta"
PARAMS_KEY = b"params"
GENESIS_KEY = b"genesis"


def role_key(pk: bytes) -> bytes:
    return b"role/" + pk


def account_key(pk: bytes) -> bytes:
    return b"acct/" + pk


def member_key(pk: bytes) -> bytes:
    return b"member/" + pk


def identity_key(tag: bytes) -> bytes:
    return b"ident/" + tag


def cohort_key(j: int) -> bytes:
    return b"cohort/" + u64(j)


def claim_key(claim_id: int) -> bytes:
    return b"claim/" + u64(claim_id)


def period_key(n: int) -> bytes:
    return b"period/" + u64(n)


def notice_queue_key(n: int) -> bytes:
    return b"nq/" + u64(n)


def payable_queue_key(n: int) -> bytes:
    return b"pq/" + u64(n)


def objection_key(claim_id: int, pk: bytes) -> bytes:
    return b"obj/" + u64(claim_id) + pk


def vote_key(claim_id: int, pk: bytes) -> bytes:
    return b"vote/" + u64(claim_id) + pk


def panel_key(claim_id: int, pk: bytes) -> bytes:
    return b"panel/" + u64(claim_id) + pk


def pool_key(i: int) -> bytes:
    return b"pool/" + u64(i)


def jury_queue_key(i: int) -> bytes:
    return b"juryq/" + u64(i)


def draw_queue_key(i: int) -> bytes:
    return b"drawq/" + u64(i)


def arrears_queue_key(n: int, i: int) -> bytes:
    return b"arrq/" + u64(n) + u64(i)


def arrears_count_key(n: int) -> bytes:
    return b"arrqn/" + u64(n)


def appeal_queue_key(i: int) -> bytes:
    return b"appq/" + u64(i)


VSETS_KEY = b"vsets"


def vset_key(height: int) -> bytes:
    return b"vset/" + u64(height)


USEDKEYS_PREFIX = b"usedkey/"
PROPS_KEY = b"props"
PARAMH_KEY = b"paramh"


def used_key(pk: bytes) -> bytes:
    return USEDKEYS_PREFIX + pk


def jail_key(pk: bytes) -> bytes:
    return b"jail/" + pk


def proposal_key(proposal_id: int) -> bytes:
    return b"prop/" + u64(proposal_id)


def params_version_key(v: int) -> bytes:
    return b"paramv/" + u64(v)


def encode_record(record: dict[str, Any]) -> bytes:
    return encoding.encode(record)


def decode_record(data: bytes) -> dict[str, Any]:
    # State bytes were written by encode_record, so a plain (fast) unpack is enough here;
    # chain.encoding.decode's canonical re-check is for untrusted input.
    value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if not isinstance(value, dict):
        raise ValueError("state record is not a map")
    return value


def load(state: State, key: bytes) -> dict[str, Any] | None:
    data = state.get(key)
    return None if data is None else decode_record(data)


def store(state: State, key: bytes, record: dict[str, Any]) -> None:
    state.set(key, encode_record(record))


# The last meta record decoded or encoded, as (bytes, fields): every transaction reads
# meta and most write it, so one whose bytes are unchanged is copied, not decoded again.
# Its fields are all ints, so a shallow copy is a full one.
_meta_memo: tuple[bytes, dict[str, Any]] = (b"", {})


def load_meta(state: State) -> dict[str, Any] | None:
    """``load(state, META_KEY)``, memoised on the bytes."""
    global _meta_memo
    data = state.get(META_KEY)
    if data is None:
        return None
    memo = _meta_memo
    if data == memo[0]:
        return dict(memo[1])
    meta = decode_record(data)
    _meta_memo = (data, dict(meta))
    return meta


def store_meta(state: State, meta: dict[str, Any]) -> None:
    """``store(state, META_KEY, meta)``, remembering the pair for ``load_meta``."""
    global _meta_memo
    data = encode_record(meta)
    state.set(META_KEY, data)
    _meta_memo = (data, dict(meta))


def new_meta() -> dict[str, Any]:
    """Global counters: every field is documented in docs/rules.md ("State")."""
    return {
        "height": 0, "time_ms": 0,
        "next_claim": 1,
        "next_notice": 1, "next_objection_close": 1, "next_settlement": 1,
        "next_arrears": 1,
        "active": 0, "members": 0, "pool": 0, "surplus": 0,
        "jury_head": 0, "jury_tail": 0, "draw_head": 0, "draw_tail": 0,
    }


def aging_key(n: int) -> bytes:
    return b"age/" + u64(n)
