"""Rule 5: open and panel juries, the seeded O(K) draw."""

from __future__ import annotations

import pytest

from chain.hashing import sha256
from contracts import records
from contracts.calendar import DAY_MS
from contracts.memstate import MemState
from contracts.params import Params
from contracts.rules import jury
from contracts.rules.context import Ctx
from tests.test_contracts_harness import REGISTRAR, Harness, devnet_params

S = 1000


def disputed(mode: str = "open", jurors: int = 5, members: int = 8, appeal: bool = False,
             **jury_kw) -> tuple[Harness, list, int]:
    """Members 0..jurors-1 are jurors; the last member's claim ends up disputed."""
    h = Harness(devnet_params(jury={"mode": mode, **jury_kw}))
    g = h.g0
    with h.block(g + S):
        keys = [h.join(i) for i in range(members)]
    with h.block(g + 15 * S):
        for k in keys[:jurors]:
            h.ok(REGISTRAR, "approve_juror", {"member": k.public_key.raw,
                                              "exam_ref": sha256(b"exam")})
    h.tick(g + 40 * S)
    claimant = keys[-1]
    h.claim(claimant, g + 35 * S)
    cid = h.last_claim_id()
    if appeal:
        h.assess(cid, approve=False)
        h.ok(claimant, "appeal_claim", {"claim_id": cid, "reason_hash": sha256(b"a")})
    else:
        h.assess(cid)
        h.tick(g + 80 * S)
        h.ok(keys[-2], "object_claim", {"claim_id": cid, "reason_hash": sha256(b"o")})
        h.tick(g + 90 * S)
    assert h.app.get_claim(cid)["status"] == "disputed"
    return h, keys, cid


def vote(h: Harness, k, cid: int, pay: bool) -> str:
    return h.send(k, "jury_vote", {"claim_id": cid, "pay": pay}).code


def close(h: Harness, cid: int) -> dict:
    h.tick(h.app.get_claim(cid)["jury"]["close_ms"])
    return h.app.get_claim(cid)


def test_open_jury_majority_pays() -> None:
    h, keys, cid = disputed()
    assert [vote(h, k, cid, p) for k, p in zip(keys[:3], (True, True, False), strict=True)
            ] == ["ok"] * 3
    c = close(h, cid)
    assert c["jury"]["verdict"] == "pay" and c["status"] in ("payable", "paid")
    assert c["pay_period"] == 2


def test_open_jury_tie_denies() -> None:
    h, keys, cid = disputed()
    for k, p in zip(keys[:4], (True, True, False, False), strict=True):
        vote(h, k, cid, p)
    c = close(h, cid)
    assert c["jury"]["verdict"] == "deny" and c["status"] == "denied_final"


def test_no_quorum_keeps_the_assessor_decision() -> None:
    h, keys, cid = disputed()
    vote(h, keys[0], cid, False)
    c = close(h, cid)
    assert c["jury"]["verdict"] == "no_quorum" and c["status"] in ("payable", "paid")
    h, keys, cid = disputed(appeal=True)
    vote(h, keys[0], cid, True)
    c = close(h, cid)
    assert c["jury"]["verdict"] == "no_quorum" and c["status"] == "denied_final"


def test_open_vote_errors() -> None:
    h, keys, cid = disputed()
    assert vote(h, keys[5], cid, True) == "not_a_juror"       # member, not a juror
    assert vote(h, keys[-1], cid, True) == "own_claim"
    assert vote(h, keys[0], cid, True) == "ok"
    assert vote(h, keys[0], cid, True) == "already_voted"
    assert vote(h, keys[0], 99, True) == "unknown_claim"
    close(h, cid)
    assert vote(h, keys[1], cid, True) == "jury_not_open"


def test_objector_cannot_judge() -> None:
    h, keys, cid = disputed(jurors=8)
    assert vote(h, keys[-2], cid, True) == "not_a_juror"


def test_votes_count_until_the_instant_the_window_closes() -> None:
    h, keys, cid = disputed()
    close_ms = h.app.get_claim(cid)["jury"]["close_ms"]
    with h.block(close_ms - 1):
        assert vote(h, keys[0], cid, True) == "ok"
    with h.block(close_ms):
        # begin_block closed the jury before this block's transactions
        assert vote(h, keys[1], cid, True) == "jury_not_open"
    assert h.app.get_claim(cid)["jury"]["yes"] == 1


