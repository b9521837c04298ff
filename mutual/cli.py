"""The ``mutual`` command line: one command, each door's own subcommands.

* operators (``node/cli.py``): keys, genesis, init, start, recover-wal, node rotate-key;
* validator operators' governance (``client/gov_cli.py``): gov propose|vote|list|show;
* clients and members (``client/cli.py``): status, tx, query;
* auditors (``audit/cli.py``): export, audit, verify-share.

Every error is one readable line on stderr and a non-zero exit code (2 for usage and
input errors, 1 for a failed check or an unreachable node); never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from audit import cli as audit_cli
from client import cli as client_cli
from client import gov_cli
from client.cliutil import EXIT_FAIL, EXIT_USAGE, CliError
from node import cli as node_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mutual", description="mutual-ledger node and client")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for door in (node_cli, gov_cli, client_cli, audit_cli):
        door.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from chain.genesis import GenesisError
    from chain.keyfile import KeyFileError
    from client import ClientError
    from node.config import ConfigError
    from node.store.wal import WALError

    try:
        return args.func(args)
    except CliError as exc:
        print(f"mutual: error: {exc}", file=sys.stderr)
        return exc.code
    except (ConfigError, KeyFileError, GenesisError) as exc:
        print(f"mutual: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ClientError, WALError) as exc:
        print(f"mutual: error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except RecursionError:
        # a JSON argument or file nested deeper than the parser can recurse
        print("mutual: error: input is nested too deeply to read", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"mutual: error: {exc.strerror or exc}: {getattr(exc, 'filename', '')}",
              file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
