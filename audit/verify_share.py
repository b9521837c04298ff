"""``mutual verify-share``: check one member's share of one period without trusting a node.

The node is asked for the member record and the period record, each as a proof bundle
(docs/api.md "Proof bundles"): the record's canonical bytes, a Merkle proof, the header
whose ``state_root`` the proof is against, and that header's commit certificate. Every
bundle is checked against the validator set of its height, followed from the member's OWN
genesis file through every certified change (``audit.lightclient``, docs/governance.md
"How a light client follows the set"): the header names that set, the header
hashes to the certified block id, more than 2/3 of the set's voting power signed it, the
proof's
root is the header's state root, and the proof shows exactly these bytes under exactly this
key. The period's paid claims (which make up P) and, within a cap year, the previous
period (which gives the year-to-date total before this one) are proven the same way, as
are the claim and the period that paid the member out when the member record lags that
payout (docs/rules.md, "Payouts"). The share is then re-derived from those figures with
the published formula (docs/rules.md, rule 6) and printed with its derivation. A refund
recorded on the member record (rule 3, ``record_refund``) is re-derived from the proven
period records too: it must be what the member was billed through their exit period.

``verify_share(client, genesis, member_id, period)`` is the library call a member's app
uses; it returns a ``ShareReport`` or raises ``ShareVerificationError`` whose ``kind`` and
message say exactly what was wrong.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from audit.lightclient import SetFollower, SetFollowError
from chain import encoding
from chain.block import BlockHeader
from chain.certificate import CommitCertificate, verify_certificate
from chain.genesis import Genesis, GenesisError
from chain.hashing import sha256
from chain.tx import to_jsonable
from chain.vote import MessageError
from contracts import records
from contracts.calendar import cst_midnight_ms, first_notice_at_or_after, parse_date
from contracts.params import Params
from contracts.proof import Proof, ProofError, verify_proof
from contracts.rules import payout

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class ShareVerificationError(Exception):
    """A bundle or a figure failed a check. ``kind`` is one of: ``node`` (the node did not
    answer), ``malformed``, ``chain``, ``certificate``, ``root``, ``key``, ``proof``,
    ``record``, ``stale``, ``not_settled``, ``inconsistent``, ``validators`` (a change of
    the validator set forged, left out or not certified: the message names its height)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class Proven:
    """A record proven against a certified header: ``stored`` is the proven value decoded,
    ``record`` the same as the rules read it (a payout the stored record lags applied,
    docs/rules.md "Payouts")."""

    key: bytes
    value: bytes | None
    record: dict[str, Any] | None
    height: int
    block_id: bytes
    state_root: bytes
    time_ms: int
    signed_power: int
    total_power: int
    stored: dict[str, Any] | None = None


def _hex(bundle: dict[str, Any], name: str, what: str, nullable: bool = False) -> bytes | None:
    value = bundle.get(name)
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise ShareVerificationError("malformed", f"{what}: bundle field {name!r} is missing")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ShareVerificationError("malformed", f"{what}: bundle field {name!r} is not "
                                                  "hex") from None


