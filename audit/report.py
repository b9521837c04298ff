"""The audit's findings: the first discrepancy (``AuditFailure``), an interruption, and
the report (``AuditReport``, ``render_report``)."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from typing import Any

from chain.tx import to_jsonable


class _Absent:
    """A field or key that one side has and the other has not (``ABSENT``)."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()


def _shown(value: Any) -> Any:
    """A finding's value as the JSON report shows it: ``"(absent)"`` for ``ABSENT``."""
    return "(absent)" if value is ABSENT else to_jsonable(value)


class AuditFailure(Exception):
    """The first discrepancy: where it is and what differs. ``expected``/``found`` are
    ``ABSENT`` for a field or key that only the other side has; a finding with either
    value set carries both in ``describe`` and ``to_json``."""

    def __init__(self, height: int, what: str, *, tx: int | None = None,
                 tx_hash: str | None = None, field: str | None = None,
                 expected: Any = None, found: Any = None) -> None:
        self.height = height
        self.what = what
        self.tx = tx
        self.tx_hash = tx_hash
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = [f"height {self.height}: {self.what}"]
        if self.tx is not None:
            parts.append(f"tx {self.tx}" + (f" ({self.tx_hash})" if self.tx_hash else ""))
        if self.field is not None:
            parts.append(f"field {self.field}")
        if self.has_values:
            parts.append(f"expected {self._text(self.expected)}, found "
                         f"{self._text(self.found)}")
        return "; ".join(parts)

    @property
    def has_values(self) -> bool:
        return self.expected is not None or self.found is not None

    @staticmethod
    def _text(value: Any) -> str:
        shown = _shown(value)
        return shown if value is ABSENT else json.dumps(shown, default=repr)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"height": self.height, "what": self.what}
        for name in ("tx", "tx_hash", "field"):
            value = getattr(self, name)
            if value is not None:
                out[name] = to_jsonable(value)
        if self.has_values:
            out["expected"] = _shown(self.expected)
            out["found"] = _shown(self.found)
        return out


class AuditInterrupted(KeyboardInterrupt):
    """A signal stopped the audit: ``signum`` (SIGINT, or SIGTERM while ``mutual audit``
    runs) and, once the replay had begun, ``report``: the partial report, ``ok`` false,
    ``first_error`` saying where it stopped. A ``KeyboardInterrupt``, so a library caller's
    Ctrl-C still stops its program."""

    def __init__(self, signum: int = signal.SIGINT, report: AuditReport | None = None
                 ) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.report = report



@dataclass
class AuditReport:
    ok: bool
    chain_id: str
    source: str
    blocks: int
    txs: int
    applied: int
    rejected: dict[str, int]
    periods: int
    state_root: str | None
    first_error: AuditFailure | None
    certificates: int
    signatures: int
    stats: dict[str, int]
    verdicts: dict[str, int]
    seconds: float
    verify_per_s: float
    workers: int
    pooled: bool
    #: the validator set history the replay computed: one entry per set, ascending
    #: {"height", "hash", "validators", "total_power", "committed_in", "changes"}
    validator_sets: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def not_started(cls, chain_id: str, source: str, failure: AuditFailure) -> AuditReport:
        """The report of an audit stopped before its replay began: nothing was checked."""
        return cls(ok=False, chain_id=chain_id, source=source, blocks=0, txs=0, applied=0,
                   rejected={}, periods=0, state_root=None, first_error=failure,
                   certificates=0, signatures=0, stats={}, verdicts={}, seconds=0.0,
                   verify_per_s=0.0, workers=0, pooled=False)

    @property
    def tx_per_s(self) -> float:
        return self.txs / self.seconds if self.seconds > 0 else 0.0

    @property
    def blocks_per_s(self) -> float:
        return self.blocks / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "blocks": self.blocks, "txs": self.txs, "periods": self.periods,
            "state_root": self.state_root,
            "first_error": None if self.first_error is None else self.first_error.to_json(),
            "chain_id": self.chain_id, "applied": self.applied,
            "rejected": dict(self.rejected), "certificates": self.certificates,
            "claims_paid": self.stats.get("claims_paid", 0),
            "paid_fen": self.stats.get("paid_fen", 0),
            "shared_fen": self.stats.get("shared_fen", 0),
            "fees_fen": self.stats.get("fees_fen", 0),
            "juries": self.stats.get("juries", 0),
            "seconds": round(self.seconds, 3), "tx_per_s": round(self.tx_per_s, 1),
            "blocks_per_s": round(self.blocks_per_s, 1),
            "verify_per_s": round(self.verify_per_s, 1),
            "replay_vs_verify": (round(self.tx_per_s / self.verify_per_s, 3)
                                 if self.verify_per_s else None),
            "workers": self.workers if self.pooled else 0,
            "validator_sets": self.validator_sets,
        }


