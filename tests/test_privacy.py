"""Privacy of the public chain (issue 19, docs/privacy.md).

1. The brute force an outsider could run on the old format (sha256 of the resident ID
   text, birth date public) recovers the ID number; on keyed identity tags it finds
   nothing, while the registrar, holding the key, still does.
2. One live membership per identity and barred stays barred, on keyed tags, including
   across an identity-key rotation by ``set_params``.
3. A chain built in-process: no state record, event, transaction body or query answer
   carries a credit score or an unkeyed hash of a member's identity text; and the same
   over a real node's HTTP API (blocks, transactions, records, accounts, the event
   stream).
4. Genesis format 1 is refused with one readable line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from chain.genesis import Genesis, GenesisError
from chain.hashing import sha256
from chain.tx import to_jsonable
from contracts import errors, records
from contracts.identity import (
    IdentityError,
    canonical_resident_id,
    check_digit,
    identity_tag,
    identity_tags,
)
from contracts.params import Params, profile
from tests.test_contracts_governance import GovHarness
from tests.test_contracts_harness import (
    ASSESSOR,
    IDENTITY_KEYS,
    REGISTRAR,
    Harness,
    genesis_doc,
    identity_text,
    member_key,
    register_body,
)
from tests.test_contracts_settlement import notice, settlement, small_payouts

S = 1000

# A realistic but small slice of the region codes (GB/T 2260 county-level codes of Beijing,
# Shanghai, Guangzhou and Shenzhen districts). The full space an attacker searches is about
# 3,000 region codes x 1,000 sequence numbers (the birth date is on chain and the check
# digit is computed), 3 million SHA-256 evaluations: seconds on a laptop. The test keeps
# 40 regions so it runs in well under a second.
REGIONS = [
    "110101", "110102", "110105", "110106", "110107", "110108", "110109", "110111",
    "110112", "110113", "110114", "110115", "110116", "110117", "110118", "110119",
    "310101", "310104", "310105", "310106", "310107", "310109", "310110", "310112",
    "310113", "310114", "310115", "310116", "310117", "310118", "310120", "310151",
    "440103", "440104", "440105", "440106", "440111", "440303", "440304", "440305",
]


def candidates(birth_date: str) -> Iterator[str]:
    """Every resident ID with this birth date in ``REGIONS``: region x sequence, with the
    GB 11643 check digit computed, as an outsider would enumerate them."""
    day = birth_date.replace("-", "")
    for region in REGIONS:
        for seq in range(1000):
            first = f"{region}{day}{seq:03d}"
            yield first + check_digit(first)


def search(targets: set[bytes], birth_date: str, guess) -> str | None:
    """The first candidate whose ``guess(text)`` is one of ``targets``."""
    for text in candidates(birth_date):
        if guess(text) in targets:
            return text
    return None


def unkeyed(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_check_digit_and_canonical_text_follow_gb_11643() -> None:
    # the standard's worked example and an X check digit
    assert check_digit("11010519491231002") == "X"
    assert canonical_resident_id("11010519491231002x") == "11010519491231002X"
    with pytest.raises(IdentityError, match="check digit"):
        canonical_resident_id("110105194912310021")
    with pytest.raises(IdentityError, match="18 characters"):
        canonical_resident_id("1101051949123100")
    with pytest.raises(IdentityError, match="at least 32 bytes"):
        identity_tag(b"short", "11010519491231002X")
    with pytest.raises(IdentityError, match="not held"):
        identity_tags({1: IDENTITY_KEYS[1]}, [1, 2], "11010519491231002X")


def test_brute_force_recovers_the_old_hash_and_not_the_keyed_tag() -> None:
    birth = "1985-07-12"
    secret = "310104198507124176"
    secret = secret[:17] + check_digit(secret[:17])
    # the old format: what every reader of a member record saw
    old_record = {"identity_hash": unkeyed(secret), "birth_date": birth}
    # 40,000 guesses here (a fraction of a second); the full space is ~75 times more
    assert search({old_record["identity_hash"]}, old_record["birth_date"], unkeyed) == secret

    # the new format, on a real chain: the member record as the API serves it
    h = Harness()
    k = member_key(1)
    body = register_body(k, 1, birth_date=birth)
    body["identity_tags"] = identity_tags(IDENTITY_KEYS, [1], secret)
    h.ok(REGISTRAR, "register_member", body)
    m = h.app.get_member(k.public_key.hex())
    assert m["birth_date"] == birth and "identity_hash" not in m
    tags = {bytes.fromhex(t) for _, t in m["identity_tags"]}
    # the same search over the same space finds nothing: a tag is not a hash of the text
    assert search(tags, m["birth_date"], unkeyed) is None
    # nor does a guessed key (anything short of the registrars' secret)
    assert search(tags, m["birth_date"],
                  lambda t: identity_tag(sha256(b"a guessed key"), t)) is None
    # the registrar, with the key, finds the member (it never needs to: it has the ID)
    assert search(tags, m["birth_date"], lambda t: identity_tag(IDENTITY_KEYS[1], t)) == secret


def _register(h: Harness, i: int, key_ids: list[int], **kw: Any) -> str:
    return h.send(REGISTRAR, "register_member",
                  register_body(member_key(i), i, key_ids=key_ids, **kw)).code


def _same_identity(h: Harness, new: int, old: int, key_ids: list[int]) -> str:
    """Register a new key ``new`` for the identity of member ``old``."""
    body = register_body(member_key(new), new, key_ids=key_ids)
    body["identity_tags"] = identity_tags(IDENTITY_KEYS, key_ids, identity_text(old))
    return h.send(REGISTRAR, "register_member", body).code


def test_one_live_membership_and_barred_stays_barred_across_a_key_rotation() -> None:
    h = GovHarness()
    assert h.app.identity_key_ids() == [1]
    assert _register(h, 1, [1]) == "ok"          # A: live, tagged under key 1 only
    assert _register(h, 2, [1]) == "ok"          # B: will be barred before the rotation
    assert _same_identity(h, 90, 1, [1]) == errors.IDENTITY_IN_USE
    # B files inside the waiting period: rule 3 bars the identity
    assert h.claim(member_key(2), h.time).code == "ok"
    assert h.app.get_member(member_key(2).public_key.hex())["status"] == "barred"
    assert _same_identity(h, 91, 2, [1]) == errors.IDENTITY_BARRED

    # a key id may only be added, never dropped or reordered
    for bad in ([2], [2, 1], []):
        r = h.propose(0, "set_params", params={"identity_key_ids": bad}, from_period=2)
        assert r.code == errors.BAD_PARAMS, (bad, r.code)
    h.passes("set_params", params={"identity_key_ids": [1, 2]}, from_period=1)
    assert h.app.identity_key_ids() == [1, 2]
    # a registration must now carry a tag under each key in use, in order
    assert _register(h, 3, [1]) == errors.IDENTITY_KEYS_MISMATCH
    assert _register(h, 3, [2, 1]) == errors.IDENTITY_KEYS_MISMATCH
    # the old memberships are still found through their key-1 tags
    assert _same_identity(h, 92, 1, [1, 2]) == errors.IDENTITY_IN_USE
    assert _same_identity(h, 93, 2, [1, 2]) == errors.IDENTITY_BARRED

    # C joins after the rotation: both its tags are live, and either finds it
    assert _register(h, 4, [1, 2]) == "ok"
    c_tags = [t for _, t in register_body(member_key(4), 4, key_ids=[1, 2])["identity_tags"]]
    for t in c_tags:
        assert records.load(h.state, records.identity_key(t))["status"] == "live"
    assert _same_identity(h, 94, 4, [1, 2]) == errors.IDENTITY_IN_USE
    # C is barred: every one of its tags is barred for good
    assert h.claim(member_key(4), h.time).code == "ok"
    for t in c_tags:
        assert records.load(h.state, records.identity_key(t))["status"] == "barred"
    assert _same_identity(h, 95, 4, [1, 2]) == errors.IDENTITY_BARRED

    # A leaves: the identity is free again and rejoins under both keys
    h.ok(member_key(1), "leave", {})
    assert records.load(h.state, records.identity_key(
        register_body(member_key(1), 1)["identity_tags"][0][1])) is None
    assert _same_identity(h, 96, 1, [1, 2]) == "ok"
    assert _same_identity(h, 97, 1, [1, 2]) == errors.IDENTITY_IN_USE
    # a tag list that repeats a tag or a key id is not a body at all
    body = register_body(member_key(98), 98, key_ids=[1, 2])
    body["identity_tags"][1][1] = body["identity_tags"][0][1]
    assert h.send(REGISTRAR, "register_member", body).code == errors.BAD_BODY


def _walk(value: Any) -> Iterator[Any]:
    """Every key and leaf of a decoded record, event or body."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _walk(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def test_nothing_public_carries_a_credit_score_or_an_unkeyed_identity_hash() -> None:
    h = Harness(small_payouts())
    bodies: list[dict[str, Any]] = []
    send = h.send

    def recording_send(key, type_, body):
        bodies.append(body)
        return send(key, type_, body)

    h.send = recording_send  # type: ignore[method-assign]
    with h.block(h.g0 + S):
        keys = [h.join(i) for i in range(8)]
        # a child joins on a guardian's attestation (the guardian is member 0)
        guardian = register_body(keys[0], 0)["identity_tags"][-1][1]
        child = h.join(100, birth_date="2020-02-02", guardian=guardian)
    with h.block(h.g0 + 2 * S):
        assert h.claim(keys[7], h.time).code == "ok"            # rule 3: barred
    t = h.g0 + notice(2) - 5 * S
    with h.block(t):
        for k in keys[:3]:
            assert h.claim(k, t - S).code == "ok"
            assert h.assess(h.last_claim_id()).code == "ok"
    with h.block(h.g0 + notice(2) + S):
        h.ok(keys[4], "object_claim", {"claim_id": 2, "reason_hash": sha256(b"salt+why")})
    h.tick(h.g0 + settlement(2) + S)
    h.ok(keys[5], "leave", {})

    identities = [identity_text(i) for i in [*range(8), 100]]
    forbidden = set()
    for text in identities:
        forbidden |= {unkeyed(text), unkeyed(text.lower()), text.encode()}
    forbidden_hex = {f.hex() for f in forbidden} | set(identities)
    bad_names = {"credit_score", "credit_threshold", "identity_hash", "health_hash",
                 "credit_ref", "guardian_hash", "score"}

    def check(where: str, value: Any) -> None:
        for leaf in _walk(value):
            assert not (isinstance(leaf, bytes) and any(f in leaf for f in forbidden)), where
            assert not (isinstance(leaf, str) and (leaf in bad_names or any(
                f in leaf for f in forbidden_hex))), (where, leaf)

    assert len(h.state.data) > 30 and len(h.events) > 20 and len(bodies) > 15
    for key, data in h.state.data.items():
        assert not any(f in key for f in forbidden), key
        rec = msgpack.unpackb(data, raw=False, strict_map_key=False)
        check(f"state {key!r}", rec)
    for ev in h.events:
        check(f"event {ev.type}", ev.to_map())
    for body in bodies:
        check("tx body", body)
    # what the API's record doors serve (node/queries.py reads these)
    for k in [*keys, child]:
        m = h.app.get_member(k.public_key.hex())
        check("member answer", m)
        assert "credit_attestation" in m and "identity_tags" in m
    for cid in range(1, 5):
        c = h.app.get_claim(cid)
        check("claim answer", c)
    check("period answer", h.app.get_period(2))
    check("genesis params", to_jsonable(h.app.params_history()))
    # a paid claim's public record shows the notice's fields and a band, not documents
    c = h.app.get_claim(2)
    assert c["age_band"] == [0, 59] and c["disease"] == "malignant_tumor"
    assert len(bytes.fromhex(c["evidence_hash"])) == 32
    assert h.app.get_claim(3)["assessor"] == ASSESSOR.public_key.hex()


