"""The validator process: storage, mempool, executor, consensus driver, API, CLI."""