def verify_bundle(bundle: Any, genesis: Genesis, key: bytes, what: str,
                  resolve: Callable[[dict[str, Any]], Any] | None = None,
                  sets: SetFollower | None = None) -> Proven:
    """Check one proof bundle for ``key`` against the validator set of its height as
    ``sets`` followed it from ``genesis`` (None: the genesis set only, a chain whose set
    never changed). ``resolve`` turns a copy of the stored record into the record as the
    rules read it (in place)."""
    if sets is None:
        sets = SetFollower(genesis)
    if not isinstance(bundle, dict):
        raise ShareVerificationError("malformed", f"{what}: the node sent no proof bundle")
    header_bytes = _hex(bundle, "header", what)
    cert_bytes = _hex(bundle, "certificate", what)
    root = _hex(bundle, "state_root", what)
    got_key = _hex(bundle, "key", what)
    value = _hex(bundle, "value", what, nullable=True)
    proof_bytes = _hex(bundle, "proof", what)
    assert header_bytes is not None and cert_bytes is not None and proof_bytes is not None
    try:
        header = BlockHeader.from_map(encoding.decode(header_bytes))
        cert = CommitCertificate.decode(cert_bytes)
    except (MessageError, encoding.EncodingError) as exc:
        raise ShareVerificationError("malformed", f"{what}: header or certificate does not "
                                                  f"decode: {exc}") from None
    if header.chain_id != genesis.chain_id:
        raise ShareVerificationError("chain", f"{what}: the header is for chain "
                                              f"{header.chain_id!r}, not {genesis.chain_id!r}")
    block_id = sha256(header_bytes)
    try:
        vset = sets.check_header(header)
    except SetFollowError as exc:
        raise ShareVerificationError(exc.kind, f"{what}: {exc.reason}") from None
    ok, why = verify_certificate(cert, genesis.chain_id, vset, header.height, block_id)
    if not ok:
        raise ShareVerificationError("certificate", f"{what}: the certificate of block "
                                                    f"{header.height} is not valid: {why}")
    if bundle.get("height") != header.height:
        raise ShareVerificationError("malformed", f"{what}: bundle height "
                                                  f"{bundle.get('height')!r} is not the "
                                                  f"header's {header.height}")
    if root != header.state_root:
        shown = root.hex() if root else root
        raise ShareVerificationError("root", f"{what}: the proof's root {shown} is not the "
                                             "certified header's state root "
                                             f"{header.state_root.hex()}")
    if got_key != key:
        raise ShareVerificationError("key", f"{what}: the proof is for key "
                                            f"{(got_key or b'').hex()}, not {key.hex()}")
    try:
        proof = Proof.decode(proof_bytes)
    except ProofError as exc:
        raise ShareVerificationError("malformed", f"{what}: proof does not decode: "
                                                  f"{exc}") from None
    if not verify_proof(header.state_root, key, value, proof):
        raise ShareVerificationError("proof", f"{what}: the proof does not verify against "
                                              f"the certified state root of block "
                                              f"{header.height} (forged or stale)")
    stored = record = None
    if value is not None:
        try:
            stored = encoding.decode(value)
        except encoding.EncodingError as exc:
            raise ShareVerificationError("record", f"{what}: the proven value is not a "
                                                   f"canonical record: {exc}") from None
        if not isinstance(stored, dict):
            raise ShareVerificationError("record", f"{what}: the proven value is not a map")
        record = stored
        if resolve is not None:
            record = dict(stored)
            try:
                resolve(record)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                # only a chain whose certified state breaks the rules gets here
                raise ShareVerificationError(
                    "inconsistent", f"{what}: the proven records do not fit the payout "
                                    f"rule (docs/rules.md, Payouts): {exc!r}") from None
        shown = bundle.get("record")
        if isinstance(shown, dict):
            for name, v in record.items():
                # the node resolved its JSON at the bundle's height; a settlement proven
                # later may resolve more, so the stored value is not a lie either
                if name in shown and shown[name] not in (to_jsonable(v),
                                                         to_jsonable(stored.get(name))):
                    raise ShareVerificationError(
                        "record", f"{what}: the node's JSON record says {name} = "
                                  f"{shown[name]!r}, the proven value is {to_jsonable(v)!r}")
    power = sum(vset[s.validator].power for s in cert.sigs)
    return Proven(key, value, record, header.height, block_id, header.state_root,
                  header.time, power, vset.total_power, stored)


