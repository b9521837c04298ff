"""The auditors' subcommands of ``mutual``: export, audit, verify-share.

``mutual audit``'s glue is here too: open the source, run the replay under SIGTERM and
Ctrl-C, print the report (text or JSON) and choose the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from audit.progress import Progress
from audit.replay import Auditor
from audit.report import AuditFailure, AuditInterrupted, AuditReport, render_report
from audit.sources import DataSource, MemorySource, NodeSource, Source, SourceError, find_db_dir
from chain.genesis import Genesis, GenesisError
from client.cliutil import EXIT_FAIL, EXIT_OK, EXIT_USAGE, CliError, print_json, seconds

# =====================================================================================
# the command
# =====================================================================================

def _emit_json(doc: dict[str, Any], out: Any) -> None:
    out.write(json.dumps(doc, sort_keys=False) + "\n")
    out.flush()


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise AuditInterrupted(signum)


@contextlib.contextmanager
def _sigterm_interrupts() -> Any:
    """While the audit runs, SIGTERM stops it like Ctrl-C does (so the copy of a database
    is deleted and the report still printed). Only the main thread can set a handler;
    the previous one is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _open_source(args: Any) -> Source:
    if getattr(args, "node", None):
        from client import Client

        return NodeSource(Client(args.node, timeout=args.timeout))
    from audit.archive import ArchiveError, is_archive, read_archive

    path = Path(args.data)
    if is_archive(path):
        try:
            records = read_archive(path)
        except ArchiveError as exc:
            raise SourceError(str(exc)) from None
        source = MemorySource([b for _, b, _ in records], {h: c for h, _, c in records})
        source.label = str(args.data)
        return source
    if not path.exists():
        raise SourceError(f"--data {args.data}: no such file or directory")
    if not path.is_dir():
        raise SourceError(f"--data must be a node's data directory or an archive made by "
                          f"`mutual export`; {args.data} is neither (a file, but not an "
                          "archive)")
    try:
        db = find_db_dir(path)
    except SourceError as exc:
        raise SourceError(f"--data must be a node's data directory or an archive made by "
                          f"`mutual export`; {args.data} is neither: {exc}") from None
    return DataSource(db)


def _close_source(source: Source | Auditor) -> None:
    """Close a source or an auditor (deleting a ``--data`` copy or a ``--work-dir``
    replay) even through a second Ctrl-C."""
    while True:
        try:
            source.close()
            return
        except KeyboardInterrupt:
            continue


def run_audit(args: Any, out: Any = None, err: Any = None) -> int:
    """``mutual audit``: exit 0 when everything holds, 1 on a finding, 2 on bad input,
    128 + the signal number when SIGINT or SIGTERM stopped it."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        genesis = Genesis.load(args.genesis)
    except GenesisError as exc:
        err.write(f"mutual audit: error: {exc}\n")
        return EXIT_USAGE
    if not getattr(args, "node", None) and not getattr(args, "data", None):
        err.write("mutual audit: error: give --node URL or --data DIR\n")
        return EXIT_USAGE
    source: Source | None = None
    auditor: Auditor | None = None
    report: AuditReport | None = None
    signum: int | None = None
    with _sigterm_interrupts():
        try:
            try:
                source = _open_source(args)
            except SourceError as exc:
                err.write(f"mutual audit: error: {exc}\n")
                return EXIT_FAIL if getattr(args, "node", None) else EXIT_USAGE
            progress = Progress(0, stream=err, enabled=not args.json)
            try:
                auditor = Auditor(genesis, source, workers=None, progress=progress,
                                  work_dir=getattr(args, "work_dir", None))
            except SourceError as exc:
                err.write(f"mutual audit: error: {exc}\n")
                return EXIT_USAGE
            report = auditor.run()
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, AuditInterrupted) else signal.SIGINT
            report = exc.report if isinstance(exc, AuditInterrupted) else None
        finally:
            if auditor is not None:
                _close_source(auditor)
            if source is not None:
                _close_source(source)
    if signum is not None:
        name = signal.Signals(signum).name
        if report is None and auditor is not None:  # e.g. a second Ctrl-C while stopping
            report = auditor.interrupted_report(signum)
        if report is None:  # stopped while the source was being opened
            label = str(getattr(args, "node", None) or getattr(args, "data", ""))
            report = AuditReport.not_started(genesis.chain_id, label, AuditFailure(
                1, f"the audit was interrupted by {name} before the replay started"))
            err.write(f"mutual audit: interrupted by {name} before the replay started\n")
        else:
            assert report.first_error is not None
            err.write(f"mutual audit: interrupted by {name} at height "
                      f"{report.first_error.height} (blocks up to {report.blocks} were "
                      "checked)\n")
        err.flush()
    assert report is not None
    if not args.json:
        out.write(render_report(report) + "\n")
    _emit_json(report.to_json(), out)
    if signum is not None:
        return 128 + signum
    return EXIT_OK if report.ok else EXIT_FAIL



def cmd_export(args: argparse.Namespace) -> int:
    from audit.archive import ArchiveError, from_client, from_store, write_archive

    out = Path(args.out)
    if out.exists() and not args.force:
        raise CliError(f"{out} already exists (use --force to overwrite)")
    try:
        if args.node:
            from client import Client

            count = write_archive(out, from_client(Client(args.node, timeout=args.timeout)))
        else:
            from audit.sources import DataSource, SourceError

            try:
                source = DataSource(args.data)
            except SourceError as exc:
                raise CliError(str(exc)) from None
            try:
                count = write_archive(out, from_store(source.store))
            finally:
                source.close()
    except ArchiveError as exc:
        raise CliError(str(exc), EXIT_FAIL) from None
    print_json({"file": str(out), "blocks": count})
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    return run_audit(args)


def cmd_verify_share(args: argparse.Namespace) -> int:
    from audit.verify_share import main as verify_main

    return verify_main(args)


def register(sub: Any) -> None:
    """Add export, audit and verify-share to the ``mutual`` parser's subcommands."""
    ex = sub.add_parser("export", help="write every block and certificate to an archive file")
    exsrc = ex.add_mutually_exclusive_group(required=True)
    exsrc.add_argument("--node", help="node API URL")
    exsrc.add_argument("--data", help="a stopped node's home or data directory (read-only)")
    ex.add_argument("--out", required=True, help="the archive file to write")
    ex.add_argument("--force", action="store_true")
    ex.add_argument("--timeout", type=seconds, default=30.0)
    ex.set_defaults(func=cmd_export)

    a = sub.add_parser("audit", help="replay and verify a whole chain from genesis")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--node", help="node API URL")
    src.add_argument("--data", help="a node's data directory (read-only) or an archive file "
                                    "from `mutual export`")
    a.add_argument("--genesis", required=True, help="the genesis file YOU trust")
    a.add_argument("--json", action="store_true", help="only the JSON report")
    a.add_argument("--timeout", type=seconds, default=30.0)
    a.add_argument("--work-dir", help="replay on disk, in a LevelDB database in a new "
                                      "directory here (removed at the end), instead of in "
                                      "memory: for chains whose blocks do not fit in memory")
    a.set_defaults(func=cmd_audit)

    v = sub.add_parser("verify-share", help="check one member's share without trusting a node")
    v.add_argument("--node", required=True)
    v.add_argument("--genesis", required=True)
    v.add_argument("--member", required=True)
    v.add_argument("--period", required=True, type=int)
    v.add_argument("--timeout", type=seconds, default=30.0)
    v.set_defaults(func=cmd_verify_share)
