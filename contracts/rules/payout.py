"""Rule 6's payouts, read from the period that made them rather than written per claim.

A settlement writes its period record (with each claim's ``deductions`` entry and the
``payout_exit_period``) but not the claims it pays, their members or their identities:
rewriting three records per claim made a settlement's cost grow with the state tree's
depth (about 600 tree paths for 200 claims). So a stored record can lag its settlement,
and every reader applies the same deterministic rule (docs/rules.md, "Payouts"):

* a claim stored as ``payable`` whose ``pay_period`` n is settled reads as ``paid``:
  ``paid_ms`` = the period's ``settled_ms``, ``deduction`` = its ``deductions`` entry for
  the claim, ``net = amount - deduction``;
* a member whose ``open_claim`` is such a claim reads as paid: ``open_claim`` 0, no
  ``arrears`` (the deduction cleared them), and if stored ``active``, status
  ``paid_out`` with ``ended_ms`` = ``settled_ms`` and ``exit_period`` =
  ``payout_exit_period``;
* an identity record whose member reads as ended (and is not ``barred``) is free.

The upper age (rule 1, "Upper age") is read the same way: a member stored ``active``
with ``age_out_period`` n whose period record n exists (notice n ran, and took them out of
the counts) reads ``aged_out`` with ``ended_ms`` = the period's ``notice_ms`` and
``exit_period`` = n - 1, unless a payout ended the membership first (its settlement
instant before notice n's: at equal instants the notice runs first).

A transaction that later writes the member stores the resolved form. Paid claims are
terminal, so their stored form stays ``payable``. ``load`` is any ``key -> record | None``
(the state, or records proven against a certified root), so nodes, the auditor and light
clients resolve alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from contracts import records

Load = Callable[[bytes], dict[str, Any] | None]


def loader(state: records.State) -> Load:
    return lambda key: records.load(state, key)


def paying_period(load: Load, c: dict[str, Any]) -> dict[str, Any] | None:
    """The settled period record that paid ``c`` if ``c`` is stored as payable and its
    settlement has run; None otherwise."""
    if c["status"] != "payable":
        return None
    rec = load(records.period_key(c["pay_period"]))
    return rec if rec is not None and rec["status"] == "settled" else None


def mark_claim_paid(c: dict[str, Any], period: dict[str, Any]) -> None:
    deduction = period["deductions"][period["claims"].index(c["id"])]
    c.update(status="paid", paid_ms=period["settled_ms"], deduction=deduction,
             net=c["amount"] - deduction)


def mark_member_paid(m: dict[str, Any], period: dict[str, Any]) -> None:
    if m["status"] == "active":
        # the lump sum is paid once: the membership ends with it
        m.update(status="paid_out", ended_ms=period["settled_ms"],
                 exit_period=period["payout_exit_period"])
    m["arrears"] = []
    m["open_claim"] = 0


def aging_notice(load: Load, m: dict[str, Any]) -> dict[str, Any] | None:
    """The period record of the notice that aged ``m`` out if ``m`` is stored active, has an
    ``age_out_period`` and that notice has run; None otherwise."""
    n = m.get("age_out_period")
    if m["status"] != "active" or n is None:
        return None
    return load(records.period_key(n))


def mark_member_aged(m: dict[str, Any], period: dict[str, Any]) -> None:
    m.update(status="aged_out", ended_ms=period["notice_ms"], exit_period=period["n"] - 1)


def aging_view(load: Load, m: dict[str, Any] | None) -> dict[str, Any] | None:
    """``m`` with only the upper age applied (for a member whose open claim is not paid)."""
    if m is not None:
        period = aging_notice(load, m)
        if period is not None:
            mark_member_aged(m, period)
    return m


def claim_view(load: Load, c: dict[str, Any] | None) -> dict[str, Any] | None:
    """``c`` as the rules read it (updated in place)."""
    if c is not None:
        period = paying_period(load, c)
        if period is not None:
            mark_claim_paid(c, period)
    return c


def member_view(load: Load, m: dict[str, Any] | None) -> dict[str, Any] | None:
    """``m`` as the rules read it (updated in place)."""
    if m is None:
        return m
    period = None
    if m["open_claim"]:
        c = load(records.claim_key(m["open_claim"]))
        period = None if c is None else paying_period(load, c)
    aged = aging_notice(load, m)
    if aged is not None and (period is None or aged["notice_ms"] <= period["settlement_ms"]):
        mark_member_aged(m, aged)   # aged out first: a later payout keeps the status
    if period is not None:
        mark_member_paid(m, period)
    return m


def load_member(state: records.State, pk: bytes) -> dict[str, Any] | None:
    return member_view(loader(state), records.load(state, records.member_key(pk)))


def load_claim(state: records.State, claim_id: int) -> dict[str, Any] | None:
    return claim_view(loader(state), records.load(state, records.claim_key(claim_id)))
