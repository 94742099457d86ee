"""Start a run again with the exact config of an earlier one, from this checkout (see ``--help``)."""

import sys
from pathlib import Path

from runner.relaunch import main

if __name__ == "__main__":
    sys.exit(main(project=Path(__file__).resolve().parent.parent))
