"""Evaluate a checkpoint headless (see ``--help``)."""

import sys

from runner.play import main

if __name__ == "__main__":
    sys.exit(main())
