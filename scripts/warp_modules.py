"""List or check the Warp modules a task's training loads (see ``--help``)."""

import sys

from runner.warp_modules import main

if __name__ == "__main__":
    sys.exit(main())
