"""Following the validator set from genesis, as a light client does (``verify-share``).

A member trusts only their genesis file, so only the genesis set. The node serves the
list of set changes (``GET /validators/changes``): for each height E at which the set
changed, the new set and the header and commit certificate of block E-1. Holding the set
S of height E-1, the client checks that header E-1 names S (``validators_hash``), that
more than 2/3 of S's power signed it, and that it commits to the new set
(``next_validators_hash``); then the new set is S. One certificate check per change
(docs/governance.md, "How a light client follows the set"). A change the node leaves out
or forges is caught here or by the final check every proof bundle gets
(``SetFollower.check_header``), and named with its height.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from chain import encoding
from chain.block import BlockHeader
from chain.certificate import CommitCertificate, verify_certificate
from chain.genesis import Genesis
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet, ValidatorSetError
from chain.vote import MessageError

PAGE = 100              # changes asked for per request
MAX_CHANGES = 100_000   # a bound on the walk: a node cannot keep a client walking forever


class SetFollowError(Exception):
    """The change list does not hold: ``kind`` ``node`` (no answer), ``malformed`` or
    ``validators`` (a forged, omitted or uncertified change); ``height`` is the height of
    the change (or of the header) at fault."""

    def __init__(self, kind: str, height: int | None, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.height = height
        self.reason = reason


def _bytes_field(entry: dict[str, Any], name: str, size: int | None, where: str,
                 nullable: bool = False) -> bytes | None:
    value = entry.get(name)
    if value is None and nullable:
        return None
    try:
        data = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        data = None
    if data is None or (size is not None and len(data) != size):
        raise SetFollowError("malformed", None, f"{where}: field {name!r} is not "
                                                f"{'hex' if size is None else f'{size} bytes of hex'}")
    return data


def set_from_json(validators: Any, where: str) -> ValidatorSet:
    """A set from its JSON form (``/validators``, ``/validators/changes``): a list of
    {"pub_key": hex, "power": int, "name"?, "node_key"?: hex|null, "operator"?: hex|null}
    in set order."""
    if not isinstance(validators, list):
        raise SetFollowError("malformed", None, f"{where}: 'validators' is not a list")
    out = []
    for i, v in enumerate(validators):
        if not isinstance(v, dict):
            raise SetFollowError("malformed", None, f"{where}: validator {i} is not a map")
        w = f"{where}, validator {i}"
        pk = _bytes_field(v, "pub_key", 32, w)
        node_key = _bytes_field(v, "node_key", 32, w, nullable=True)
        operator = _bytes_field(v, "operator", 32, w, nullable=True)
        assert pk is not None
        try:
            out.append(Validator(pk, v.get("power"), v.get("name", ""), node_key, operator))
        except ValidatorSetError as exc:
            raise SetFollowError("malformed", None, f"{w}: {exc}") from None
    try:
        return ValidatorSet(out)
    except ValidatorSetError as exc:
        raise SetFollowError("malformed", None, f"{where}: {exc}") from None


class SetFollower:
    """The validator sets of a chain, from the genesis set through every certified change
    the node lists. ``walk`` fetches and checks the list; ``at(h)`` is the set of height
    ``h``; ``check_header`` is the final check of a header the client is given a proof
    against."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.starts: list[int] = [1]
        self.sets: list[ValidatorSet] = [genesis.validators]
        self.walked = 0          # changes checked (one certificate each)
        self.seconds = 0.0       # time spent walking (fetching and checking)
        self.check_seconds = 0.0  # of which checking (certificates, hashes)
        # the first listed change whose block E-1 is not certified yet (it applies in the
        # node's next two heights): it and anything after it cannot be followed yet, and
        # no proof can be against a height it signs (``check_header`` would refuse it)
        self.uncertified: int | None = None

    def at(self, height: int) -> ValidatorSet:
        """The set that signs ``height`` as far as the walked changes say."""
        return self.sets[bisect_right(self.starts, height) - 1]

    def walk(self, fetch: Callable[[int, int], Any]) -> None:
        """Fetch every change (``fetch(from_height, limit)`` returns the JSON of
        ``/validators/changes?from=..&limit=..``, the changes at heights after
        ``from_height``) and check each against the set before it. A page is asked for
        from the last height walked; an entry at or below it is one already held (a
        node that reads ``from`` inclusively repeats it) and is skipped."""
        start = time.perf_counter()
        try:
            while self.uncertified is None:
                page = fetch(self.starts[-1], PAGE)
                changes = page.get("changes") if isinstance(page, dict) else None
                if not isinstance(changes, list):
                    raise SetFollowError("malformed", None, "/validators/changes: no "
                                                            "'changes' list")
                before = self.starts[-1]
                for entry in changes:
                    if self.uncertified is not None:
                        break
                    e = entry.get("height") if isinstance(entry, dict) else None
                    if isinstance(e, int) and 1 < e <= self.starts[-1]:
                        continue
                    self.follow(entry)
                if len(changes) < PAGE or self.starts[-1] == before:
                    return
                if len(self.starts) > MAX_CHANGES:
                    raise SetFollowError("malformed", None, f"more than {MAX_CHANGES} "
                                                            "validator set changes listed")
        finally:
            self.seconds += time.perf_counter() - start

    def follow(self, entry: Any) -> None:
        """Check one change entry against the set held now and move to its set."""
        t0 = time.perf_counter()
        try:
            self._follow(entry)
        finally:
            self.check_seconds += time.perf_counter() - t0

    def _follow(self, entry: Any) -> None:
        if not isinstance(entry, dict):
            raise SetFollowError("malformed", None, "a validator set change is not a map")
        e = entry.get("height")
        if not isinstance(e, int) or isinstance(e, bool) or e < 1:
            raise SetFollowError("malformed", None, f"a change has height {e!r}")
        where = f"the validator set change at height {e}"
        new = set_from_json(entry.get("validators"), where)
        claimed = entry.get("hash")
        if claimed is not None and claimed != new.hash().hex():
            raise SetFollowError("validators", e, f"{where}: its 'hash' {claimed} is not the "
                                                  f"hash of its validators "
                                                  f"{new.hash().hex()}")
        if e == 1:  # the node may list the genesis set: it must be the member's own
            if self.starts != [1] or new.hash() != self.genesis.validators.hash():
                raise SetFollowError("validators", 1, "the set listed for height 1 is not "
                                                      "the genesis file's")
            return
        if e <= self.starts[-1]:  # the walk skips repeats: only a misordered list gets here
            raise SetFollowError("malformed", e, f"{where} does not come after the change "
                                                 f"at height {self.starts[-1]}")
        held = self.sets[-1]
        header_bytes = _bytes_field(entry, "header", None, where, nullable=True)
        cert_bytes = _bytes_field(entry, "certificate", None, where, nullable=True)
        if header_bytes is None or cert_bytes is None:
            self.uncertified = e
            return
        try:
            header = BlockHeader.from_map(encoding.decode(header_bytes))
            cert = CommitCertificate.decode(cert_bytes)
        except (MessageError, encoding.EncodingError) as exc:
            raise SetFollowError("malformed", e, f"{where}: the header or certificate of "
                                                 f"block {e - 1} does not decode: "
                                                 f"{exc}") from None
        if header.chain_id != self.genesis.chain_id or header.height != e - 1:
            raise SetFollowError("validators", e, f"{where}: the header given is block "
                                                  f"{header.height} of chain "
                                                  f"{header.chain_id!r}, not block {e - 1} "
                                                  f"of {self.genesis.chain_id!r}")
        if header.validators_hash != held.hash():
            raise SetFollowError(
                "validators", e, f"{where}: block {e - 1} is signed by the set "
                                 f"{header.validators_hash.hex()[:16]}…, not the set "
                                 f"{held.hash().hex()[:16]}… followed so far from height "
                                 f"{self.starts[-1]}: the list leaves out an earlier change")
        ok, why = verify_certificate(cert, self.genesis.chain_id, held, e - 1,
                                     sha256(header_bytes))
        if not ok:
            raise SetFollowError("validators", e, f"{where}: the certificate of block "
                                                  f"{e - 1} is not valid against the set "
                                                  f"followed so far: {why}")
        if header.next_validators_hash != new.hash():
            raise SetFollowError(
                "validators", e, f"{where}: the set listed ({new.hash().hex()[:16]}…) is "
                                 f"not the one certified block {e - 1} commits to "
                                 f"({header.next_validators_hash.hex()[:16]}…): a forged "
                                 "change")
        self.starts.append(e)
        self.sets.append(new)
        self.walked += 1

    def check_header(self, header: BlockHeader) -> ValidatorSet:
        """The final check of a header a proof is against: it must name the set the walk
        gives its height (else the list left out a change up to that height); returns
        that set, which its certificate must then be checked against."""
        vset = self.at(header.height)
        if header.validators_hash != vset.hash():
            last = self.starts[bisect_right(self.starts, header.height) - 1]
            raise SetFollowError(
                "validators", header.height,
                f"block {header.height} is signed by the set "
                f"{header.validators_hash.hex()[:16]}…, but following the certified changes "
                f"from genesis gives {vset.hash().hex()[:16]}… (in force from height {last}): "
                f"the change list leaves out a change between heights {last + 1} and "
                f"{header.height}")
        return vset
