"""The OpenAPI 3.1 description of the node's HTTP API, served at GET /openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _resp(desc: str, schema: dict[str, Any] | None = None, errors: tuple[int, ...] = ()) -> dict:
    out: dict[str, Any] = {"200": {"description": desc}}
    if schema is not None:
        out["200"]["content"] = {"application/json": {"schema": schema}}
    for code in errors:
        out[str(code)] = {"description": "error",
                          "content": {"application/json": {"schema": _ERROR}}}
    return out


def _path_param(name: str, desc: str, schema: dict[str, Any] | None = None) -> dict:
    return {"name": name, "in": "path", "required": True, "description": desc,
            "schema": schema or {"type": "string"}}


_PROOF = {"name": "proof", "in": "query", "required": False,
          "description": "include a Merkle proof against a committed state root",
          "schema": {"type": "boolean", "default": False}}

_RECORD = {
    "type": "object",
    "description": "A state record. With proof=true also: key, value (hex of the canonical "
                   "record bytes), proof (hex, docs/state.md), state_root, and the header "
                   "(height, block_id, header hex) plus its commit certificate (hex) that "
                   "commit to that root.",
    "additionalProperties": True,
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "mutual-ledger node API",
        "version": "1",
        "description": "Submit signed transactions (docs/encoding.md, docs/transactions.md) "
                       "and read blocks, receipts and state records with proofs. On any "
                       "route: 400 header_too_large / bad_request for a malformed request, "
                       "408 request_timeout for a body that does not arrive within 30 s, "
                       "503 too_many_connections beyond 256 open connections (docs/api.md, "
                       "Limits); every error body is an Error.",
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {"error": {"type": "string", "description": "stable code"},
                               "message": {"type": "string"}},
            },
            "Validator": {
                "type": "object",
                "required": ["index", "name", "pub_key", "power", "node_key", "operator"],
                "properties": {
                    "index": {"type": "integer"}, "name": {"type": "string"},
                    "pub_key": {"type": "string", "description": "hex consensus key"},
                    "power": {"type": "integer"},
                    "node_key": {"type": ["string", "null"], "description": "hex p2p key"},
                    "operator": {"type": ["string", "null"],
                                 "description": "hex operator account"},
                },
            },
            "ValidatorSet": {
                "type": "object",
                "required": ["height", "hash", "next_hash", "total_power", "validators"],
                "properties": {
                    "height": {"type": "integer"},
                    "hash": {"type": "string", "description": "hex set hash"},
                    "next_hash": {"type": ["string", "null"],
                                  "description": "hex hash of the set of height + 1, "
                                                 "null when not known yet"},
                    "total_power": {"type": "integer"},
                    "validators": {"type": "array",
                                   "items": {"$ref": "#/components/schemas/Validator"}},
                },
            },
            "TxResult": {
                "type": "object",
                "required": ["hash", "code", "reason"],
                "properties": {
                    "hash": {"type": "string", "description": "hex sha256 of the tx bytes"},
                    "code": {"type": "string", "description": "ok or a stable error code"},
                    "reason": {"type": "string"},
                    "height": {"type": ["integer", "null"],
                               "description": "block height (mode=commit)"},
                    "events": {"type": "array", "items": {"type": "object"}},
                },
            },
        }
    },
    "paths": {
        "/txs": {"post": {
            "summary": "Submit a signed transaction",
            "parameters": [{"name": "mode", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["async", "sync", "commit"],
                                       "default": "sync"},
                            "description": "async: return at once; sync: after the mempool "
                                           "check; commit: after the block commits"}],
            "requestBody": {"required": True, "content": {
                "application/msgpack": {"schema": {"type": "string", "format": "binary"},
                                        "description": "the canonical signed tx bytes"},
                "application/json": {"schema": {
                    "type": "object", "required": ["tx"],
                    "properties": {"tx": {"type": "string", "contentEncoding": "base64"}}}},
            }},
            "responses": _resp("accepted (or committed)",
                               {"$ref": "#/components/schemas/TxResult"}, (400, 413, 415, 503)),
        }},
        "/txs/batch": {"post": {
            "summary": "Submit up to 1,000 signed transactions, each checked as mode=sync",
            "requestBody": {"required": True, "content": {
                "application/msgpack": {"schema": {"type": "string", "format": "binary"},
                                        "description": "canonical msgpack array of tx bytes"},
                "application/json": {"schema": {
                    "type": "object", "required": ["txs"],
                    "properties": {"txs": {"type": "array", "maxItems": 1000, "items": {
                        "type": "string", "contentEncoding": "base64"}}}}},
            }},
            "responses": _resp("per-transaction results", {
                "type": "object", "properties": {
                    "accepted": {"type": "integer"},
                    "results": {"type": "array",
                                "items": {"$ref": "#/components/schemas/TxResult"}}}},
                (400, 413, 415)),
        }},
        "/txs/{hash}": {"get": {
            "summary": "A committed (or pending) transaction with its receipt",
            "parameters": [_path_param("hash", "64 hex")],
            "responses": _resp("the transaction", {"type": "object"}, (400, 404)),
        }},
        "/blocks/latest": {"get": {
            "summary": "The latest committed block",
            "parameters": [{"name": "format", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["json", "msgpack"]}}],
            "responses": _resp("header, transactions, certificate", {"type": "object"},
                               (400, 404)),
        }},
        "/blocks/{height}": {"get": {
            "summary": "A committed block: header, transactions, evidence, last_commit, and "
                       "the certificate that committed it. format=msgpack returns the "
                       "canonical block bytes.",
            "parameters": [_path_param("height", "1, 2, …", {"type": "integer", "minimum": 1}),
                           {"name": "format", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["json", "msgpack"]}}],
            "responses": _resp("the block", {"type": "object"}, (400, 404)),
        }},
        "/certificates/{height}": {"get": {
            "summary": "The commit certificate of block {height}",
            "parameters": [_path_param("height", "1, 2, …", {"type": "integer", "minimum": 1}),
                           {"name": "format", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["json", "msgpack"]}}],
            "responses": _resp("the certificate", {"type": "object"}, (400, 404)),
        }},
        "/status": {"get": {
            "summary": "chain id, node id, height, latest block hash, state root, "
                       "catching_up, peers",
            "responses": _resp("status", {"type": "object"}),
        }},
        "/healthz": {"get": {"summary": "liveness", "responses": _resp("ok", {"type": "object"},
                                                                        (503,))}},
        "/readyz": {"get": {"summary": "readiness: alive, not catching up, a peer connected, "
                                       "blocks committing (docs/api.md)",
                            "responses": _resp("ok", {"type": "object"}, (503,))}},
        "/validators": {"get": {
            "summary": "The validator set that signs block {height} (default: the next "
                       "height), known from 1 to latest + 2 (docs/governance.md)",
            "parameters": [{"name": "height", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 0}}],
            "responses": _resp("the set", {"$ref": "#/components/schemas/ValidatorSet"},
                               (400, 404)),
        }},
        "/validators/changes": {"get": {
            "summary": "Every height E > 1 (and > from) at which the validator set changed, "
                       "ascending, with the new set, the recorded reasons, and the header "
                       "and certificate of block E-1 (null until committed): what a light "
                       "client walks (docs/governance.md)",
            "parameters": [{"name": "from", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 0}},
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                       "default": 100}}],
            "responses": _resp("changes", {
                "type": "object", "required": ["changes", "next_from"],
                "properties": {
                    "changes": {"type": "array", "items": {
                        "type": "object",
                        "required": ["height", "hash", "validators", "reasons", "header",
                                     "certificate"],
                        "properties": {
                            "height": {"type": "integer"},
                            "hash": {"type": "string", "description": "hex set hash"},
                            "validators": {"type": "array", "items": {
                                "$ref": "#/components/schemas/Validator"}},
                            "reasons": {"type": "array", "items": {"type": "object"},
                                        "description": "the change record's changes, "
                                                       "bytes as hex"},
                            "header": {"type": ["string", "null"],
                                       "description": "hex canonical header of block E-1"},
                            "certificate": {"type": ["string", "null"],
                                            "description": "hex canonical certificate of "
                                                           "block E-1"}}}},
                    "next_from": {"type": ["integer", "null"],
                                  "description": "pass as from for the next page"}}},
                (400,)),
        }},
        "/proposals": {"get": {
            "summary": "Governance proposals, oldest first (501 when this node's rules "
                       "have no governance)",
            "parameters": [{"name": "status", "in": "query", "required": False,
                            "schema": {"type": "string",
                                       "enum": ["open", "passed", "expired", "failed"]}},
                           {"name": "after", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 0},
                            "description": "only proposals with a larger id"},
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                       "default": 100}}],
            "responses": _resp("proposals", {"type": "object"}, (400, 501)),
        }},
        "/proposals/{id}": {"get": {
            "summary": "One governance proposal with its votes and tally",
            "parameters": [_path_param("id", "proposal id", {"type": "integer"})],
            "responses": _resp("the proposal", {"type": "object"}, (400, 404, 501)),
        }},
        "/params/history": {"get": {
            "summary": "Every rule-parameter change with its effective period",
            "responses": _resp("the history", {"type": "object"}, (501,)),
        }},
        "/genesis": {"get": {"summary": "the genesis document this node runs (an auditor "
                                        "should bring its own)",
                             "responses": _resp("genesis", {"type": "object"})}},
        "/accounts/{pub_key}": {"get": {
            "summary": "An account's nonce: next_nonce is the nonce to sign with",
            "parameters": [_path_param("pub_key", "64 hex")],
            "responses": _resp("account", {"type": "object"}, (400,)),
        }},
        "/members/{id}": {"get": {
            "summary": "A member record", "parameters": [_path_param("id", "member id"), _PROOF],
            "responses": _resp("member", _RECORD, (400, 404)),
        }},
        "/members/{id}/shares/{period}": {"get": {
            "summary": "A member's share of one settlement period with its derivation",
            "parameters": [_path_param("id", "member id"),
                           _path_param("period", "period number", {"type": "integer"})],
            "responses": _resp("share", {"type": "object"}, (400, 404)),
        }},
        "/claims/{id}": {"get": {
            "summary": "A claim record", "parameters": [_path_param("id", "claim id"), _PROOF],
            "responses": _resp("claim", _RECORD, (400, 404)),
        }},
        "/periods/{n}": {"get": {
            "summary": "A settlement period record (P, F, S, M, share, operator-covered, "
                       "claim ids)",
            "parameters": [_path_param("n", "period number", {"type": "integer"}), _PROOF],
            "responses": _resp("period", _RECORD, (400, 404)),
        }},
        "/events": {"get": {
            "summary": "Server-sent events: `block` (height, hash, txs) and `tx` (hash, "
                       "height, code) as JSON data lines",
            "responses": {"200": {"description": "text/event-stream"}},
        }},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "text/plain exposition"}}}},
        "/openapi.json": {"get": {"summary": "this document",
                                  "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    },
}