def test_panel_is_drawn_in_the_next_block_and_only_panelists_vote() -> None:
    h, keys, cid = disputed(mode="panel", jurors=7, members=10, panel_size=3,
                            panel_min_votes=2)
    c = h.app.get_claim(cid)
    assert c["jury"]["start_ms"] is None                   # not drawn yet
    ev = h.tick(h.time + S)
    drawn = [e for e in ev if e.type == "jury_drawn"][0].attrs["panel"]
    assert len(drawn) == 3 and len(set(drawn)) == 3
    panel = [k for k in keys if k.public_key.hex() in drawn]
    outsider = next(k for k in keys[:7] if k.public_key.hex() not in drawn)
    assert vote(h, outsider, cid, True) == "not_on_panel"
    assert vote(h, panel[0], cid, True) == "ok"
    assert vote(h, panel[1], cid, True) == "ok"
    c = close(h, cid)
    assert c["jury"]["verdict"] == "pay"


@pytest.mark.parametrize("mode", ["open", "panel"])
def test_a_juror_who_falls_into_arrears_after_the_draw_cannot_vote(mode: str) -> None:
    """Eligibility is checked at vote time in both modes, with the same function and the
    same code: a panelist drawn while eligible is refused once in arrears."""
    h = Harness(devnet_params(jury={"mode": mode, "panel_size": 3, "panel_min_votes": 2,
                                    "open_quorum": 2}))
    g = h.g0
    with h.block(g + S):
        keys = [h.join(i) for i in range(10)]
    with h.block(g + 15 * S):
        for k in keys[:7]:
            h.ok(REGISTRAR, "approve_juror", {"member": k.public_key.raw,
                                              "exam_ref": sha256(b"exam")})
    with h.block(g + 40 * S):                 # paid at settlement 2: every member owes 10
        h.claim(keys[9], g + 35 * S)
        h.assess(h.last_claim_id())
    with h.block(g + 110 * S):                # a denial appealed after settlement 2
        h.claim(keys[8], g + 108 * S)
        cid = h.last_claim_id()
        h.assess(cid, approve=False)
        h.ok(keys[8], "appeal_claim", {"claim_id": cid, "reason_hash": sha256(b"a")})
    h.tick(g + 111 * S)                       # panels are drawn in this block
    j = h.app.get_claim(cid)["jury"]
    jurors = [k for k in keys[:7] if mode == "open" or k.public_key.hex() in j["panel"]]
    late = jurors[0]
    with h.block(g + 112 * S):
        h.ok(REGISTRAR, "record_arrears", {"member": late.public_key.raw, "period": 2})
        assert h.app.get_member(late.public_key.hex())["in_arrears"]
        before = h.state.snapshot()
        assert vote(h, late, cid, True) == "not_a_juror"
        assert h.state.snapshot() == before
        assert vote(h, jurors[1], cid, True) == "ok"
    assert h.app.get_claim(cid)["jury"]["yes"] == 1


def test_no_vote_before_the_panel_is_drawn() -> None:
    h, keys, cid = disputed(mode="panel", jurors=7, members=10, panel_size=3,
                            panel_min_votes=2, appeal=True)
    with h.block(h.time + S):
        # this block's begin_block drew the panel for the appeal made in the last block
        assert h.app.get_claim(cid)["jury"]["start_ms"] == h.time
    h2, keys2, cid2 = disputed(mode="panel", jurors=7, members=10, panel_size=3,
                               panel_min_votes=2)
    g = h2.g0
    with h2.block(g + 100 * S):
        h2.claim(keys2[0], g + 99 * S)
        cid3 = h2.last_claim_id()
        h2.assess(cid3, approve=False)
        h2.ok(keys2[0], "appeal_claim", {"claim_id": cid3, "reason_hash": sha256(b"a")})
        assert vote(h2, keys2[1], cid3, True) == "jury_not_open"


def test_panel_excludes_claimant_and_objectors() -> None:
    h, keys, cid = disputed(mode="panel", jurors=10, members=10, panel_size=8,
                            panel_min_votes=2)
    ev = h.tick(h.time + S)
    drawn = [e for e in ev if e.type == "jury_drawn"][0].attrs["panel"]
    assert len(drawn) == 8
    assert keys[-1].public_key.hex() not in drawn and keys[-2].public_key.hex() not in drawn


