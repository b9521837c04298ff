"""The jury part of the auditor's model of the rules (rule 5): who may sit and vote, the
panel draw redone from the block seed, the tally, quorum, majority and timing.

``JuryChecks`` is a part of ``audit.rules.RuleChecker`` (its bookkeeping, ``_fail`` and
``_expect`` are the checker's); it lives apart only to keep each file readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chain.hashing import sha256
from contracts import records

if TYPE_CHECKING:
    from audit.rules import Moment

JURY_DRAW_TAG = b"mutual-ledger/jury-draw/v1\x00"   # docs/rules.md "The panel draw"


@dataclass
class Jury:
    origin: str
    mode: str
    claimant: str
    close_ms: int | None = None
    yes: int = 0
    no: int = 0
    voters: set[str] = field(default_factory=set)
    panel: list[str] | None = None


class JuryChecks:
    """Rule 5 for ``RuleChecker``."""

    # ---- juries -------------------------------------------------------------------------

    def _on_jury_opened(self, m: Moment, a: dict, txi: int | None) -> None:
        cid = a["claim_id"]
        c = self._claim(cid)
        assert c is not None
        self._expect(m, txi, f"claim/{cid}.jury.mode", self.claim_params(cid).jury.mode,
                     a["mode"])
        j = Jury(a["origin"], a["mode"], c["member"].hex())
        if j.mode == "open":
            j.close_ms = m.time + self.params.jury.window_ms
            self._expect(m, txi, f"claim/{cid}.jury.close_ms", j.close_ms,
                         c["jury"]["close_ms"])
        self.juries[cid] = j

    def draw_panel(self, state: Any, cid: int, claimant: str, block_seed: bytes
                   ) -> list[str]:
        """The panel per docs/rules.md, over the pool in ``state`` (the state the draw
        ran against: after the previous block)."""
        k = self.claim_params(cid).jury.panel_size
        n = records.load(state, records.META_KEY)["pool"]
        seed = sha256(JURY_DRAW_TAG + block_seed + records.u64(cid))

        def conflicted(pk: bytes) -> bool:
            # an aged-out juror still in the pool is skipped too (rule 1, "Upper age")
            return (pk.hex() == claimant or self.statuses.get(pk.hex()) == "aged_out"
                    or state.get(records.objection_key(cid, pk)) is not None)

        def slot(i: int) -> bytes:
            return records.load(state, records.pool_key(i))["member"]

        chosen: list[str] = []
        if n <= 2 * k:
            for i in sorted(range(n), key=lambda i: sha256(seed + records.u64(i))):
                pk = slot(i)
                if not conflicted(pk):
                    chosen.append(pk.hex())
                    if len(chosen) == k:
                        break
            return chosen
        seen: set[bytes] = set()
        for attempt in range(4 * k + 64):
            pk = slot(int.from_bytes(sha256(seed + records.u64(attempt)), "big") % n)
            if pk in seen:
                continue
            seen.add(pk)
            if conflicted(pk):
                continue
            chosen.append(pk.hex())
            if len(chosen) == k:
                break
        return chosen

    def _on_jury_drawn(self, m: Moment, a: dict, txi: int | None) -> None:
        cid = a["claim_id"]
        j = self.juries.get(cid)
        if j is None or j.mode != "panel" or j.panel is not None:
            raise self._fail(m, txi, f"claim {cid}: a panel was drawn without a pending "
                                     "panel jury")
        want = self.draw_panel(self._state_at(m.prev_root), cid, j.claimant, m.seed)
        self._expect(m, txi, f"claim/{cid}.jury.panel", want, a["panel"],
                     f"claim {cid}'s panel is not the draw from its seed")
        c = self._claim(cid)
        assert c is not None
        self._expect(m, txi, f"claim/{cid}.jury.seed", m.seed.hex(),
                     (c["jury"]["seed"] or b"").hex())
        j.panel = want
        j.close_ms = m.time + self.params.jury.window_ms
        self._expect(m, txi, f"claim/{cid}.jury.close_ms", j.close_ms, a["close_ms"])
        self.stats["panels"] += 1

    def _on_jury_vote(self, m: Moment, a: dict, txi: int | None) -> None:
        cid, pk = a["claim_id"], a["juror"]
        j = self.juries.get(cid)
        if j is None or j.close_ms is None:
            raise self._fail(m, txi, f"a vote on claim {cid} was counted with no jury open")
        if m.time >= j.close_ms:
            raise self._fail(m, txi, f"a vote on claim {cid} was counted after the window "
                                     "closed", "block.time", f"< {j.close_ms}", m.time)
        if pk in j.voters or pk == j.claimant or pk in self.objectors.get(cid, set()):
            raise self._fail(m, txi, f"juror {pk} may not vote on claim {cid} (repeat, "
                                     "claimant or objector)")
        # rule 5: an eligible juror (in the pool: approved, active, not in arrears) at
        # vote time, in both modes; a panel vote also needs a seat on the panel
        eligible = pk in self.pool and (j.mode == "open" or pk in (j.panel or []))
        if not eligible or self.statuses.get(pk) != "active":
            raise self._fail(m, txi, f"member {pk} voted on claim {cid} without being an "
                                     f"eligible juror ({j.mode} jury)", "juror")
        j.voters.add(pk)
        if a["pay"]:
            j.yes += 1
        else:
            j.no += 1

    def _on_jury_closed(self, m: Moment, a: dict, txi: int | None) -> None:
        cid = a["claim_id"]
        j = self.juries.pop(cid, None)
        if j is None or j.close_ms is None:
            raise self._fail(m, txi, f"claim {cid}'s jury closed without being open")
        self._due(m, txi, f"jury of claim {cid}", j.close_ms)
        self._expect(m, txi, f"claim/{cid}.jury.yes", j.yes, a["yes"],
                     f"claim {cid}'s jury tally is not the votes cast")
        self._expect(m, txi, f"claim/{cid}.jury.no", j.no, a["no"],
                     f"claim {cid}'s jury tally is not the votes cast")
        jp = self.claim_params(cid).jury
        votes = j.yes + j.no
        quorum = jp.open_quorum if j.mode == "open" else jp.panel_min_votes
        if votes < quorum:
            verdict = "no_quorum"
        else:
            verdict = "pay" if j.yes * 10_000 > jp.pass_bps * votes else "deny"
        pay = verdict == "pay" or (verdict == "no_quorum" and j.origin == "objection")
        self._expect(m, txi, f"claim/{cid}.jury.verdict", verdict, a["verdict"],
                     f"claim {cid}'s verdict does not follow from quorum and majority")
        self._expect(m, txi, f"claim/{cid} pay decision", pay, a["pay"])
        c = self._claim(cid)
        assert c is not None
        self._expect(m, txi, f"claim/{cid}.jury.verdict", verdict, c["jury"]["verdict"])
        self._expect(m, txi, f"claim/{cid}.jury.yes", j.yes, c["jury"]["yes"])
        self._expect(m, txi, f"claim/{cid}.jury.no", j.no, c["jury"]["no"])
        if not pay:
            # rule 3: a waiting accident claim not paid by a jury is found no accident when
            # the jury overturned the approval (objection) or upheld a denial that found none
            finding = c.get("accident_confirmed")
            if cid in self.waiting_accidents and (j.origin == "objection" or finding is False):
                self.reject_due.add(cid)
            else:
                self._expect(m, txi, f"claim/{cid}.status", "denied_final", c["status"])
            self.final.add(cid)
        self.verdicts[verdict] += 1
        self.stats["juries"] += 1


# =====================================================================================
# the replay
# =====================================================================================
