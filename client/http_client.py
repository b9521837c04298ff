"""The Python client of the HTTP API, used by the CLI, the devnet, the auditor and tests.

Synchronous (standard library only) so a member's script or the CLI needs no event loop.
``Account`` wraps a key and tracks its nonce, so sending a transaction is one call.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from chain.crypto import PrivateKey
from chain.tx import Transaction


class ClientError(Exception):
    """The node answered with an error, or could not be reached."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if status == 0 else f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Client:
    """A thin wrapper over the node's HTTP API (see docs/api.md)."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        if "://" not in base_url:
            base_url = "http://" + base_url
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        params: dict[str, Any] | None = None,
        raw: bool = False,
        timeout: float | None = None,
    ) -> Any:
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(
                {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items()}
            )
        try:
            req = urllib.request.Request(url, data=body, method=method)
        except ValueError as exc:
            raise ClientError(0, "bad_url", f"{self.base_url} is not a usable URL: "
                                            f"{exc}") from None
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                payload = exc.read()
            except (http.client.HTTPException, OSError):
                payload = b""
            try:
                err = json.loads(payload)
                raise ClientError(exc.code, err.get("error", "error"), err.get("message", "")) from None
            except (ValueError, AttributeError):
                raise ClientError(exc.code, "http_error", payload[:200].decode(errors="replace")) from None
        except urllib.error.URLError as exc:
            raise ClientError(0, "unreachable", f"cannot reach {self.base_url}: {exc.reason}") from None
        except (TimeoutError, ConnectionError) as exc:
            raise ClientError(0, "unreachable", f"cannot reach {self.base_url}: {exc}") from None
        except http.client.InvalidURL as exc:
            raise ClientError(0, "bad_url", f"{self.base_url} is not a usable URL: "
                                            f"{exc}") from None
        except http.client.HTTPException as exc:
            # e.g. the peer-to-peer port, which answers with handshake bytes
            raise self._not_the_api(f"{type(exc).__name__} {str(exc)[:40]!r}") from None
        if raw:
            return data
        try:
            return json.loads(data)
        except ValueError:  # a 200 that is not JSON (UnicodeDecodeError is a ValueError)
            raise self._not_the_api(f"the answer to {path} is not JSON") from None

    def _not_the_api(self, detail: str) -> ClientError:
        return ClientError(0, "not_the_api", f"{self.base_url} did not answer as the node's "
                                             f"HTTP API (is this the API address?); "
                                             f"{detail}")

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/status")

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/healthz")

    def submit(self, tx: Transaction | bytes, mode: str = "sync", timeout: float | None = None) -> dict:
        """POST /txs; ``mode`` is async, sync (after the mempool check) or commit."""
        data = tx.encode() if isinstance(tx, Transaction) else tx
        return self._request("POST", "/txs", data, "application/msgpack", {"mode": mode},
                             timeout=timeout)

    def submit_batch(self, txs: list[Transaction | bytes], timeout: float | None = None) -> dict:
        """POST /txs/batch: each transaction checked as in mode=sync."""
        from chain import encoding

        datas = [t.encode() if isinstance(t, Transaction) else t for t in txs]
        return self._request("POST", "/txs/batch", encoding.encode(datas), "application/msgpack",
                             timeout=timeout)

    def submit_json(self, tx_bytes: bytes, mode: str = "sync") -> dict:
        body = json.dumps({"tx": base64.b64encode(tx_bytes).decode()}).encode()
        return self._request("POST", "/txs", body, "application/json", {"mode": mode})

    def tx(self, tx_hash: str) -> dict:
        return self._request("GET", f"/txs/{tx_hash}")

    def block(self, height: int | str = "latest") -> dict:
        return self._request("GET", f"/blocks/{height}")

    def raw_block(self, height: int) -> bytes:
        """The canonical block bytes followed by nothing else (``?format=msgpack``)."""
        return self._request("GET", f"/blocks/{height}", params={"format": "msgpack"}, raw=True)

    def raw_certificate(self, height: int) -> bytes:
        """The canonical commit certificate of block ``height``."""
        return self._request("GET", f"/certificates/{height}", params={"format": "msgpack"},
                             raw=True)

    def validators(self, height: int | None = None) -> dict:
        """GET /validators: the set that signs ``height`` (default: the next height)."""
        return self._request("GET", "/validators",
                             params=None if height is None else {"height": height})

    def validator_changes(self, from_height: int | None = None,
                          limit: int | None = None) -> dict:
        """GET /validators/changes: each height at which the set changed from
        ``from_height`` on, with the new set and the certified header of the height
        before it (docs/governance.md, "How a light client follows the set")."""
        params = {k: v for k, v in (("from", from_height), ("limit", limit)) if v is not None}
        return self._request("GET", "/validators/changes", params=params or None)

    def proposals(self, status: str | None = None, after: int | None = None,
                  limit: int | None = None) -> dict:
        """GET /proposals: governance proposals, optionally by status, paged by id."""
        params = {k: v for k, v in (("status", status), ("after", after), ("limit", limit))
                  if v is not None}
        return self._request("GET", "/proposals", params=params or None)

    def proposal(self, proposal_id: int | str) -> dict:
        """GET /proposals/{id}: one proposal with its votes and tally."""
        return self._request("GET", f"/proposals/{proposal_id}")

    def params_history(self, proof: bool = False) -> dict:
        """GET /params/history: the rule parameters in force from each period; with
        ``proof``, also ``proofs``: proof bundles of the ``paramh`` and ``paramv/<v>``
        state records (docs/governance.md, "What the auditor checks")."""
        return self._request("GET", "/params/history",
                             params={"proof": True} if proof else None)

    def genesis(self) -> dict:
        return self._request("GET", "/genesis")

    def account(self, pub_key_hex: str) -> dict:
        return self._request("GET", f"/accounts/{pub_key_hex}")

    def member(self, member_id: str, proof: bool = False) -> dict:
        return self._request("GET", f"/members/{member_id}", params={"proof": proof})

    def claim(self, claim_id: str | int, proof: bool = False) -> dict:
        return self._request("GET", f"/claims/{claim_id}", params={"proof": proof})

    def period(self, n: int, proof: bool = False) -> dict:
        return self._request("GET", f"/periods/{n}", params={"proof": proof})

    def share(self, member_id: str, period: int) -> dict:
        """The node's own account of a member's share (trusting the node)."""
        return self._request("GET", f"/members/{member_id}/shares/{period}")


class Account:
    """A signing key bound to a chain and a node, tracking its own nonce."""

    def __init__(self, key: PrivateKey, chain_id: str, client: Client) -> None:
        self.key = key
        self.chain_id = chain_id
        self.client = client
        self._next_nonce: int | None = None

    @property
    def pub_hex(self) -> str:
        return self.key.public_key.hex()

    def next_nonce(self) -> int:
        if self._next_nonce is None:
            self._next_nonce = int(self.client.account(self.pub_hex)["next_nonce"])
        return self._next_nonce

    def build(self, tx_type: str, body: dict[str, Any]) -> Transaction:
        """Sign the next transaction (consumes a nonce locally)."""
        tx = Transaction.create(self.key, self.chain_id, tx_type, self.next_nonce(), body)
        self._next_nonce = tx.nonce + 1
        return tx

    def send(self, tx_type: str, body: dict[str, Any], mode: str = "commit") -> dict:
        """Build, sign and submit; on a refused submission the nonce is re-read next time."""
        tx = self.build(tx_type, body)
        try:
            result = self.client.submit(tx, mode=mode)
        except ClientError:
            self._next_nonce = None
            raise
        if result.get("code", "ok") != "ok" and result.get("height") is None:
            self._next_nonce = None
        return result
