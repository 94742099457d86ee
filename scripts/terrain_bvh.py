"""What the terrain's BVH query costs per constructor and leaf size (see ``--help``)."""

import sys

from bench.terrain_bvh import main

if __name__ == "__main__":
    sys.exit(main())