@dataclass
class ShareReport:
    """A member's verified charge for one settled period and how it derives."""

    member: str
    period: int
    shares: bool
    charge: int
    cohort: int
    exit_period: int | None
    group: int | None
    P: int
    F: int
    fee_bps: int
    S: int
    need: int
    M: int
    cases: int
    share_raw: int
    case_cap: int
    share: int
    annual_cap: int
    ytd_before: int | None
    ytd_after: int | None
    operator_covered: int
    surplus_new: int
    claims: list[dict[str, int]] = field(default_factory=list)
    #: rule 3: the member's shares are refundable (not yet refunded) / the refund recorded
    #: (``refund_fen`` paid back + ``refund_arrears_fen`` netted = billed, re-derived from
    #: the proven period records)
    refundable: bool = False
    refund_fen: int | None = None
    refund_arrears_fen: int | None = None
    uncollected: int = 0
    height: int = 0
    block_id: str = ""
    state_root: str = ""
    signed_power: int = 0
    total_power: int = 0
    #: the member's status as the rules read it (a payout or the upper age applied,
    #: docs/rules.md "Payouts" and rule 1 "Upper age")
    status: str = ""
    #: the validator set followed from genesis: changes walked (one certificate each),
    #: the time the walk took (fetching and checking) and the hash of the set that
    #: certified the proofs
    set_changes: int = 0
    set_walk_ms: float = 0.0
    set_check_ms: float = 0.0
    validators_hash: str = ""
    #: the parameter version in force for the period (0: genesis) and how it was known:
    #: "proven" (the history records proven against certified headers) or "genesis" (the
    #: node serves no proven history; a changed fee or cap then fails the checks)
    params_version: int = 0
    params_source: str = "genesis"

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, **asdict(self)}


def _fetch(call: Any, what: str) -> Any:
    from client import ClientError

    try:
        return call()
    except ClientError as exc:
        raise ShareVerificationError("node", f"{what}: {exc}") from None


def _expect(name: str, want: int, got: Any, where: str) -> None:
    if want != got:
        raise ShareVerificationError("inconsistent", f"{where}: {name} should be {want} by "
                                                     f"the rules, the record says {got!r}")


def check_request(member_id: Any, period: Any) -> bytes:
    """The member's public key from ``member_id``; ``ShareVerificationError`` of kind
    ``malformed`` when the member id is not 64 hex characters or the period is not 1 or
    more (nothing is asked of a node for such a request)."""
    try:
        pk = bytes.fromhex(member_id) if isinstance(member_id, str) else b""
    except ValueError:
        pk = b""
    if len(pk) != 32:
        raise ShareVerificationError("malformed", f"member id {member_id!r} is not 64 hex "
                                                  "characters")
    if not isinstance(period, int) or isinstance(period, bool) or period < 1:
        raise ShareVerificationError("malformed", f"period must be 1 or more, not "
                                                  f"{period!r}")
    return pk


def _resolver(load: payout.Load, key: bytes) -> Callable[[dict[str, Any]], Any] | None:
    """How a stored record under ``key`` becomes the record as the rules read it."""
    if key.startswith(b"member/"):
        return lambda r: payout.member_view(load, r)
    if key.startswith(b"claim/"):
        return lambda r: payout.claim_view(load, r)
    return None


def _proven_loader(client: Any, genesis: Genesis,
                   known: dict[bytes, dict[str, Any] | None],
                   sets: SetFollower | None = None) -> payout.Load:
    """``key -> stored record`` for claim and period keys, each fetched as a proof bundle
    and verified; ``known`` holds stored records already proven."""
    def load(key: bytes) -> dict[str, Any] | None:
        if key not in known:
            n = int.from_bytes(key[key.index(b"/") + 1:], "big")
            if key == records.claim_key(n):
                what, call = f"claim {n}", (lambda: client.claim(n, proof=True))
            elif key == records.period_key(n):
                what, call = f"period {n}", (lambda: client.period(n, proof=True))
            else:  # pragma: no cover - payout reads only claims and periods
                raise ValueError(f"no proven source for key {key!r}")
            known[key] = verify_bundle(_fetch(call, what), genesis, key, what,
                                       _resolver(load, key), sets).stored
        return known[key]
    return load


