"""The devnet demo: one whole cycle of the plan, through the real HTTP API.

A registrar admits members and approves jurors; after the waiting period two members
file claims; the assessor approves both; once the claims are in public notice a member
objects to one, which goes to a jury that votes; a settlement then shares the payouts.
Every step prints what happened; every wait is bounded by block time, not by a guess.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from chain.crypto import PrivateKey
from chain.hashing import sha256
from client import Account
from contracts.identity import check_digit, identity_tags
from devnet.cluster import Cluster

MEMBERS = ("alice", "bob", "chen", "dai", "evan", "fang")
JURORS = ("dai", "evan", "fang")


class DemoError(RuntimeError):
    """A step did not turn out as the rules say it should."""


def _h(label: str) -> bytes:
    return sha256(label.encode())


def _wait(what: str, check: Callable[[], Any], timeout_s: float, say: Callable[[str], None]
          ) -> Any:
    deadline = time.monotonic() + timeout_s
    announced = False
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if not announced:
            say(f"  … waiting for {what}")
            announced = True
        time.sleep(0.5)
    raise DemoError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _ok(result: dict[str, Any], what: str) -> dict[str, Any]:
    if result.get("code") != "ok":
        raise DemoError(f"{what} was refused: {result.get('code')} {result.get('reason')}")
    return result


def run_demo(cluster: Cluster, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Play the cycle; return a summary (claims, period record)."""
    genesis = cluster.genesis
    params = genesis.params
    chain_id = genesis.chain_id
    # the nodes still in the devnet (remove-validator retires one for good)
    clients = [cluster.nodes[i].client for i in cluster.active]
    node0 = clients[0]

    def latest_time() -> int:
        return int(node0.block("latest")["header"]["time"])

    registrar = Account(cluster.role_key("registrar"), chain_id, clients[0])
    assessor = Account(cluster.role_key("assessor"), chain_id, clients[1 % len(clients)])
    keys = {name: PrivateKey(_h(f"devnet member {name} {genesis.hash.hex()}")) for name in MEMBERS}
    members = {name: Account(k, chain_id, clients[i % len(clients)])
               for i, (name, k) in enumerate(keys.items())}

    # the registrar's identity key: a secret it never sends (derived here for the demo)
    identity_keys = {1: _h(f"demo registrar identity key 1 {genesis.hash.hex()}")}
    key_ids = genesis.params["identity_key_ids"]
    salts = {name: os.urandom(32) for name in MEMBERS}
    say("1. The registrar admits six members (identity, health and credit checked off chain)")
    results = []
    for i, name in enumerate(MEMBERS):
        birth = "1994-03-0" + str(1 + i)
        # a made-up resident ID (region 110105, the birth date, a sequence number and its
        # GB 11643 check digit): only its keyed tags reach the chain (docs/privacy.md)
        first17 = "110105" + birth.replace("-", "") + f"{101 + i:03d}"
        body = {"member": keys[name].public_key.raw,
                "identity_tags": identity_tags(identity_keys, key_ids,
                                               first17 + check_digit(first17)),
                "birth_date": birth,
                # sha256(random salt || declaration): the registrar keeps both
                "health_commitment": _h(f"{salts[name].hex()}health-{name}"),
                "credit_attestation": _h(f"credit-attestation-{name}"), "credit_passed": True}
        mode = "commit" if i == len(MEMBERS) - 1 else "sync"
        results.append(_ok(registrar.send("register_member", body, mode=mode), f"admit {name}"))
    joined_height = results[-1]["height"]
    joined_ms = int(node0.member(keys["alice"].public_key.hex())["joined_ms"])
    say(f"   admitted at height {joined_height}; waiting period {params['waiting_ms'] // 1000}s")

    jury_p = params["jury"]
    say(f"2. After {jury_p['juror_min_membership_ms'] // 1000}s of membership, three members "
        "pass the juror exam")
    _wait("juror eligibility", lambda: latest_time() >= joined_ms
          + jury_p["juror_min_membership_ms"] + 1000, 120, say)
    for name in JURORS:
        _ok(registrar.send("approve_juror", {"member": keys[name].public_key.raw,
                                              "exam_ref": _h(f"exam-{name}")}, mode="commit"),
            f"approve juror {name}")
    say(f"   jurors: {', '.join(JURORS)}")

    say("3. After the waiting period, alice and bob are diagnosed and file claims")
    _wait("the end of the waiting period",
          lambda: latest_time() >= joined_ms + params["waiting_ms"] + 1000, 180, say)
    now = latest_time()
    claims = {}
    for name, disease in (("alice", "malignant_tumor"), ("bob", "stroke_sequelae")):
        r = _ok(members[name].send("file_claim", {
            "disease": disease, "diagnosed_ms": now, "accident": False,
            "evidence_hash": _h(f"evidence-{name}")}, mode="commit"), f"{name}'s claim")
        ev = next(e for e in r["events"] if e["type"] == "claim_filed")
        claims[name] = int(ev["attrs"]["claim_id"])
        say(f"   {name}: claim {claims[name]} for {disease}, "
            f"{int(ev['attrs']['amount']) / 100:,.2f} yuan")

    say("4. The assessor reviews the evidence and approves both claims")
    for name, cid in claims.items():
        r = _ok(assessor.send("assess_claim", {"claim_id": cid, "approve": True,
                                               "report_hash": _h(f"report-{cid}")},
                              mode="commit"), f"assess {name}")
        ev = next(e for e in r["events"] if e["type"] == "claim_approved")
        say(f"   claim {cid} approved for public notice {ev['attrs']['notice_period']}")

    say("5. The claims go on public notice; chen objects to bob's claim")
    _wait("public notice", lambda: node0.claim(claims["bob"])["status"] == "in_notice", 180, say)
    _ok(members["chen"].send("object_claim", {"claim_id": claims["bob"],
                                              "reason_hash": _h("objection")}, mode="commit"),
        "chen's objection")
    say(f"   objection recorded; the window closes after "
        f"{params['objection_window_ms'] // 1000}s")

    say("6. The objected claim goes to a jury of members; the jurors vote")
    _wait("the jury to open", lambda: node0.claim(claims["bob"])["status"] == "disputed", 120,
          say)
    for name in JURORS:
        _ok(members[name].send("jury_vote", {"claim_id": claims["bob"], "pay": True},
                               mode="commit"), f"{name}'s vote")
    say(f"   {len(JURORS)} votes to pay; the jury closes after {jury_p['window_ms'] // 1000}s")
    _wait("the verdict", lambda: node0.claim(claims["bob"])["status"] != "disputed", 120, say)
    bob = node0.claim(claims["bob"])
    say(f"   verdict: {bob['jury']['verdict']} → claim {claims['bob']} is {bob['status']}"
        + (f", paid in period {bob['pay_period']} (the dispute outlasted period "
           f"{node0.claim(claims['alice'])['pay_period']}'s notice)"
           if bob.get("pay_period") else ""))

    say("7. Settlement: every member shares the payouts plus the 8% management fee")
    period_n = int(node0.claim(claims["alice"])["pay_period"])
    _wait(f"settlement of period {period_n}",
          lambda: (node0.period(period_n) or {}).get("status") == "settled", 240, say)
    period = node0.period(period_n)
    say(f"   period {period_n}: payouts P={period['P'] / 100:,.2f} yuan, fee "
        f"F={period['F'] / 100:,.2f}, carried surplus S={period['S'] / 100:,.2f}, "
        f"sharing members M={period['M']}")
    say(f"   each member's share: {period['share'] / 100:,.2f} yuan "
        f"(capped at {period['case_cap'] / 100:.2f} per case); covered by the operator: "
        f"{period['operator_covered'] / 100:,.2f} yuan; new surplus "
        f"{period['surplus_new'] / 100:,.2f}")
    share = node0.share(keys["chen"].public_key.hex(), period_n)
    say(f"   chen's own share of period {period_n}: {share['charge'] / 100:.2f} yuan "
        f"({share['formula']})")
    heights = [c.status()["height"] for c in clients]
    roots = {c.block(min(heights))["header"]["state_root"] for c in clients}
    say(f"   all {len(clients)} validators at heights {heights}; identical state root: "
        f"{len(roots) == 1}")

    say("8. An auditor replays the chain from its own copy of genesis, trusting no node")
    from audit import NodeSource, audit
    from audit.verify_share import verify_share

    source = NodeSource(clients[-1])
    try:
        report = audit(genesis, source, workers=0)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    if not report.ok:
        raise DemoError(f"the audit failed: {report.first_error}")
    say(f"   audit ok: {report.blocks} blocks, {report.txs} transactions, {report.periods} "
        f"settled periods, every certificate, signature, state root and share rechecked")
    # proofs are against the root a committed header carries (the state one block back),
    # so the settlement must be at least one block behind the newest header
    settled_at = clients[0].status()["height"]
    _wait("the settlement to be provable", lambda: clients[0].status()["height"] >= settled_at + 2,
          60, say)
    verified = verify_share(clients[0], genesis, keys["chen"].public_key.hex(), period_n)
    say(f"   chen checks their own share of period {period_n} from Merkle proofs and a "
        f"commit certificate: {verified.charge / 100:.2f} yuan")
    return {"claims": claims, "period": period, "heights": heights,
            "member_keys": {k: v.public_key.hex() for k, v in keys.items()}}


__all__ = ["run_demo", "DemoError"]
