"""An independent model of the pooling rules (``RuleChecker``): it rechecks every notice
snapshot, settlement (claims, fee, surplus, shares, caps, conservation), jury (eligibility,
panel draw, tally, quorum, majority, timing) and waiting-period decision (at filing, and
when a waiting-period accident claim is finally found no accident) from the events
and records of the replay, without calling the rules it checks. Each period is computed
with the parameters in force for it, from the model's own parameter history
(audit/governance_model.py: the governance transactions tallied against the replayed
validator sets)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from audit.governance_model import GovernanceModel
from audit.jury_model import Jury, JuryChecks
from audit.report import ABSENT, AuditFailure
from audit.verify_share import aging_notice, upper_age_ms
from chain.genesis import Genesis
from chain.tx import Transaction
from chain.validators import ValidatorSet
from contracts import records
from contracts.calendar import age_days, age_years, cst_date, parse_date
from contracts.params import Params
from contracts.rules import payout
from node.executor import Applied

EXIT_EVENTS = ("member_left", "member_removed", "member_paid_out", "member_barred")


@dataclass
class Moment:
    height: int
    time: int
    prev_time: int | None
    prev_root: bytes
    seed: bytes


class RuleChecker(JuryChecks):
    """Rechecks the rules' decisions from the replayed records and events, with its own
    bookkeeping (active members per cohort, the juror pool, payable claims, surplus,
    year-to-date totals, jury tallies) so that a bug in ``contracts`` and the audit would
    have to agree to go unnoticed. docs/rules.md is the specification followed here.
    """

    def __init__(self, genesis: Genesis, state: Callable[[], Any],
                 state_at: Callable[[bytes], Any],
                 validators_at: Callable[[int], ValidatorSet] | None = None) -> None:
        """``validators_at``: the set of a height as the replay computed it (the
        governance model tallies votes with it; default: the genesis set throughout)."""
        self.genesis = genesis
        # the genesis parameters: those no change may alter (the calendar, waiting period,
        # windows, upper age) are read here; the rest per period from ``self.gov``
        self.params = Params.from_dict(genesis.params)
        self.gov = GovernanceModel(genesis.params, validators_at or (
            lambda h: genesis.validators))
        self.claim_version: dict[int, int] = {}
        self.schedule = self.params.make_schedule(genesis.genesis_time_ms)
        self._state = state
        self._state_at = state_at
        self.active = 0
        self.cohorts: Counter[int] = Counter()
        self.member_cohort: dict[str, int] = {}
        self.member_exit: dict[str, int] = {}
        self.statuses: dict[str, str] = {}
        self.jurors: set[str] = set()
        self.pool: set[str] = set()
        self.arrears: dict[str, set[int]] = {}
        self.next_notice = 1
        self.next_settlement = 1
        self.snapshots: dict[int, list[dict[str, int]]] = {}
        self.payable: dict[int, list[int]] = {}
        self.surplus = 0
        self.ytd: dict[int, dict[int, int]] = {}
        self.charges: dict[int, dict[int, int]] = {}
        self.uncollected: Counter[int] = Counter()
        self.touched: set[int] = set()     # periods whose collected/uncollected changed
        self.juries: dict[int, Jury] = {}
        self.objectors: dict[int, set[str]] = {}
        self.settled: list[int] = []
        self.final: set[int] = set()
        # rule 3 decided after filing: waiting accident claims, denials that found no
        # accident (claim -> appeal close), and rejections a jury close calls for
        self.waiting_accidents: set[int] = set()
        self.appeal_due: dict[int, int] = {}
        self.reject_due: set[int] = set()
        # refunds: members whose shares rule 3 made refundable, refunded
        self.refundable: set[str] = set()
        self.refunded: set[str] = set()
        # the upper age (rule 1): active members by the notice that takes them out
        self.aging: dict[int, set[str]] = {}
        self.member_aging: dict[str, int] = {}
        self.aged_events: dict[int, int] = {}
        self.stats: Counter[str] = Counter()
        self.verdicts: Counter[str] = Counter()
        # rule 1/3 identities, by keyed tag (docs/privacy.md): tag -> (member, live|barred),
        # each member's tags as admitted, and the tags a block changed (compared with the
        # ident/ records at the end of the block)
        self.idents: dict[bytes, tuple[str, str]] = {}
        self.member_tags: dict[str, list[bytes]] = {}
        self.idents_touched: set[bytes] = set()
        # the transaction whose events are being checked (None: begin-block events)
        self._tx: Transaction | None = None

    # ---- driving ------------------------------------------------------------------------

    @property
    def tx_params(self) -> Params:
        """The parameters a transaction runs under now: those of the first period not in
        notice yet (docs/governance.md, "Rule parameters")."""
        return self.gov.params_at(self.next_notice)

    def claim_params(self, cid: int) -> Params:
        """The parameters claim ``cid`` was filed under (its jury mode and sizes)."""
        return self.gov.params_v(self.claim_version.get(cid, 0))

    def on_block(self, m: Moment, applied: Applied, txs: list[Any] | None = None,
                 evidence_hashes: set[bytes] | None = None) -> None:
        """Recheck one block: its begin-block events, then each applied transaction (the
        governance model reads ``txs`` themselves) with its events, in order."""
        self.gov.begin_block(m.height, m.time)
        events: list[tuple[int | None, Any]] = [(None, e) for e in applied.begin_events]
        for i, receipt in enumerate(applied.receipts):
            if receipt.ok:
                if txs is not None:
                    events.append((i, txs[i]))
                events.extend((i, e) for e in receipt.events)
        self.reject_due = {cid for cid, t in self.appeal_due.items() if t <= m.time}
        self._tx = None
        for txi, ev in events:
            if isinstance(ev, Transaction):
                self._tx = ev
                try:
                    self.gov.on_tx(ev, self.next_notice)
                except AuditFailure as exc:
                    exc.tx = txi
                    raise
                continue
            handler = getattr(self, "_on_" + ev.type, None)
            if handler is not None:
                handler(m, ev.attrs, txi)
            elif ev.type in EXIT_EVENTS:
                self._exit(m, ev.attrs, txi, ev.type)
        # a record's collected/uncollected are checked at the end of the block: arrears
        # recorded in the block that settles the period change them after the settlement
        for n in sorted(self.touched):
            self._check_uncollected(m, None, n)
        self.touched.clear()
        self._check_idents(m)
        for cid in sorted(self.reject_due):
            c = self._claim(cid)
            raise self._fail(m, None, f"claim {cid} was finally found no accident inside "
                                      "the waiting period but rule 3 was not applied",
                             f"claim/{cid}.status", "rejected_waiting",
                             None if c is None else c["status"])
        self.gov.end_block(self._state(), evidence_hashes or set())
        meta = records.load(self._state(), records.META_KEY)
        self._expect(m, None, "meta.active (active members)", self.active, meta["active"])
        self._expect(m, None, "meta.pool (juror pool size)", len(self.pool), meta["pool"])
        self._expect(m, None, "meta.surplus", self.surplus, meta["surplus"])

    def final_claims(self, state: Any) -> list[int]:
        return sorted(self.final)

    # ---- helpers ------------------------------------------------------------------------

    def _fail(self, m: Moment, txi: int | None, what: str, name: str | None = None,
              expected: Any = None, found: Any = None) -> AuditFailure:
        return AuditFailure(m.height, what, tx=txi, field=name, expected=expected,
                            found=found)

    def _expect(self, m: Moment, txi: int | None, name: str, expected: Any,
                found: Any, what: str | None = None) -> None:
        if expected != found:
            raise self._fail(m, txi, what or f"{name} is not what the rules give", name,
                             expected, found)

    def _load(self, key: bytes) -> dict[str, Any] | None:
        return records.load(self._state(), key)

    def _claim(self, cid: int) -> dict[str, Any] | None:
        """The claim as the rules read it (a payout applies once its period settled)."""
        return payout.load_claim(self._state(), cid)

    def _member(self, pk_hex: str) -> dict[str, Any]:
        rec = payout.load_member(self._state(), bytes.fromhex(pk_hex))
        assert rec is not None, pk_hex
        return rec

    def _due(self, m: Moment, txi: int | None, what: str, due: int) -> None:
        """A scheduled job must run in the first block at or after its instant."""
        if m.time < due:
            raise self._fail(m, txi, f"{what} ran before its time", "block.time", due, m.time)
        if m.prev_time is not None and m.prev_time >= due:
            raise self._fail(m, txi, f"{what} ran late: the previous block (time "
                                     f"{m.prev_time}) was already at or past {due}",
                             "block.time")

    # ---- membership and the pool --------------------------------------------------------

    def _first_sharing_period(self, joined_ms: int) -> int:
        """docs/rules.md rule 1: the first notice not run yet, and under sharing_basis
        "protected" the first of those at or after the end of the waiting period."""
        n = self.next_notice
        if self.params.sharing_basis == "protected":
            while self.schedule.notice_ms(n) < joined_ms + self.params.waiting_ms:
                n += 1
        return n

    def _on_member_joined(self, m: Moment, a: dict, txi: int | None) -> None:
        pk, cohort = a["member"], a["cohort"]
        self._check_admission(m, txi, pk)
        want = self._first_sharing_period(m.time)
        self._expect(m, txi, f"member/{pk}.cohort", want, cohort,
                     f"member {pk} joined the wrong cohort")
        rec = self._member(pk)
        aging = aging_notice(self.params, self.schedule, rec["birth_date"])
        self._expect(m, txi, f"member/{pk}.age_out_period", aging, rec.get("age_out_period"),
                     f"member {pk}'s record names the wrong notice for the upper age")
        if aging is not None:
            self.aging.setdefault(aging, set()).add(pk)
            self.member_aging[pk] = aging
        self._expect(m, txi, f"member/{pk}.joined_ms", m.time, rec["joined_ms"])
        self._expect(m, txi, f"member/{pk}.cohort", want, rec["cohort"],
                     f"member {pk}'s record has the wrong cohort")
        self.active += 1
        self.cohorts[cohort] += 1
        self.member_cohort[pk] = cohort
        self.statuses[pk] = "active"

    def _check_admission(self, m: Moment, txi: int | None, pk: str) -> None:
        """Rule 1 on the stored record and the transaction that admitted it, at the block's
        CST date: a tag under exactly the identity keys in use, no tag live or barred, the
        age window, the guardian of a minor (``adult_age_years``), the credit attestation
        passed (docs/rules.md, rule 1; docs/privacy.md)."""
        rec = self._member(pk)
        p = self.tx_params
        pairs = rec["identity_tags"]
        key_ids = [k for k, _ in pairs]
        if key_ids != list(p.identity_key_ids):
            raise self._fail(m, txi, f"member {pk} was admitted without exactly one identity "
                                     "tag under each identity key in use",
                             f"member/{pk}.identity_tags (key ids)",
                             list(p.identity_key_ids), key_ids)
        tags = [bytes(t) for _, t in pairs]
        self._check_admission_tx(m, txi, pk, rec)
        for tag in tags:
            holder, status = self.idents.get(tag, (None, None))
            if status == "barred":
                raise self._fail(m, txi, f"member {pk} was admitted with an identity barred by "
                                         f"the waiting-period rule (member {holder})",
                                 f"ident/{tag.hex()}.status", ABSENT, "barred")
            if status == "live" and self.statuses.get(holder) == "active":
                raise self._fail(m, txi, f"member {pk} was admitted with an identity that has "
                                         f"a live membership (member {holder})",
                                 f"ident/{tag.hex()}.member", holder, pk)
        birth, today = parse_date(rec["birth_date"]), cst_date(m.time)
        age = age_years(birth, today)
        if not (age_days(birth, today) >= p.min_join_age_days and age <= p.max_join_age_years):
            raise self._fail(m, txi, f"member {pk} was admitted outside the age window",
                             f"member/{pk}.birth_date", None, rec["birth_date"])
        minor = p.adult_age_years is not None and age < p.adult_age_years
        guardian = rec.get("guardian_tag")
        if minor != (guardian is not None) or (minor and bytes(guardian) in tags):
            raise self._fail(m, txi, f"member {pk} (age {age}) was admitted "
                                     + ("without a guardian's attestation" if minor
                                        and guardian is None
                                        else "with the member's own tag as the guardian's"
                                        if minor else "with a guardian it may not name"),
                             f"member/{pk}.guardian_tag",
                             "a guardian's identity tag, not one of the member's"
                             if minor else ABSENT,
                             ABSENT if guardian is None else bytes(guardian).hex())
        self.member_tags[pk] = tags
        for tag in tags:
            self.idents[tag] = (pk, "live")
            self.idents_touched.add(tag)

    def _check_admission_tx(self, m: Moment, txi: int | None, pk: str,
                            rec: dict[str, Any]) -> None:
        """The admitting ``register_member``: its credit attestation says passed (the only
        trace of the credit check on chain) and the record keeps what it sent."""
        tx = self._tx
        if tx is None:   # a caller that does not hand the block's transactions over
            return
        body = tx.body
        if tx.type != "register_member" or body.get("member") != bytes.fromhex(pk):
            raise self._fail(m, txi, f"member {pk} joined without a register_member "
                                     "transaction admitting it", "tx.type",
                             "register_member", tx.type)
        if body.get("credit_passed") is not True:
            raise self._fail(m, txi, f"member {pk} was admitted on a credit attestation that "
                                     "does not say passed", "tx.credit_passed", True,
                             body.get("credit_passed", ABSENT))
        for name in ("identity_tags", "birth_date", "health_commitment",
                     "credit_attestation", "guardian_tag"):
            want = body.get(name, ABSENT)
            got = rec.get(name, ABSENT)
            if name == "identity_tags" and want is not ABSENT:
                want = [[k, bytes(t)] for k, t in want]
                got = [[k, bytes(t)] for k, t in got]
            self._expect(m, txi, f"member/{pk}.{name}", want, got,
                         f"member {pk}'s record does not keep the {name} it was admitted "
                         "with")

    def _bar(self, pk: str) -> None:
        """Rule 3 in the model: every tag of the member is barred for good."""
        for tag in self.member_tags.get(pk, []):
            self.idents[tag] = (pk, "barred")
            self.idents_touched.add(tag)

    def _check_idents(self, m: Moment) -> None:
        """The ``ident/`` records the block changed are the model's, tag by tag."""
        for tag in sorted(self.idents_touched):
            want = self.idents.get(tag)
            rec = self._load(records.identity_key(tag))
            got = None if rec is None else (bytes(rec["member"]).hex(), rec["status"])
            if want != got:
                raise self._fail(m, None, f"identity record ident/{tag.hex()} is not what "
                                          "rules 1 and 3 give",
                                 f"ident/{tag.hex()}",
                                 ABSENT if want is None else
                                 {"member": want[0], "status": want[1]},
                                 ABSENT if got is None else {"member": got[0], "status": got[1]})
        self.idents_touched.clear()

    def _exit(self, m: Moment, a: dict, txi: int | None, kind: str = "member_left") -> None:
        pk = a["member"]
        if self.statuses.get(pk) != "active":
            raise self._fail(m, txi, f"member {pk} left although not active", "status",
                             "active", self.statuses.get(pk))
        self._expect(m, txi, "exit_period", self.next_notice - 1, a["exit_period"],
                     f"member {pk}'s exit period is wrong")
        self.active -= 1
        self.cohorts[self.member_cohort[pk]] -= 1
        self.aging.get(self.member_aging.get(pk, 0), set()).discard(pk)
        self.statuses[pk] = "ended"
        self.member_exit[pk] = a["exit_period"]
        self.pool.discard(pk)
        if kind == "member_barred":
            self._bar(pk)
        elif kind in ("member_left", "member_removed"):
            # the identity is free again, unless rule 3 barred it (a bar stays); a payout
            # leaves the record as it is (docs/rules.md, "Payouts")
            for tag in self.member_tags.get(pk, []):
                if self.idents.get(tag, (None, None))[1] != "barred":
                    self.idents.pop(tag, None)
                    self.idents_touched.add(tag)

    def _on_juror_approved(self, m: Moment, a: dict, txi: int | None) -> None:
        pk = a["member"]
        rec = self._member(pk)
        jp = self.tx_params.jury
        age = age_years(parse_date(rec["birth_date"]), cst_date(m.time))
        if (self.statuses.get(pk) != "active" or age < jp.juror_min_age_years
                or m.time - rec["joined_ms"] < jp.juror_min_membership_ms
                or self.arrears.get(pk)):
            raise self._fail(m, txi, f"member {pk} approved as a juror although not "
                                     "eligible (age, membership time, arrears or status)")
        self.jurors.add(pk)
        self.pool.add(pk)

    def _billed(self, pk: str, n: int) -> int:
        """What member ``pk`` was charged for settled period n (rule 8: any member in n's
        snapshot, whatever their status now), from this model's own figures."""
        cohort, exit_p = self.member_cohort.get(pk), self.member_exit.get(pk)
        if cohort is None or n < cohort or (exit_p is not None and n > exit_p):
            return 0
        first = self.schedule.first_period_of_year(self.schedule.year(n))
        return self.charges.get(n, {}).get(cohort if cohort > first else 0, 0)

    def _check_uncollected(self, m: Moment, txi: int | None, n: int) -> None:
        rec = self._load(records.period_key(n))
        assert rec is not None
        self._expect(m, txi, f"period/{n}.uncollected", self.uncollected[n],
                     rec.get("uncollected"), f"period {n}'s uncollected is not its billed "
                                             "shares recorded unpaid")
        charged = sum(g["members"] * g["charge"] for g in rec["groups"])
        self._expect(m, txi, f"period/{n}.collected", charged - self.uncollected[n],
                     rec["collected"], f"period {n}'s collected is not its charges less "
                                       "the uncollected shares")

    def _on_arrears_recorded(self, m: Moment, a: dict, txi: int | None) -> None:
        pk, n = a["member"], a["period"]
        if pk in self.refunded:
            raise self._fail(m, txi, f"arrears recorded for member {pk} in period {n} after "
                                     "its refund settled every billed share",
                             f"member/{pk}.arrears", None, [n, a["amount"]])
        billed = self._billed(pk, n)
        if billed == 0 or n in self.arrears.get(pk, set()):
            raise self._fail(m, txi, f"arrears recorded for member {pk} in period {n}, "
                                     "which it was not billed for (or already recorded)",
                             f"member/{pk}.arrears", None, [n, a["amount"]])
        self._expect(m, txi, f"member/{pk}.arrears (period {n})", billed, a["amount"],
                     f"member {pk}'s arrears for period {n} are not its charge")
        self.arrears.setdefault(pk, set()).add(n)
        self.pool.discard(pk)
        self.uncollected[n] += a["amount"]
        self.touched.add(n)

    def _on_arrears_paid(self, m: Moment, a: dict, txi: int | None) -> None:
        pk = a["member"]
        self.arrears.get(pk, set()).discard(a["period"])
        if self.statuses.get(pk) == "active" and pk in self.jurors and not self.arrears[pk]:
            self.pool.add(pk)
        self.uncollected[a["period"]] -= a["amount"]
        self.touched.add(a["period"])

    def _on_arrears_cleared_by_claim(self, m: Moment, a: dict, txi: int | None) -> None:
        self.arrears.pop(a["member"], None)

    # ---- claims and the waiting period -------------------------------------------------

    def _check_amount(self, m: Moment, txi: int | None, c: dict, member: dict) -> None:
        age = age_years(parse_date(member["birth_date"]), cst_date(c["diagnosed_ms"]))
        self._expect(m, txi, f"claim/{c['id']}.age_at_diagnosis", age, c["age_at_diagnosis"])
        self._expect(m, txi, f"claim/{c['id']}.amount", self.tx_params.payout_for(c["disease"],
                                                                             age), c["amount"])

    def _waiting(self, c: dict, member: dict) -> bool:
        return c["diagnosed_ms"] < member["joined_ms"] + self.params.waiting_ms

    def _on_claim_filed(self, m: Moment, a: dict, txi: int | None) -> None:
        c = self._claim(a["claim_id"])
        assert c is not None
        member = self._member(c["member"].hex())
        # the claim keeps the version in force when it was filed (its jury mode, sizes)
        v = self.gov.version_at(self.next_notice)
        self._expect(m, txi, f"claim/{c['id']}.params_v", v, c.get("params_v", 0),
                     f"claim {c['id']} names another parameter version than the one in "
                     "force when it was filed")
        self.claim_version[c["id"]] = v
        upper = upper_age_ms(self.params, member["birth_date"])
        if upper is not None and c["diagnosed_ms"] >= upper:
            raise self._fail(m, txi, f"claim {c['id']} was accepted although diagnosed on or "
                                     "after the member's upper-age birthday",
                             f"claim/{c['id']}.diagnosed_ms", f"< {upper}", c["diagnosed_ms"])
        self._check_amount(m, txi, c, member)
        if self._waiting(c, member) and not c["accident"]:
            raise self._fail(m, txi, f"claim {c['id']} was accepted although diagnosed inside "
                                     "the waiting period and not an accident",
                             f"claim/{c['id']}.status", "rejected_waiting", "filed")
        if self._waiting(c, member):
            self.waiting_accidents.add(c["id"])

    def _check_finding(self, m: Moment, txi: int | None, cid: int, approve: bool) -> None:
        """The assessor's accident finding: given exactly for waiting accident claims, and
        an approval inside the waiting period is an approval as an accident."""
        c = self._claim(cid)
        assert c is not None
        name = f"claim/{cid}.accident_confirmed"
        if cid not in self.waiting_accidents:
            self._expect(m, txi, name, None, c.get("accident_confirmed", None),
                         f"claim {cid} has an accident finding although it is not an "
                         "accident claim inside the waiting period")
            return
        finding = c.get("accident_confirmed")
        if not isinstance(finding, bool) or (approve and not finding):
            raise self._fail(m, txi, f"claim {cid} inside the waiting period was assessed "
                                     "without a confirmed accident finding that allows it",
                             name, True if approve else "true or false", finding)
        if not approve and finding is False:
            self.appeal_due[cid] = c["assessed_ms"] + self.params.appeal_window_ms

    def _on_claim_approved(self, m: Moment, a: dict, txi: int | None) -> None:
        self._check_finding(m, txi, a["claim_id"], True)

    def _on_claim_denied(self, m: Moment, a: dict, txi: int | None) -> None:
        self._check_finding(m, txi, a["claim_id"], False)

    def _on_claim_appealed(self, m: Moment, a: dict, txi: int | None) -> None:
        self.appeal_due.pop(a["claim_id"], None)

    def _on_claim_rejected_waiting(self, m: Moment, a: dict, txi: int | None) -> None:
        c = self._claim(a["claim_id"])
        assert c is not None
        member = self._member(c["member"].hex())
        cid = c["id"]
        if c["accident"]:
            # decided after filing: the final outcome found no accident (a denial's appeal
            # window closed, or a jury did not pay), at that very block
            if cid not in self.reject_due or txi is not None:
                raise self._fail(m, txi, f"claim {cid} was rejected by the waiting period "
                                         "although no final outcome found it no accident",
                                 f"claim/{cid}.status", "not rejected_waiting",
                                 "rejected_waiting")
            if cid in self.appeal_due:
                self._due(m, txi, f"appeal window close of claim {cid}",
                          self.appeal_due.pop(cid))
            self.reject_due.discard(cid)
        elif not self._waiting(c, member):
            raise self._fail(m, txi, f"claim {cid} was rejected by the waiting period "
                                     "although it is outside it (or an accident)",
                             f"claim/{cid}.status", "filed", "rejected_waiting")
        self._expect(m, txi, f"claim/{cid}.status", "rejected_waiting", c["status"])
        self._expect(m, txi, f"member/{c['member'].hex()}.refund", True, member["refund"])
        self.refundable.add(c["member"].hex())
        if member["status"] != "active" and self.statuses.get(c["member"].hex()) != "active":
            # the membership already ended: every tag is barred all the same (an active
            # member is barred by the member_barred event that follows)
            self._bar(c["member"].hex())
        self.stats["waiting_rejections"] += 1
        self.final.add(c["id"])

    def _on_claim_objected(self, m: Moment, a: dict, txi: int | None) -> None:
        self.objectors.setdefault(a["claim_id"], set()).add(a["member"])

    def _on_claim_payable(self, m: Moment, a: dict, txi: int | None) -> None:
        self._expect(m, txi, f"claim/{a['claim_id']}.pay_period", self.next_settlement,
                     a["period"], f"claim {a['claim_id']} was queued for the wrong settlement")
        self.payable.setdefault(a["period"], []).append(a["claim_id"])

    def _on_claim_paid(self, m: Moment, a: dict, txi: int | None) -> None:
        cid = a["claim_id"]
        c = self._claim(cid)
        assert c is not None
        self._expect(m, txi, f"claim/{cid}.deduction", a["deduction"], c["deduction"],
                     f"claim {cid}'s deduction is not the one its payout announced")
        if not 0 <= c["deduction"] <= c["amount"]:
            raise self._fail(m, txi, f"claim {cid}'s deduction is outside 0..amount",
                             f"claim/{cid}.deduction", f"0..{c['amount']}", c["deduction"])
        self._expect(m, txi, f"claim/{cid}.net", c["amount"] - c["deduction"], c["net"])
        self._expect(m, txi, f"claim/{cid}.status", "paid", c["status"])
        self.stats["claims_paid"] += 1
        self.stats["paid_fen"] += c["amount"]
        self.final.add(cid)

    def _charge(self, cohort: int, n: int) -> int:
        """A member of ``cohort``'s charge for settled period n, from this model's index."""
        sch = self.schedule
        g = cohort if cohort > sch.first_period_of_year(sch.year(n)) else 0
        before = (self.ytd.get(n - 1, {}).get(g, 0)
                  if n > 1 and sch.year(n - 1) == sch.year(n) else 0)
        return self.ytd[n].get(g, 0) - before if cohort <= n else 0

    def _on_refund_recorded(self, m: Moment, a: dict, txi: int | None) -> None:
        """Rule 3's refund: once, for a member barred by it, when every period they share
        in is settled, of what the index says they paid (billed minus unpaid arrears)."""
        pk = a["member"]
        name = f"member/{pk}.refund_fen"
        if pk not in self.refundable or pk in self.refunded:
            raise self._fail(m, txi, f"a refund was recorded for member {pk}, who is not "
                                     "refundable or was refunded already", name)
        exit_p = self.member_exit.get(pk)
        if exit_p is None or exit_p > (self.settled[-1] if self.settled else 0):
            raise self._fail(m, txi, f"member {pk}'s refund was recorded before their "
                                     "last period settled", f"member/{pk}.exit_period",
                             f"<= {self.settled[-1] if self.settled else 0}", exit_p)
        cohort = self.member_cohort[pk]
        billed = sum(self._charge(cohort, n) for n in range(max(cohort, 1), exit_p + 1))
        unpaid = sum(self._charge(cohort, n) for n in self.arrears.get(pk, set()))
        rec = self._member(pk)
        self._expect(m, txi, name, billed - unpaid, rec.get("refund_fen"),
                     f"member {pk}'s refund is not the shares they paid")
        self._expect(m, txi, f"member/{pk}.refund_arrears_fen", unpaid,
                     rec.get("refund_arrears_fen"))
        self._expect(m, txi, f"member/{pk}.refund_ref", a["payment_ref"],
                     (rec.get("refund_ref") or b"").hex())
        self._expect(m, txi, f"member/{pk}.arrears", [], rec["arrears"])
        if billed - unpaid <= 0:
            raise self._fail(m, txi, f"a refund of nothing was recorded for member {pk}",
                             name, "> 0", billed - unpaid)
        self.arrears.pop(pk, None)
        self.refunded.add(pk)
        self.stats["refunds"] += 1
        self.stats["refunded_fen"] += billed - unpaid

    # ---- notices and settlements --------------------------------------------------------

    def _groups(self, n: int) -> list[dict[str, int]]:
        first = self.schedule.first_period_of_year(self.schedule.year(n))
        later = [{"cohort": j, "members": self.cohorts[j]}
                 for j in range(max(first + 1, 1), n + 1) if self.cohorts[j] > 0]
        # members of cohorts after n are still in their waiting period (sharing_basis
        # "protected"); under "joined" no active member has a cohort after n
        waiting = sum(c for j, c in self.cohorts.items() if j > n)
        old = self.active - waiting - sum(g["members"] for g in later)
        return ([{"cohort": 0, "members": old}] if old else []) + later

    def _on_members_aged_out(self, m: Moment, a: dict, txi: int | None) -> None:
        self.aged_events[a["period"]] = a["count"]

    def _age_out(self, m: Moment, txi: int | None, n: int) -> None:
        """docs/rules.md rule 1, "Upper age": before notice n's snapshot, the active members
        whose birthday is after notice n-1 and at or before notice n leave the counts; their
        records read aged_out from then on (not rewritten), with exit_period n - 1."""
        aged = sorted(self.aging.pop(n, set()))
        self._expect(m, txi, f"members_aged_out (period {n}).count", len(aged),
                     self.aged_events.pop(n, 0),
                     f"notice {n} did not take out the members who reached the upper age")
        for pk in aged:
            self.active -= 1
            self.cohorts[self.member_cohort[pk]] -= 1
            self.statuses[pk] = "aged_out"
            self.member_exit[pk] = n - 1
            rec = self._member(pk)
            for name, want in (("status", "aged_out"), ("exit_period", n - 1),
                               ("ended_ms", self.schedule.notice_ms(n))):
                self._expect(m, txi, f"member/{pk}.{name}", want, rec[name],
                             f"member {pk} does not read aged out from notice {n}")
        self.stats["aged_out"] += len(aged)

    def _on_juror_aged_out(self, m: Moment, a: dict, txi: int | None) -> None:
        pk = a["member"]
        if self.statuses.get(pk) != "aged_out" or pk not in self.pool:
            raise self._fail(m, txi, f"juror {pk} left the pool as aged out although not "
                                     "an aged-out member in the pool", f"member/{pk}.status",
                             "aged_out", self.statuses.get(pk))
        self.pool.discard(pk)

    def _on_notice_published(self, m: Moment, a: dict, txi: int | None) -> None:
        n = a["period"]
        self._expect(m, txi, "notice period", self.next_notice, n,
                     "a notice ran out of order")
        self._due(m, txi, f"notice of period {n}", self.schedule.notice_ms(n))
        self._age_out(m, txi, n)
        groups = self._groups(n)
        rec = self._load(records.period_key(n))
        assert rec is not None
        found = [{"cohort": g["cohort"], "members": g["members"]} for g in rec["groups"]]
        self._expect(m, txi, f"period/{n}.groups", groups, found,
                     f"period {n}'s snapshot groups are not the sharing members per cohort")
        sharing = sum(g["members"] for g in groups)
        self._expect(m, txi, f"period/{n}.members", sharing, rec["members"],
                     f"period {n}'s snapshot does not count the sharing members")
        self._expect(m, txi, f"period/{n}.members", sharing, a["members"],
                     f"period {n}'s notice event does not count the sharing members")
        self.snapshots[n] = groups
        self.next_notice = n + 1

    def _on_period_settled(self, m: Moment, a: dict, txi: int | None) -> None:
        n = a["period"]
        self._expect(m, txi, "settlement period", self.next_settlement, n,
                     "a settlement ran out of order")
        self._due(m, txi, f"settlement of period {n}", self.schedule.settlement_ms(n))
        rec = self._load(records.period_key(n))
        assert rec is not None
        ids = self.payable.pop(n, [])
        self._expect(m, txi, f"period/{n}.claims", ids, rec["claims"],
                     f"period {n} did not pay exactly the claims that became payable for it")
        claims = [self._claim(cid) for cid in ids]
        # the fee and caps of period n itself (a change applies from its from_period on)
        p = self.gov.params_at(n)
        P = sum(c["amount"] for c in claims if c is not None)
        F = P * p.fee_bps // 10_000
        S = self.surplus
        groups = self.snapshots.get(n, [])
        M = sum(g["members"] for g in groups)
        need = P + F - S
        raw = -(-need // M) if need > 0 and M > 0 else 0
        cases = len(ids)
        share = min(raw, p.cap_per_case_fen * cases)
        prev = (self.ytd.get(n - 1, {})
                if n > 1 and self.schedule.year(n - 1) == self.schedule.year(n) else {})
        out_groups, collected, ytd, charges = [], 0, {}, {}
        for g in groups:
            before = prev.get(g["cohort"], 0)
            charge = min(share, max(0, p.cap_per_year_fen - before))
            collected += g["members"] * charge
            ytd[g["cohort"]] = before + charge
            charges[g["cohort"]] = charge
            out_groups.append({"cohort": g["cohort"], "members": g["members"],
                               "ytd_before": before, "charge": charge, "ytd": before + charge})
        # docs/rules.md rule 6: the operator covers exactly what the capped charges leave
        # short of the need, and then no surplus is created
        covered = need - collected if need > collected else 0
        surplus = collected - need if collected > need else 0
        expected = {"P": P, "F": F, "S": S, "need": need, "M": M, "cases": cases,
                    "share_raw": raw, "case_cap": p.cap_per_case_fen * cases, "share": share,
                    "annual_cap": p.cap_per_year_fen,
                    "operator_covered": covered, "surplus_new": surplus, "groups": out_groups,
                    "members": M, "status": "settled",
                    "payout_exit_period": self.next_notice - 1}
        for name, want in expected.items():
            self._expect(m, txi, f"period/{n}.{name}", want, rec.get(name),
                         f"period {n}'s {name} is not what the settlement formula gives")
        # the conservation identity, on the record's own figures
        lhs = rec["collected"] + rec["operator_covered"] + rec["uncollected"]
        rhs = rec["P"] + rec["F"] - rec["S"] + rec["surplus_new"]
        self._expect(m, txi, f"period/{n} conservation (collected + operator_covered + "
                             "uncollected)", rhs, lhs,
                     f"period {n} breaks the conservation identity")
        if rec["surplus_new"] < 0 or rec["operator_covered"] < 0:
            raise self._fail(m, txi, f"period {n} has a negative surplus or operator share")
        if rec["operator_covered"] > 0 and rec["surplus_new"] != 0:
            raise self._fail(m, txi, f"period {n} carries a surplus although the operator "
                                     "covered part of it", f"period/{n}.surplus_new", 0,
                             rec["surplus_new"])
        self.surplus = surplus
        self.ytd[n] = ytd
        self.touched.add(n)     # collected = the charges, uncollected 0 (until arrears)
        self.charges[n] = charges
        self.next_settlement = n + 1
        self.settled.append(n)
        self.stats["periods"] += 1
        self.stats["shared_fen"] += collected
        self.stats["fees_fen"] += F
        self.stats["operator_covered_fen"] += covered