def _pool_ctx(n: int, k: int) -> tuple[Ctx, dict, list]:
    """A bare state holding just a juror pool of n members, counting reads."""
    reads = []

    class Counting(MemState):
        def get(self, key: bytes) -> bytes | None:
            reads.append(key)
            return super().get(key)

    state = Counting()
    for i in range(n):
        state.data[records.pool_key(i)] = records.encode_record(
            {"member": sha256(i.to_bytes(8, "big"))})
    meta = records.new_meta()
    meta["pool"] = n
    state.data[records.META_KEY] = records.encode_record(meta)
    d = devnet_params(jury={"mode": "panel", "panel_size": k, "panel_min_votes": 1})
    p = Params.from_dict(d)
    ctx = Ctx(state, p, p.make_schedule(0), DAY_MS, 1)
    claim = {"id": 7, "member": b"\xff" * 32}
    return ctx, claim, reads


def test_draw_is_deterministic_distinct_and_costs_o_k_reads() -> None:
    costs = {}
    for n in (1_000, 100_000):
        ctx, claim, reads = _pool_ctx(n, 11)
        ctx.meta  # noqa: B018 - load meta before counting
        reads.clear()
        a = jury.draw_panel(ctx, claim, b"\x01" * 32)
        costs[n] = len(reads)
        assert len(a) == 11 and len(set(a)) == 11
        assert a == jury.draw_panel(ctx, claim, b"\x01" * 32)
        assert a != jury.draw_panel(ctx, claim, b"\x02" * 32)
    # reads: one pool slot and one objection check per pick, independent of the pool size
    assert costs[1_000] <= 2 * (4 * 11 + 64) and costs[100_000] <= 2 * (4 * 11 + 64)


def test_draw_small_pool_takes_everyone_eligible() -> None:
    ctx, claim, _ = _pool_ctx(5, 11)
    assert len(jury.draw_panel(ctx, claim, b"\x01" * 32)) == 5
    ctx, claim, _ = _pool_ctx(0, 3)
    assert jury.draw_panel(ctx, claim, b"\x01" * 32) == []


def test_draw_is_roughly_uniform() -> None:
    ctx, claim, _ = _pool_ctx(40, 4)
    hits = [0] * 40
    index = {sha256(i.to_bytes(8, "big")): i for i in range(40)}
    for s in range(500):
        for pk in jury.draw_panel(ctx, claim, sha256(s.to_bytes(4, "big"))):
            hits[index[pk]] += 1
    # 2000 picks over 40 slots: expect 50 each; a biased draw would show far outliers
    assert min(hits) > 20 and max(hits) < 85


def test_panel_depends_on_the_next_blocks_seed_only() -> None:
    def panel_with(seed_opening: bytes, seed_next: bytes) -> list[str]:
        h = Harness(devnet_params(jury={"mode": "panel", "panel_size": 3,
                                        "panel_min_votes": 1}))
        g = h.g0
        with h.block(g + S):
            keys = [h.join(i) for i in range(30)]
        with h.block(g + 15 * S):
            for k in keys[:25]:
                h.ok(REGISTRAR, "approve_juror", {"member": k.public_key.raw,
                                                  "exam_ref": sha256(b"exam")})
        with h.block(g + 40 * S):
            h.claim(keys[-1], g + 35 * S)
            h.assess(h.last_claim_id(), approve=False)
        h.height += 1
        h.app.begin_block(h.height, g + 41 * S, seed_opening)
        h.in_block = True
        h.ok(keys[-1], "appeal_claim", {"claim_id": h.last_claim_id(),
                                        "reason_hash": sha256(b"a")})
        h.end()
        h.height += 1
        ev = h.app.begin_block(h.height, g + 42 * S, seed_next)
        h.app.end_block()
        return [e for e in ev if e.type == "jury_drawn"][0].attrs["panel"]

    a = panel_with(b"\x01" * 32, b"\x0a" * 32)
    assert a == panel_with(b"\x02" * 32, b"\x0a" * 32)     # opening block's seed: no effect
    assert a != panel_with(b"\x01" * 32, b"\x0b" * 32)     # the next block's seed decides
