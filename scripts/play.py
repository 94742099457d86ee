"""Evaluate a checkpoint headless, optionally recording a clip of one robot (see ``--help``)."""

import sys

from runner.play import main

if __name__ == "__main__":
    sys.exit(main())
