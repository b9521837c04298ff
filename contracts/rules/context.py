"""What a rule runs with: the state, the params, the block's time, and the events it emits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contracts import records
from contracts.calendar import Schedule
from contracts.errors import RuleError
from contracts.params import Params
from contracts.records import State
from contracts.rules import payout


@dataclass(frozen=True)
class Event:
    """Something that happened, for receipts and subscribers. ``attrs`` holds text, ints,
    bools, lists of those, or None; keys and ids are lowercase hex text."""

    type: str
    attrs: dict[str, Any]

    def to_map(self) -> dict[str, Any]:
        return {"type": self.type, "attrs": dict(self.attrs)}


@dataclass
class Ctx:
    state: State
    #: the parameters of transactions now: those of the first period not in notice yet
    #: (the period a join or an approval made now feeds)
    params: Params
    schedule: Schedule
    time_ms: int
    height: int
    seed: bytes = b""
    events: list[Event] = field(default_factory=list)
    _meta: dict[str, Any] | None = None
    _meta_saved: dict[str, Any] | None = None
    #: the parameter history (contracts.rules.paramhist.ParamHistory); None: ``params``
    #: for every period (tests that build a Ctx by hand)
    history: Any = None

    def params_at(self, n: int) -> Params:
        """The parameters of period ``n`` (fee, caps, grace for its arrears)."""
        return self.params if self.history is None else self.history.params_at(self.state, n)

    def claim_params(self, c: dict[str, Any]) -> Params:
        """The parameters a claim was filed under (a claim keeps them: docs/governance.md,
        "Rule parameters")."""
        v = c.get("params_v", 0)
        if self.history is None:
            return self.params
        return self.history.params_v(self.state, v)

    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            m = records.load_meta(self.state)
            if m is None:
                raise RuntimeError("state is not initialised (run init_chain)")
            self._meta = m
            self._meta_saved = dict(m)
        return self._meta

    def save_meta(self) -> None:
        """Store meta if it changed since it was read or last saved."""
        if self._meta is not None and self._meta != self._meta_saved:
            records.store_meta(self.state, self._meta)
            self._meta_saved = dict(self._meta)

    def emit(self, type_: str, **attrs: Any) -> None:
        self.events.append(Event(type_, attrs))

    # typed record access -------------------------------------------------------------

    def member(self, pk: bytes) -> dict[str, Any] | None:
        """The member as the rules read it: a payout their record lags is applied."""
        return payout.load_member(self.state, pk)

    def put_member(self, pk: bytes, m: dict[str, Any]) -> None:
        records.store(self.state, records.member_key(pk), m)

    def claim(self, claim_id: int) -> dict[str, Any] | None:
        """The claim as the rules read it: paid once its settlement has run."""
        return payout.load_claim(self.state, claim_id)

    def put_claim(self, c: dict[str, Any]) -> None:
        records.store(self.state, records.claim_key(c["id"]), c)

    def id_list(self, key: bytes) -> list[int]:
        rec = records.load(self.state, key)
        return [] if rec is None else list(rec["claims"])

    def append_id(self, key: bytes, claim_id: int) -> None:
        ids = self.id_list(key)
        ids.append(claim_id)
        records.store(self.state, key, {"claims": ids})


def require(cond: bool, code: str, reason: str) -> None:
    if not cond:
        raise RuleError(code, reason)
