"""The application the node drives: genesis, mempool checks, blocks, and queries.

Lifecycle per block: ``begin_block`` (runs scheduled work due by the block time), then
``deliver_tx`` for each transaction in order, then ``end_block``; the node then commits the
state (and reads its root). Every transaction is all-or-nothing: a rejected one comes back
as a ``Receipt`` with a stable code from ``contracts.errors`` and leaves the state exactly
as it was - including the sender's nonce (blocks should not carry invalid transactions;
if one does, it is inert). Signatures are checked by the caller, never here.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chain.genesis import Genesis
from chain.tx import Transaction, to_jsonable
from chain.validators import ValidatorSet
from contracts import errors, records
from contracts.errors import RuleError
from contracts.memstate import Overlay
from contracts.params import Params
from contracts.records import State
from contracts.rules import HANDLERS, governance, payout, schedule
from contracts.rules.context import Ctx, Event
from contracts.rules.paramhist import ParamHistory
from contracts.rules.settlement import (
    member_billed,
    member_charge,
    member_group,
)
from contracts.txtypes import ASSESSOR, GOVERNOR, MEMBER, REGISTRAR, check_body

__all__ = ["Application", "Event", "Receipt", "State", "member_key", "claim_key",
           "period_key"]

SEED_SIZE = 32


@dataclass(frozen=True)
class Receipt:
    """The outcome of a transaction: ``code`` is "ok" or a stable error code."""

    code: str
    reason: str = ""
    events: tuple[Event, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.code == errors.OK

    def to_map(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason,
                "events": [e.to_map() for e in self.events]}


def member_key(member_id: str | bytes) -> bytes:
    return records.member_key(_pk(member_id))


def claim_key(claim_id: int | str) -> bytes:
    return records.claim_key(int(claim_id))


def period_key(n: int) -> bytes:
    return records.period_key(int(n))


def _pk(member_id: str | bytes) -> bytes:
    if isinstance(member_id, bytes):
        raw = member_id
    else:
        try:
            raw = bytes.fromhex(member_id)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"member id {member_id!r} is not hex") from exc
    if len(raw) != 32:
        raise ValueError("member id must be a 32-byte public key")
    return raw


def genesis_roles(g: Genesis) -> dict[bytes, list[str]]:
    """Each registrar's, assessor's and the operator's roles, sorted."""
    roles: dict[bytes, set[str]] = {}
    for pk in g.registrars:
        roles.setdefault(pk, set()).add(REGISTRAR)
    for pk in g.assessors:
        roles.setdefault(pk, set()).add(ASSESSOR)
    roles.setdefault(g.operator, set()).add("operator")
    return {pk: sorted(r) for pk, r in roles.items()}


