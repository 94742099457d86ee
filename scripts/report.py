"""Account for a run or a sweep: table, PNG and HTML page (see ``--help``)."""

import sys

from reports.report import main

if __name__ == "__main__":
    sys.exit(main())