def check_refund(m: dict[str, Any], load: payout.Load, schedule: Any,
                 where: str) -> None:
    """A recorded refund (rule 3) must be exactly what the member was billed through their
    exit period, read from the proven period records (docs/rules.md, rule 7 "Index"):
    ``refund_fen + refund_arrears_fen``."""
    if m.get("refund_fen") is None:
        return
    if not m.get("refund") or m.get("exit_period") is None:
        raise ShareVerificationError("inconsistent", f"{where}: a refund is recorded but "
                                                     "the member is not refundable")
    cohort, through = m["cohort"], m["exit_period"]
    billed = 0
    if through >= cohort:
        y = schedule.year(cohort)
        while True:
            last = min(through, schedule.first_period_of_year(y + 1) - 1)
            rec = load(records.period_key(last))
            if rec is None or rec.get("status") != "settled":
                raise ShareVerificationError("inconsistent", f"{where}: period {last} of "
                                                             "the refund is not settled")
            first = schedule.first_period_of_year(schedule.year(last))
            group = cohort if cohort > first else 0
            grp = next((g for g in rec["groups"] if g["cohort"] == group), None)
            billed += 0 if grp is None else grp["ytd"]
            if last == through:
                break
            y += 1
    _expect("refund_fen + refund_arrears_fen (billed through the exit period)", billed,
            m["refund_fen"] + m.get("refund_arrears_fen", 0), where)
    if m["refund_fen"] <= 0 or m.get("arrears"):
        raise ShareVerificationError("inconsistent", f"{where}: the refund is not positive "
                                                     "or left arrears open")


def _first_notice_from(schedule: Any, t: int, strict: bool) -> int:
    """The first period whose notice is after ``t`` (``strict``) or at or after it
    (instants are integer milliseconds: after ``t`` is at or after ``t + 1``)."""
    return first_notice_at_or_after(schedule, t + 1 if strict else t)


def sharing_cohort(params: Params, schedule: Any, joined_ms: int) -> int:
    """The first period a member who joined at ``joined_ms`` shares in (docs/rules.md,
    rule 1): the first notice after the joining block (a notice due at that block's time
    ran before its transactions), and under ``sharing_basis`` "protected" the first notice
    at or after the end of the waiting period."""
    n = _first_notice_from(schedule, joined_ms, strict=True)
    if params.sharing_basis == "protected":
        n = max(n, _first_notice_from(schedule, joined_ms + params.waiting_ms, strict=False))
    return n


def upper_age_ms(params: Params, birth_date: str) -> int | None:
    """00:00 CST of the ``max_age_years``-th birthday of a member born on ``birth_date``
    (docs/rules.md rule 1, "Upper age": a 29 February birthday falls on 1 March in a
    common year); None when the rule is off."""
    if params.max_age_years is None:
        return None
    b = parse_date(birth_date)
    try:
        day = b.replace(year=b.year + params.max_age_years)
    except ValueError:
        day = b.replace(year=b.year + params.max_age_years, month=3, day=1)
    return cst_midnight_ms(day)


def aging_notice(params: Params, schedule: Any, birth_date: str) -> int | None:
    """The notice that takes a member born on ``birth_date`` out: the first at or after
    their upper-age birthday (``upper_age_ms``). None when the rule is off."""
    t = upper_age_ms(params, birth_date)
    return None if t is None else _first_notice_from(schedule, t, strict=False)


PARAMH_KEY = b"paramh"


def params_version_key(v: int) -> bytes:
    return b"paramv/" + v.to_bytes(8, "big")


