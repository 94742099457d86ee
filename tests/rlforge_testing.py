"""Helpers shared by the test tiers: paths, and running train.py or a script as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
REFERENCE_H1 = ROOT.parent / "shared" / "reference" / "unitree_h1"


def run_train(
    args: list[str], cwd: Path, timeout: float = 600, env: dict | None = None, script: str = "train.py"
) -> subprocess.CompletedProcess:
    """Run ``train.py`` (or a script) with this interpreter, as a user would, from ``cwd``.

    ``env`` adds variables; a value of None removes that variable.
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env = {key: value for key, value in full_env.items() if value is not None}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
