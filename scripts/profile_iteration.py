"""Where one training iteration spends its time (see ``--help``)."""

import sys

from bench.iteration_profile import main

if __name__ == "__main__":
    sys.exit(main())
