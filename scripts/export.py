"""Export a checkpoint's policy as ONNX and TorchScript, checked against the torch policy (see ``--help``)."""

import sys

from runner.export import main

if __name__ == "__main__":
    sys.exit(main())
