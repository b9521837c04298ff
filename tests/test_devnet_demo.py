"""The devnet demo, end to end, on a 4-validator devnet with shortened rule timings:
admission, jurors, claims, notice, objection, jury, settlement, then an audit and a
member's own share check — the whole story `make devnet` tells."""

from __future__ import annotations

import pytest

from devnet.cluster import Cluster, free_base_port
from devnet.demo import run_demo

pytestmark = pytest.mark.slow

QUICK = {
    "waiting_ms": 4_000,
    "schedule": {"kind": "interval", "period_ms": 20_000, "notice_offset_ms": 5_000,
                 "settlement_offset_ms": 15_000, "periods_per_year": 12},
    "objection_window_ms": 4_000,
    "appeal_window_ms": 4_000,
    "arrears_grace_ms": 1_000,
    "jury": {"mode": "open", "window_ms": 6_000, "open_quorum": 3, "pass_bps": 5000,
             "panel_size": 3, "panel_min_votes": 2, "juror_min_age_years": 18,
             "juror_min_membership_ms": 2_000},
}


def test_demo_cycle(tmp_path):
    cluster = Cluster.create(tmp_path / "net", validators=4,
                             base_port=free_base_port(8, start=33000), params_override=QUICK)
    lines: list[str] = []
    try:
        cluster.start(wait_s=60)
        cluster.wait_height(1, timeout_s=60)
        summary = run_demo(cluster, say=lines.append)
    finally:
        cluster.stop()
    text = "\n".join(lines)
    period = summary["period"]
    assert period["status"] == "settled" and period["cases"] >= 1
    assert period["M"] == 6 and period["P"] >= 30_000_000
    # conservation: what members pay plus what the operator covers is what was needed
    assert period["M"] * period["share"] + period["operator_covered"] == (
        period["P"] + period["F"] - period["S"] + period["surplus_new"])
    assert "verdict: pay" in text and "audit ok" in text
    assert "identical state root: True" in text
