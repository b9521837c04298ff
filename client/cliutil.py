"""What every door's subcommands share: one-line errors, exit codes, JSON output.

Every error is one readable line on stderr and a non-zero exit code (2 for usage and
input errors, 1 for a failed check or an unreachable node); never a traceback. A door's
command raises ``CliError``; the ``mutual`` entry (``mutual/cli.py``) prints it.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A command failed for a reason the user can act on; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=False))


def json_fields(text: str | None, option: str, items: list[str] | None, item_error: str,
                allow_empty_name: bool = True) -> dict[str, Any]:
    """A JSON object given as ``option`` (``text``), then ``NAME=VALUE`` items on top of it,
    each VALUE read as JSON where it parses and as text otherwise. ``item_error`` formats
    the error for a malformed item (``{item!r}`` is filled in)."""
    out: dict[str, Any] = {}
    if text:
        try:
            out = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"{option} is not JSON: {exc}") from None
        if not isinstance(out, dict):
            raise CliError(f"{option} must be a JSON object")
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not (name or allow_empty_name):
            raise CliError(item_error.format(item=item))
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value



def add_node_args(sp: argparse.ArgumentParser) -> None:
    """``--node`` (default from ``MUTUAL_NODE``) and ``--timeout``: a command that asks a node."""
    sp.add_argument("--node", default=os.environ.get("MUTUAL_NODE", "http://127.0.0.1:26657"),
                    help="node API URL (env MUTUAL_NODE)")
    sp.add_argument("--timeout", type=seconds, default=30.0)