class Application:
    """The pooling rules over a key-value ``State``."""

    def __init__(self, genesis: Genesis, state: State) -> None:
        self.genesis = genesis
        self.params = Params.from_dict(genesis.params)
        self.schedule = self.params.make_schedule(genesis.genesis_time_ms)
        self.state = state
        self._block: tuple[int, int, bytes] | None = None
        # roles live in the state (genesis writes them, governance changes them); each
        # check reads the record's bytes and decodes only when they differ from the ones
        # cached, so a rolled-back grant or revoke (a rejected transaction, a failed
        # block) can never leave a stale role behind
        self._role_cache: dict[bytes, tuple[bytes | None, frozenset[str]]] = {}
        # the rule parameters of each period (genesis params, then set_params versions)
        self.history = ParamHistory(self.params)
        # validator sets by the height they start at: a set record never changes once its
        # height is reached (only a pending one, for the next two heights, still can)
        self._vsets: dict[int, ValidatorSet] = {}

    # validator sets ------------------------------------------------------------------

    def validator_set_heights(self) -> list[int]:
        """The heights at which the validator set changed, ascending (1 = genesis)."""
        rec = records.load(self.state, records.VSETS_KEY)
        if rec is None:
            raise RuntimeError("state is not initialised (run init_chain)")
        return rec["heights"]

    def validators_at(self, height: int) -> ValidatorSet:
        """The validator set that signs block ``height``. Known for every height up to
        two past the latest executed block (a change committed in block H applies at
        H+2); for later heights it is the set as far as known now."""
        if height < 1:
            raise ValueError("heights start at 1")
        heights = self.validator_set_heights()
        start = heights[bisect_right(heights, height) - 1]
        vset = self._vsets.get(start)
        if vset is None:
            rec = records.load(self.state, records.vset_key(start))
            if rec is None:
                raise RuntimeError(f"validator set record for height {start} is missing")
            vset = ValidatorSet.from_maps(rec["validators"])
            if start <= self._meta()["height"]:
                self._vsets[start] = vset
        return vset

    # genesis -------------------------------------------------------------------------

    def init_chain(self) -> None:
        """Write the genesis records into an empty state (a no-op if this genesis is
        already there; an error if the state holds another chain)."""
        existing = records.load(self.state, records.GENESIS_KEY)
        if existing is not None:
            if existing["genesis_hash"] != self.genesis.hash:
                raise ValueError("state belongs to another genesis")
            return
        if self.state.get(records.META_KEY) is not None:
            raise ValueError("state is not empty")
        g = self.genesis
        records.store(self.state, records.GENESIS_KEY, {
            "chain_id": g.chain_id, "genesis_hash": g.hash, "genesis_time_ms": g.genesis_time_ms,
        })
        records.store(self.state, records.PARAMS_KEY, self.params.to_dict())
        roles = genesis_roles(g)
        for pk in sorted(roles):
            records.store(self.state, records.role_key(pk), {"roles": roles[pk]})
            records.store(self.state, records.account_key(pk), {"nonce": 0})
        records.store(self.state, records.vset_key(1), {
            "validators": g.validators.to_maps(), "changes": []})
        # a consensus key is never used again once a validator used it (governance)
        for v in g.validators.validators:
            records.store(self.state, records.used_key(v.pub_key), {"height": 1})
        records.store(self.state, records.VSETS_KEY, {"heights": [1]})
        meta = records.new_meta()
        meta["time_ms"] = g.genesis_time_ms
        records.store(self.state, records.META_KEY, meta)

    # transactions --------------------------------------------------------------------

    def next_nonce(self, sender: bytes) -> int:
        acct = records.load(self.state, records.account_key(sender))
        return 1 if acct is None else acct["nonce"] + 1

    def _roles(self, sender: bytes, state: State | None = None) -> frozenset[str]:
        """The account's roles as ``state`` (default: the committed state) holds them."""
        data = (self.state if state is None else state).get(records.role_key(sender))
        hit = self._role_cache.get(sender)
        if hit is not None and hit[0] == data:
            return hit[1]
        roles = frozenset() if data is None else frozenset(records.decode_record(data)["roles"])
        if len(self._role_cache) > 4096:
            self._role_cache.clear()
        self._role_cache[sender] = (data, roles)
        return roles

    def operator_of(self, account: bytes, height: int | None = None) -> bytes | None:
        """The consensus key of the validator (in the set of ``height``, default the next
        height) whose operator account is ``account``; None if there is none."""
        h = self._meta()["height"] + 1 if height is None else height
        for v in self.validators_at(h).validators:
            if v.operator == account:
                return v.pub_key
        return None

    def _admit(self, state: State, tx: Transaction,
               height: int | None = None) -> dict[str, Any] | None:
        """The stateless-ish checks shared by check_tx and deliver_tx; returns the
        sender's account record (None before their first transaction). ``height`` is
        the executing block's (default: the next block, for the mempool)."""
        if tx.chain_id != self.genesis.chain_id:
            raise RuleError(errors.WRONG_CHAIN_ID,
                            f"chain id {tx.chain_id!r} is not {self.genesis.chain_id!r}")
        t = check_body(tx.type, tx.body)
        if t.role == MEMBER:
            ok = state.get(records.member_key(tx.sender)) is not None
        elif t.role == GOVERNOR:
            # the operator account of a validator in the set of the executing height
            ok = self.operator_of(tx.sender, height) is not None
        else:
            ok = not self._roles(tx.sender, state).isdisjoint(t.roles)
        if not ok:
            need = ("the operator account of a validator in the set" if t.role == GOVERNOR
                    else f"the {' or '.join(t.roles)} role")
            raise RuleError(errors.NOT_PERMITTED, f"{tx.type} needs {need}")
        acct = records.load(state, records.account_key(tx.sender))
        expected = 1 if acct is None else acct["nonce"] + 1
        if tx.nonce != expected:
            raise RuleError(errors.BAD_NONCE, f"nonce {tx.nonce}, expected {expected}")
        return acct

    def check_tx(self, tx: Transaction) -> Receipt:
        """Mempool check against the committed state: chain id, type, body, role, nonce.
        Writes nothing."""
        try:
            self._admit(self.state, tx)
        except RuleError as exc:
            return Receipt(exc.code, exc.reason)
        return Receipt(errors.OK)

    def _ctx(self, state: State) -> Ctx:
        if self._block is None:
            raise RuntimeError("no block in progress (call begin_block first)")
        height, time_ms, seed = self._block
        # a transaction runs under the parameters of the first period not in notice yet
        meta = records.load_meta(state)
        params = self.history.params_at(state, meta["next_notice"]) if meta else self.params
        return Ctx(state, params, self.schedule, time_ms, height, seed, history=self.history)

    def begin_block(self, height: int, time_ms: int, seed: bytes,
                    offences: Sequence[tuple[int, bytes, bytes]] = ()) -> list[Event]:
        """Start a block and run every scheduled job due by ``time_ms``.

        ``seed`` (32 bytes) must be fixed before this block's transactions are known; the
        node passes the hash of the parent's commit certificate. Panels for disputes
        opened in earlier blocks are drawn with it. ``offences`` is the block's verified
        evidence as (offending height, offender's consensus key, evidence hash): each
        offender is jailed from ``height + 2`` (docs/governance.md, "Jailing").
        """
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise ValueError("seed must be 32 bytes")
        meta = records.load(self.state, records.META_KEY)
        if meta is None:
            raise RuntimeError("state is not initialised (run init_chain)")
        if height <= meta["height"]:
            raise ValueError(f"height {height} does not follow {meta['height']}")
        if time_ms < meta["time_ms"]:
            raise ValueError(f"block time {time_ms} is before {meta['time_ms']}")
        self._block = (height, time_ms, seed)
        overlay = Overlay(self.state)
        ctx = self._ctx(overlay)
        ctx.meta["height"] = height
        ctx.meta["time_ms"] = time_ms
        governance.expire_due(ctx)
        for off_height, pub_key, evidence in offences:
            governance.jail(ctx, off_height, pub_key, evidence)
        schedule.run_due(ctx)
        ctx.save_meta()
        overlay.commit()
        return ctx.events

    def deliver_tx(self, tx: Transaction) -> Receipt:
        """Apply ``tx`` (signature already verified) atomically; rejected => no change."""
        overlay = Overlay(self.state)
        ctx = self._ctx(overlay)
        try:
            acct = self._admit(overlay, tx, self._block[0] if self._block else None)
            HANDLERS[tx.type](ctx, tx.sender, tx.body)
        except RuleError as exc:
            return Receipt(exc.code, exc.reason)
        # no rule writes an account record, so the one _admit read is still current
        acct = acct or {}
        acct["nonce"] = tx.nonce
        records.store(overlay, records.account_key(tx.sender), acct)
        ctx.save_meta()
        overlay.commit()
        return Receipt(errors.OK, "", tuple(ctx.events))

    def end_block(self) -> list[Event]:
        """Finish the block. All scheduled work runs in begin_block, so this only closes
        the block context and reports the pool figures subscribers watch."""
        if self._block is None:
            raise RuntimeError("no block in progress")
        height = self._block[0]
        self._block = None
        meta = records.load(self.state, records.META_KEY)
        return [Event("block_end", {"height": height, "active_members": meta["active"],
                                    "juror_pool": meta["pool"], "surplus": meta["surplus"]})]

    # queries -------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        meta = records.load(self.state, records.META_KEY)
        if meta is None:
            raise RuntimeError("state is not initialised (run init_chain)")
        return meta

    def get_member(self, member_id: str) -> dict[str, Any] | None:
        """The member record plus figures computed on read (billed, arrears, refund)."""
        try:
            pk = _pk(member_id)
        except ValueError:
            return None
        m = payout.load_member(self.state, pk)
        if m is None:
            return None
        last_settled = self._meta()["next_settlement"] - 1
        billed = member_billed(self.state, self.schedule, m, last_settled)
        arrears = sum(a for _, a in m["arrears"])
        out = to_jsonable(m)
        refunded = m.get("refund_fen") is not None
        out.update(id=pk.hex(), billed_fen=billed, arrears_fen=arrears,
                   in_arrears=bool(m["arrears"]),
                   refundable=m["refund"] and not refunded, refunded=refunded,
                   refundable_fen=billed - arrears if m["refund"] and not refunded else 0)
        return out

    def get_claim(self, claim_id: int | str) -> dict[str, Any] | None:
        try:
            cid = int(claim_id)
        except (TypeError, ValueError):
            return None
        if cid < 1 or cid >= 1 << 64:
            return None
        c = payout.load_claim(self.state, cid)
        return None if c is None else to_jsonable(c)

    def get_period(self, n: int) -> dict[str, Any] | None:
        if not isinstance(n, int) or n < 1 or n >= 1 << 64:
            return None
        rec = records.load(self.state, records.period_key(n))
        if rec is None:
            return {"n": n, "status": "scheduled", "notice_ms": self.schedule.notice_ms(n),
                    "settlement_ms": self.schedule.settlement_ms(n),
                    "year": self.schedule.year(n)} if n >= self._meta()["next_notice"] else None
        return to_jsonable(rec)

    def get_account(self, pubkey: bytes) -> dict[str, Any]:
        acct = records.load(self.state, records.account_key(pubkey))
        nonce = 0 if acct is None else acct["nonce"]
        return {
            "pubkey": pubkey.hex(), "nonce": nonce, "next_nonce": nonce + 1,
            "roles": sorted(self._roles(pubkey)),
            "member": self.state.get(records.member_key(pubkey)) is not None,
            "operator_of": None if (pk := self.operator_of(pubkey)) is None else pk.hex(),
        }

    def member_share(self, member_id: str, period: int) -> dict[str, Any] | None:
        """How a member's charge for a settled period derives from the period record
        (what ``verify-share`` prints); None for an unknown member or unsettled period."""
        try:
            pk = _pk(member_id)
        except ValueError:
            return None
        m = payout.load_member(self.state, pk)
        rec = records.load(self.state, records.period_key(period)) if period >= 1 else None
        if m is None or rec is None or rec["status"] != "settled":
            return None
        charge = member_charge(self.state, self.schedule, m, period)
        shares = m["cohort"] <= period and (m["exit_period"] is None
                                            or period <= m["exit_period"])
        grp = member_group(self.schedule, rec, m["cohort"]) if shares else None
        return {
            "member": pk.hex(), "period": period, "shares": shares,
            "cohort": m["cohort"], "exit_period": m["exit_period"],
            "P": rec["P"], "F": rec["F"],
            "fee_bps": self.history.params_at(self.state, period).fee_bps, "S": rec["S"],
            "need": rec["need"], "M": rec["M"], "cases": rec["cases"],
            "share_raw": rec["share_raw"], "case_cap": rec["case_cap"],
            "share": rec["share"], "annual_cap": rec["annual_cap"],
            "group": None if grp is None else grp["cohort"],
            "ytd_before": None if grp is None else grp["ytd_before"],
            "charge": charge, "ytd_after": None if grp is None else grp["ytd"],
            "operator_covered": rec["operator_covered"],
            "collected": rec["collected"], "uncollected": rec["uncollected"],
            "surplus_new": rec["surplus_new"], "claims": rec["claims"],
            "formula": "charge = min(min(ceil((P+F-S)/M), case_cap), annual_cap - ytd_before)",
        }

    # governance queries (docs/governance.md, "Records") --------------------------------

    def get_proposal(self, proposal_id: int | str) -> dict[str, Any] | None:
        """A proposal as JSON: change, proposer, deadline, status, each vote with its
        power, and the tally (an open one against the set of the next height)."""
        try:
            pid = int(proposal_id)
        except (TypeError, ValueError):
            return None
        if pid < 1 or pid >= 1 << 64:
            return None
        prop = records.load(self.state, records.proposal_key(pid))
        if prop is None:
            return None
        return governance.proposal_view(
            prop, self.validators_at(self._meta()["height"] + 1))

    def list_proposals(self, status: str | None = None, after_id: int = 0,
                       limit: int = 50) -> list[dict[str, Any]]:
        """Proposals with id > ``after_id`` in id order, at most ``limit`` (1..500), of
        one ``status`` (open, passed, failed, expired) or all."""
        if status not in (None, "open", "passed", "failed", "expired"):
            raise ValueError(f"unknown proposal status {status!r}")
        limit = max(1, min(int(limit), 500))
        idx = records.load(self.state, records.PROPS_KEY)
        if idx is None:
            return []
        vset = self.validators_at(self._meta()["height"] + 1)
        out: list[dict[str, Any]] = []
        if status == "open":
            ids = sorted(pid for pid, _ in idx["open"] if pid > after_id)
        else:
            ids = range(max(1, int(after_id) + 1), idx["next"])
        for pid in ids:
            prop = records.load(self.state, records.proposal_key(pid))
            if prop is None or (status is not None and prop["status"] != status):
                continue
            out.append(governance.proposal_view(prop, vset))
            if len(out) >= limit:
                break
        return out

    def validator_changes(self) -> list[dict[str, Any]]:
        """Every height at which the validator set changed (1: genesis), with the set
        (keys as hex) and the changes that made it."""
        out = []
        for h in self.validator_set_heights():
            rec = records.load(self.state, records.vset_key(h))
            vset = ValidatorSet.from_maps(rec["validators"])
            out.append({"height": h, "validators": to_jsonable(rec["validators"]),
                        "total_power": vset.total_power, "hash": vset.hash().hex(),
                        "changes": to_jsonable(rec["changes"])})
        return out

    def params_history(self) -> list[dict[str, Any]]:
        """Each parameter version in force from a period: genesis (version 0) first."""
        idx = self.history.index(self.state)
        out = []
        for start, v in idx["versions"]:
            if v == 0:
                out.append({"version": 0, "from_period": start, "proposal": None,
                            "height": 0, "params": self.params.to_dict()})
                continue
            rec = records.load(self.state, records.params_version_key(v))
            out.append({"version": v, "from_period": start, "proposal": rec["proposal"],
                        "height": rec["height"], "params": to_jsonable(rec["params"])})
        return out

    def params_at(self, period: int) -> Params:
        """The rule parameters of ``period``."""
        return self.history.params_at(self.state, period)

    def identity_key_ids(self) -> list[int]:
        """The identity keys a ``register_member`` sent now must carry tags under, in
        order (those of the first period not in notice: docs/privacy.md)."""
        return list(self.params_at(self._meta()["next_notice"]).identity_key_ids)

    def member_key(self, member_id: str | bytes) -> bytes:
        return member_key(member_id)

    def claim_key(self, claim_id: int | str) -> bytes:
        return claim_key(claim_id)

    def period_key(self, n: int) -> bytes:
        return period_key(n)
