"""Benchmark our train.py against Isaac Lab's own rsl-rl trainer (see ``--help``)."""

import sys

from bench.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