def period_params(client: Any, genesis: Genesis, sets: SetFollower, period: int,
                  settled_ms: int) -> tuple[Params, int, str]:
    """The rule parameters of ``period``, their version and how they are known.

    The node's ``GET /params/history?proof=true`` answers with ``"proofs"``: a proof
    bundle (docs/api.md) for the state key ``paramh`` (the history index; a
    non-inclusion proof when only genesis parameters ever applied) and one for each
    ``paramv/<v>`` the index lists (docs/governance.md, "What the auditor checks"). The
    index is proven at a block at or after the period's settlement (versions for a
    period are fixed before its notice), the version in force is the last one whose
    ``from_period`` is at or before the period, and its params object is proven too. A
    node that serves no such proofs leaves the genesis parameters, which a changed fee or
    cap then contradicts (the share is rejected, never accepted on trust)."""
    genesis_params = Params.from_dict(genesis.params)
    from client import ClientError

    try:
        doc = client.params_history(proof=True)
    except ClientError as exc:
        if exc.status in (400, 404, 501):
            return genesis_params, 0, "genesis"
        raise ShareVerificationError("node", f"/params/history: {exc}") from None
    proofs = doc.get("proofs") if isinstance(doc, dict) else None
    if proofs is None:
        return genesis_params, 0, "genesis"
    if not isinstance(proofs, list):
        raise ShareVerificationError("malformed", "/params/history: 'proofs' is not a list")
    by_key: dict[bytes, Any] = {}
    for b in proofs:
        k = b.get("key") if isinstance(b, dict) else None
        try:
            by_key[bytes.fromhex(k)] = b
        except (TypeError, ValueError):
            raise ShareVerificationError("malformed", "/params/history: a proof without a "
                                                      "hex key") from None
    ib = verify_bundle(by_key.get(PARAMH_KEY), genesis, PARAMH_KEY,
                       "the parameter history index", None, sets)
    if ib.time_ms < settled_ms:
        raise ShareVerificationError("stale", f"the parameter history is proven at block "
                                              f"{ib.height}, before period {period} settled")
    idx = ib.stored
    if idx is None:
        return genesis_params, 0, "proven"
    v = 0
    try:
        for start, ver in idx["versions"]:
            if start > period:
                break
            v = ver
    except (KeyError, TypeError, ValueError):
        raise ShareVerificationError("record", "the proven parameter history index is not "
                                               "a list of [from_period, version]") from None
    if v == 0:
        return genesis_params, 0, "proven"
    key = params_version_key(v)
    vb = verify_bundle(by_key.get(key), genesis, key, f"parameter version {v}", None, sets)
    rec = vb.stored
    try:
        if rec is None or rec.get("v") != v:
            raise ValueError("no such version")
        return Params.from_dict(rec["params"]), v, "proven"
    except (ValueError, KeyError, TypeError) as exc:
        raise ShareVerificationError("record", f"parameter version {v} is not a valid "
                                               f"version record: {exc}") from None


def follow_sets(client: Any, genesis: Genesis) -> SetFollower:
    """The validator sets from ``genesis`` through every certified change the node lists
    (``GET /validators/changes``); ``ShareVerificationError`` of kind ``validators``
    naming the height of a forged or uncertified change."""
    from client import ClientError

    def page(start: int, limit: int) -> Any:
        try:
            return client.validator_changes(from_height=start, limit=limit)
        except ClientError as exc:
            if exc.status == 404 and start == 1:
                # a node from before governance lists no change: the genesis set is then
                # the only one, and every proven header is held to it (check_header)
                return {"changes": []}
            raise ShareVerificationError("node", f"/validators/changes: {exc}") from None

    sets = SetFollower(genesis)
    try:
        sets.walk(page)
    except SetFollowError as exc:
        raise ShareVerificationError(exc.kind, exc.reason) from None
    return sets


