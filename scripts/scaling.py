"""Multi-GPU scaling: throughput and efficiency with 1..N training processes (see ``--help``)."""

import sys

from bench.scaling import main

if __name__ == "__main__":
    sys.exit(main())