def test_a_genesis_without_the_format_is_refused_in_one_line() -> None:
    doc = genesis_doc(profile("devnet"), "2024-01-01T00:00:00+00:00")
    assert Genesis.from_doc(doc).doc["format"] == 2
    for old in ({k: v for k, v in doc.items() if k != "format"}, {**doc, "format": 1}):
        with pytest.raises(GenesisError) as exc:
            Genesis.from_doc(old)
        msg = str(exc.value)
        assert "\n" not in msg and "mutual genesis new" in msg and "format" in msg
    # format 2 with the retired parameter is refused by the rules
    p = profile("devnet")
    p["credit_threshold"] = 650
    with pytest.raises(ValueError, match="credit_threshold"):
        Params.from_dict(p)


async def test_no_api_answer_block_or_event_carries_them(tmp_path) -> None:
    """The doors: a real single-validator node (in-process, loopback) serves blocks,
    transactions, records, accounts and the event stream; none carries a credit-score
    field, an identity text or an unkeyed hash of one."""
    import asyncio

    import aiohttp

    from chain.crypto import PrivateKey
    from chain.tx import Transaction
    from devnet.cluster import Cluster, free_base_port
    from tests.test_api_hardening import running

    cluster = Cluster.create(tmp_path / "net", validators=1, base_port=free_base_port(2))
    chain_id = cluster.genesis.chain_id
    key_ids = cluster.genesis.params["identity_key_ids"]
    registrar = cluster.role_key("registrar")
    texts = [identity_text(i) for i in range(4)]
    members = [PrivateKey(sha256(b"privacy api member" + bytes([i]))) for i in range(4)]
    seen: list[str] = []
    async with running(cluster) as r, aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=40)) as s:
        subscribed = asyncio.Event()

        async def listen() -> None:
            async with s.get(r.url + "/events",
                             timeout=aiohttp.ClientTimeout(total=None)) as resp:
                subscribed.set()
                async for line in resp.content:
                    seen.append(line.decode())

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(subscribed.wait(), 10)

        async def submit(tx: Transaction) -> dict:
            async with s.post(r.url + "/txs", data=tx.encode(), params={"mode": "commit"},
                              headers={"Content-Type": "application/msgpack"}) as resp:
                doc = await resp.json()
            assert doc.get("code") == "ok", doc
            return doc

        hashes = []
        for i, k in enumerate(members):
            body = register_body(k, i, key_ids=key_ids)
            body["identity_tags"] = identity_tags(IDENTITY_KEYS, key_ids, texts[i])
            if i == 3:  # a child, on the guardian's (member 0's) attestation
                body["birth_date"] = "2020-02-02"
                body["guardian_tag"] = identity_tag(IDENTITY_KEYS[key_ids[-1]], texts[0])
            hashes.append((await submit(Transaction.create(
                registrar, chain_id, "register_member", i + 1, body)))["hash"])
        for i, accident in ((0, False), (1, True)):
            async with s.get(r.url + "/blocks/latest") as resp:
                now = int((await resp.json())["header"]["time"])
            # inside the waiting period: rule 3 rejects the first, the accident is filed
            doc = await submit(Transaction.create(members[i], chain_id, "file_claim", 1, {
                "disease": "malignant_tumor", "diagnosed_ms": now, "accident": accident,
                "evidence_hash": sha256(b"salt||evidence")}))
            hashes.append(doc["hash"])
        answers: list[str] = []

        async def get(path: str) -> None:
            async with s.get(r.url + path) as resp:
                assert resp.status == 200, (path, resp.status)
                answers.append(await resp.text())

        async with s.get(r.url + "/blocks/latest") as resp:
            latest = (await resp.json())["header"]["height"]
        for h in range(1, int(latest) + 1):
            await get(f"/blocks/{h}")
        for tx_hash in hashes:
            await get(f"/txs/{tx_hash}")
        for k in members:
            await get(f"/members/{k.public_key.hex()}")
            await get(f"/accounts/{k.public_key.hex()}")
        for path in ("/claims/1", "/claims/2", "/params/history", "/genesis", "/status"):
            await get(path)
        await asyncio.sleep(0.5)          # the last events reach the stream
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)

    public = "\n".join(answers + seen).lower()
    assert "member_joined" in public and "claim_filed" in public and "identity_tags" in public
    for text in texts:
        for needle in (text.lower(), unkeyed(text).hex(), unkeyed(text.lower()).hex()):
            assert needle not in public
    for name in ("credit_score", "credit_threshold", "identity_hash", "health_hash",
                 "credit_ref", "guardian_hash"):
        assert f'"{name}"' not in public, name
