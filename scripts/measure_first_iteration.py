"""Time to first iteration with an empty Warp kernel cache, then with it kept (see ``--help``)."""

import sys

from bench.first_iteration import main

if __name__ == "__main__":
    sys.exit(main())
