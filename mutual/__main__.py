"""``python -m mutual`` is the ``mutual`` command."""

import sys

from mutual.cli import main

sys.exit(main())