def verify_share(client: Any, genesis: Genesis, member_id: str, period: int) -> ShareReport:
    """Fetch, prove and re-derive ``member_id``'s share of ``period``; trust no node."""
    pk = check_request(member_id, period)
    params = Params.from_dict(genesis.params)
    schedule = params.make_schedule(genesis.genesis_time_ms)
    sets = follow_sets(client, genesis)

    pb = verify_bundle(_fetch(lambda: client.period(period, proof=True), f"period {period}"),
                       genesis, records.period_key(period), f"period {period}", None, sets)
    rec = pb.record
    if rec is None:
        raise ShareVerificationError("not_settled", f"period {period} has no record at block "
                                                    f"{pb.height} (not noticed yet)")
    if rec.get("status") != "settled":
        raise ShareVerificationError("not_settled", f"period {period} is {rec.get('status')!r} "
                                                    f"at block {pb.height}, not settled")
    # the member record may lag a payout that ended the membership (docs/rules.md,
    # "Payouts"): it is read with the proven claim and period that paid it applied
    known: dict[bytes, dict[str, Any] | None] = {records.period_key(period): pb.stored}
    load = _proven_loader(client, genesis, known, sets)
    mkey = records.member_key(pk)
    mb = verify_bundle(_fetch(lambda: client.member(member_id, proof=True),
                              f"member {member_id}"),
                       genesis, mkey, f"member {member_id}", _resolver(load, mkey), sets)
    m = mb.record
    if m is None:
        raise ShareVerificationError("record", f"no member {member_id} at block {mb.height}")
    if mb.time_ms < rec["settled_ms"]:
        raise ShareVerificationError("stale", f"the member record is proven at block "
                                              f"{mb.height} (time {mb.time_ms}), before period "
                                              f"{period} settled ({rec['settled_ms']})")

    check_refund(m, load, schedule, f"member {member_id}")
    where = f"period {period}"
    # P from the claims it paid, each proven too
    claims = []
    for cid in rec["claims"]:
        ckey = records.claim_key(cid)
        cb = verify_bundle(_fetch(lambda cid=cid: client.claim(cid, proof=True), f"claim {cid}"),
                           genesis, ckey, f"claim {cid}", _resolver(load, ckey), sets)
        known[ckey] = cb.stored
        c = cb.record
        if c is None or c.get("pay_period") != period:
            raise ShareVerificationError("inconsistent", f"claim {cid} listed by period "
                                                         f"{period} was not paid in it")
        claims.append({"id": cid, "amount": c["amount"]})
    P = sum(c["amount"] for c in claims)
    _expect("P (sum of the paid claims)", P, rec["P"], where)
    _expect("cases", len(claims), rec["cases"], where)
    # the fee and caps of the period itself (a governance change applies from a period
    # on: docs/governance.md, "Rule parameters"), proven from the state
    pp, params_version, params_how = period_params(client, genesis, sets, period,
                                                   rec["settled_ms"])
    F = P * pp.fee_bps // 10_000
    _expect("F", F, rec["F"], where)
    need = P + F - rec["S"]
    _expect("need", need, rec["need"], where)
    M = sum(g["members"] for g in rec["groups"])
    _expect("M", M, rec["M"], where)
    raw = -(-need // M) if need > 0 and M > 0 else 0
    _expect("share_raw", raw, rec["share_raw"], where)
    case_cap = pp.cap_per_case_fen * len(claims)
    _expect("case_cap", case_cap, rec["case_cap"], where)
    share = min(raw, case_cap)
    _expect("share", share, rec["share"], where)
    _expect("annual_cap", pp.cap_per_year_fen, rec["annual_cap"], where)
    charged = sum(g["members"] * g["charge"] for g in rec["groups"])
    # the operator covers exactly what the charges leave short; then no surplus is created
    _expect("operator_covered (need - charged, if positive)", max(0, need - charged),
            rec["operator_covered"], where)
    _expect("surplus_new (charged - need, if positive)", max(0, charged - need),
            rec["surplus_new"], where)
    # shares billed but recorded unpaid (rule 8) are uncollected, not collected
    uncollected = rec.get("uncollected")
    if not isinstance(uncollected, int) or not 0 <= uncollected <= charged:
        raise ShareVerificationError("inconsistent", f"{where}: uncollected should be 0.."
                                                     f"{charged}, the record says "
                                                     f"{uncollected!r}")
    _expect("collected (charged - uncollected)", charged - uncollected, rec["collected"],
            where)
    _expect("conservation (collected + operator_covered + uncollected)",
            P + F - rec["S"] + rec["surplus_new"],
            rec["collected"] + rec["operator_covered"] + uncollected, where)

    cohort, exit_p = m["cohort"], m["exit_period"]
    _expect(f"member cohort (first period shared, sharing_basis {params.sharing_basis!r})",
            sharing_cohort(params, schedule, m["joined_ms"]), cohort, f"member {member_id}")
    aging = aging_notice(params, schedule, m["birth_date"])
    _expect("member age_out_period (the first notice on or after the max_age_years "
            "birthday)", aging, m.get("age_out_period"), f"member {member_id}")
    if m["status"] == "aged_out":
        _expect("exit_period of an aged-out member (age_out_period - 1)", aging - 1, exit_p,
                f"member {member_id}")
    shares = cohort <= period and (exit_p is None or period <= exit_p)
    if aging is not None and period >= aging and shares:
        raise ShareVerificationError("inconsistent", f"member {member_id} reached the upper "
                                                     f"age by notice {aging} but shares in "
                                                     f"period {period}")
    group = grp = None
    charge = 0
    if shares:
        first = schedule.first_period_of_year(schedule.year(period))
        group = cohort if cohort > first else 0
        grp = next((g for g in rec["groups"] if g["cohort"] == group), None)
        if grp is None:
            raise ShareVerificationError("inconsistent", f"{where} has no group {group} for "
                                                         f"the member's cohort {cohort}")
        prev_ytd = 0
        if period > 1 and schedule.year(period - 1) == schedule.year(period):
            prev = verify_bundle(
                _fetch(lambda: client.period(period - 1, proof=True), f"period {period - 1}"),
                genesis, records.period_key(period - 1), f"period {period - 1}", None,
                sets).record
            prev_grp = next((g for g in (prev or {}).get("groups", [])
                             if g["cohort"] == group), None)
            prev_ytd = 0 if prev_grp is None else prev_grp["ytd"]
        _expect(f"group {group} ytd_before", prev_ytd, grp["ytd_before"], where)
        charge = min(share, max(0, pp.cap_per_year_fen - prev_ytd))
        _expect(f"group {group} charge", charge, grp["charge"], where)
        _expect(f"group {group} ytd", prev_ytd + charge, grp["ytd"], where)
    return ShareReport(
        member=pk.hex(), period=period, shares=shares, charge=charge, cohort=cohort,
        exit_period=exit_p, group=group, P=P, F=F, fee_bps=pp.fee_bps, S=rec["S"],
        need=need, M=M, cases=len(claims), share_raw=raw, case_cap=case_cap, share=share,
        annual_cap=pp.cap_per_year_fen, params_version=params_version,
        params_source=params_how,
        ytd_before=None if grp is None else grp["ytd_before"],
        ytd_after=None if grp is None else grp["ytd"],
        operator_covered=rec["operator_covered"], surplus_new=rec["surplus_new"],
        claims=claims, uncollected=uncollected,
        refundable=bool(m.get("refund")) and m.get("refund_fen") is None,
        refund_fen=m.get("refund_fen"), refund_arrears_fen=m.get("refund_arrears_fen"),
        height=pb.height, block_id=pb.block_id.hex(),
        state_root=pb.state_root.hex(), signed_power=pb.signed_power,
        total_power=pb.total_power, status=m["status"], set_changes=sets.walked,
        set_walk_ms=round(sets.seconds * 1000, 3),
        set_check_ms=round(sets.check_seconds * 1000, 3),
        validators_hash=sets.at(pb.height).hash().hex())


def _fen(v: int) -> str:
    sign = "-" if v < 0 else ""
    v = abs(v)
    return f"{sign}{v // 100:,}.{v % 100:02d}"


def render_share(r: ShareReport) -> str:
    """The member-facing derivation."""
    paid = ", ".join("#{} {:,}".format(c["id"], c["amount"]) for c in r.claims) or "(none)"
    lines = [
        f"member {r.member}, period {r.period}: charge {r.charge} fen ({_fen(r.charge)} yuan)",
        f"  proven at block {r.height} ({r.block_id[:16]}…), certified by power "
        f"{r.signed_power} of {r.total_power}; state root {r.state_root[:16]}…",
        f"  validator set {r.validators_hash[:16]}… followed from genesis through "
        f"{r.set_changes} change(s), one certificate each, in {r.set_walk_ms:.1f} ms "
        f"({r.set_check_ms:.1f} ms checking)",
        f"  P = {r.P:,} fen from {r.cases} paid claim(s) "
        f"{paid}",
        f"  F = floor(P x {r.fee_bps} / 10000) = {r.F:,}    S (surplus carried in) = {r.S:,}",
        f"  parameters of period {r.period}: version {r.params_version} "
        f"({'proven from the state' if r.params_source == 'proven' else 'genesis: the node serves no proven parameter history'})",
        f"  M = {r.M:,} members protected at the notice    need = P + F - S = {r.need:,}",
        f"  raw = ceil(need / M) = {r.share_raw:,}    per-case cap = {r.case_cap:,}    "
        f"share = min(raw, cap) = {r.share:,}",
    ]
    if r.shares:
        lines.append(f"  annual cap {r.annual_cap:,}; year to date before {r.ytd_before:,} "
                     f"(group {r.group}) -> charge = min(share, cap - ytd) = {r.charge:,}; "
                     f"year to date after {r.ytd_after:,}")
    else:
        why = f"cohort {r.cohort}"
        if r.cohort > r.period:
            why += f", sharing from period {r.cohort} on"
        why += ("; has not left" if r.exit_period is None
                else f"; reached the upper age, sharing up to period {r.exit_period}"
                if r.status == "aged_out"
                else f"; left, sharing up to period {r.exit_period}")
        lines.append(f"  the member does not share in period {r.period} ({why}): charge 0")
    lines.append(f"  operator covered {r.operator_covered:,}; billed but unpaid (advanced "
                 f"by the operator) {r.uncollected:,}; surplus carried on {r.surplus_new:,}")
    if r.refund_fen is not None:
        lines.append(f"  refund recorded (waiting-period rule): {r.refund_fen:,} fen paid "
                     f"back + {r.refund_arrears_fen:,} unpaid arrears netted = billed")
    elif r.refundable:
        lines.append("  barred by the waiting-period rule: every share paid is refundable")
    return "\n".join(lines)


def main(args: Any, out: Any = None, err: Any = None) -> int:
    """``mutual verify-share``: exit 0 when the share is proven, 1 when the node's answer
    is rejected, 2 on bad input (member id, period, genesis file)."""
    from client import Client

    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        check_request(args.member, args.period)
    except ShareVerificationError as exc:
        err.write(f"mutual verify-share: error: {exc.reason}\n")
        return EXIT_USAGE
    try:
        genesis = Genesis.load(args.genesis)
    except GenesisError as exc:
        err.write(f"mutual verify-share: error: {exc}\n")
        return EXIT_USAGE
    try:
        report = verify_share(Client(args.node, timeout=args.timeout), genesis, args.member,
                              args.period)
    except ShareVerificationError as exc:
        err.write(f"mutual verify-share: REJECTED ({exc.kind}): {exc.reason}\n")
        out.write(json.dumps({"ok": False, "kind": exc.kind, "reason": exc.reason}) + "\n")
        return EXIT_FAIL
    out.write(render_share(report) + "\n")
    out.write(json.dumps(report.to_json()) + "\n")
    return EXIT_OK


__all__ = ["Proven", "ShareReport", "ShareVerificationError", "check_request", "main",
           "render_share", "verify_bundle", "verify_share"]
