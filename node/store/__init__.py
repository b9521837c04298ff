"""The node's storage: the one place that knows LevelDB (plyvel).

``kvstore`` (the key-value backends), ``blockstore`` (blocks, certificates, receipts and
state in one atomic batch), ``wal`` (the consensus write-ahead log), ``signer_file`` (the
double-sign guard's durable state) and ``leveldb_env`` (the process settings LevelDB is
opened under). Every whole-file write goes through ``chain.durable.atomic_write``.
"""
