"""The ``mutual`` command: one entry that gathers each door's subcommands."""
