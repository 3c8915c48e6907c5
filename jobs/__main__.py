"""``python -m jobs`` runs the ``ferry`` command line."""

from __future__ import annotations

import sys

from jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
