"""The auditors' and members' door: check a chain from its genesis, trusting no node.

* ``audit.replay``: ``mutual audit``, the replay of every block from the auditor's own
  genesis (``audit``, ``Auditor``), with its parts: ``sources`` (a node's API, a stopped
  node's database, an archive file), ``signatures`` (transactions and certificates,
  in a process pool), ``rules`` and ``jury_model`` (an independent model of the pooling
  rules), ``compare`` (the replay against what the source claims) and ``report``;
* ``audit.verify_share``: ``mutual verify-share``, one member's share from Merkle proofs
  and a commit certificate;
* ``audit.archive``: ``mutual export``'s archive file; ``audit.cli``: the subcommands.

It reuses ``node.executor`` (the one definition of a valid block) and ``node.store`` (the
stored format of a node's data); never the node process itself (docs/architecture.md).
"""

from audit.replay import REPLAY_ROOTS, Auditor, audit
from audit.report import ABSENT, AuditFailure, AuditInterrupted, AuditReport, render_report
from audit.sources import DataSource, MemorySource, NodeSource, Source, SourceError, find_db_dir

__all__ = ["ABSENT", "REPLAY_ROOTS", "AuditFailure", "AuditInterrupted", "AuditReport",
           "Auditor", "DataSource", "MemorySource", "NodeSource", "Source", "SourceError",
           "audit", "find_db_dir", "render_report"]