def _yuan(fen: int) -> str:
    return f"{fen // 100:,}.{fen % 100:02d} yuan"


SETS_SHOWN = 20   # the readable report shows the genesis set and the latest this many


def change_text(change: Any) -> str:
    """One recorded reason for a set change, readable: its kind and what it names."""
    if not isinstance(change, dict):
        return str(change)
    kind = change.get("kind") or change.get("reason") or "change"
    parts = [str(kind)]
    for name in ("name", "index", "power", "pub_key", "new_pub_key", "proposal",
                 "evidence", "offence_height"):
        value = change.get(name)
        if value is None:
            continue
        text = str(value)
        parts.append(f"{name} {text[:16] + '…' if len(text) > 20 else text}")
    return " ".join(parts)


def render_validator_sets(history: list[dict[str, Any]]) -> list[str]:
    """The report's lines on the validator set history: each set, from the height it
    signs, its hash, size and power, and the recorded reasons it changed."""
    if not history:
        return []
    lines = [f"  validators    {len(history) - 1} change(s) of the set replayed and "
             "followed by every certificate and header"]
    shown = history
    if len(history) > SETS_SHOWN + 1:  # genesis, a count, then the latest (JSON has all)
        shown = [history[0], *history[-SETS_SHOWN:]]
    for i, e in enumerate(shown):
        if i == 1 and shown is not history:
            lines.append(f"    … {len(history) - SETS_SHOWN - 1} earlier change(s) in the "
                         "JSON line's validator_sets")
        why = "; ".join(change_text(c) for c in e.get("changes") or []) or (
            "genesis" if e["height"] == 1 else "(no reason recorded)")
        lines.append(f"    from height {e['height']:<6} {e['hash'][:16]}…  "
                     f"{e['validators']} validator(s), power {e['total_power']}: {why}")
    return lines


def render_report(r: AuditReport) -> str:
    """The readable report (everything but the final JSON line)."""
    s = r.stats
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(r.rejected.items())) or "none"
    lines = [
        f"mutual audit of chain {r.chain_id!r} from {r.source}",
        f"  blocks        {r.blocks} (certificates checked: {r.certificates}, "
        f"signatures verified: {r.signatures})",
        f"  transactions  {r.txs}: {r.applied} applied, {r.txs - r.applied} refused by the "
        f"rules ({rejected})",
        f"  periods       {r.periods} settled; claims paid {s.get('claims_paid', 0)} "
        f"({_yuan(s.get('paid_fen', 0))})",
        f"  shared        {_yuan(s.get('shared_fen', 0))} by members; fees "
        f"{_yuan(s.get('fees_fen', 0))}; operator covered "
        f"{_yuan(s.get('operator_covered_fen', 0))}",
        f"  juries        {s.get('juries', 0)} closed "
        f"({', '.join(f'{k} {v}' for k, v in sorted(r.verdicts.items())) or 'none'}); "
        f"panels drawn {s.get('panels', 0)}; waiting-period rejections "
        f"{s.get('waiting_rejections', 0)}",
        f"  state root    {r.state_root or '(not computed)'} (after block {r.blocks})",
        f"  speed         {r.tx_per_s:,.0f} tx/s, {r.blocks_per_s:,.0f} blocks/s in "
        f"{r.seconds:.2f} s; Ed25519 verify {r.verify_per_s:,.0f}/s on one core "
        f"(replay/verify {r.tx_per_s / r.verify_per_s if r.verify_per_s else 0:.2f}); "
        f"signature workers {r.workers if r.pooled else 0}",
    ]
    lines.extend(render_validator_sets(r.validator_sets))
    if r.ok:
        lines.append("OK: every certificate, signature, state root and rule decision holds")
    else:
        assert r.first_error is not None
        lines.append(f"FAILED at {r.first_error.describe()}")
    return "\n".join(lines)
