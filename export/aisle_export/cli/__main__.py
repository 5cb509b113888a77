"""``python -m aisle_export.cli``: the ``aisle`` command, for environments without its script on PATH."""

import sys

from aisle_export.cli import main

sys.exit(main())
