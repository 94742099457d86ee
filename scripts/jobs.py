"""Every run and job under an output root: list, status, logs, stop and cost (see ``--help``)."""

import sys

from launchers.jobs import main

if __name__ == "__main__":
    sys.exit(main())
