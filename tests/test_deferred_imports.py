"""wandb, which rsl-rl imports as it is imported, is only imported by a run that reads from it."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_importing_the_learner_leaves_wandb_unimported_until_an_attribute_is_read():
    out = run_python(
        """
        import importlib.metadata, inspect, sys
        import algos.ppo  # imports rsl-rl, whose wandb writer imports wandb
        stand_in = sys.modules["wandb"]
        assert "wandb.sdk" not in sys.modules, "wandb's code ran at import"
        inspect.getmodule(inspect.getmodule)  # scans sys.modules, reading each module's __file__
        assert "wandb.sdk" not in sys.modules, "a scan of sys.modules imported wandb"
        assert stand_in.__version__ == importlib.metadata.version("wandb")
        real = sys.modules["wandb"]
        assert real is not stand_in and "wandb.sdk" in sys.modules
        real.rebound_later = 7  # as wandb.init rebinds wandb.config
        assert stand_in.rebound_later == 7
        import wandb
        assert wandb is real
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_a_submodule_imported_first_imports_wandb_once():
    out = run_python(
        """
        import sys
        import algos
        import wandb.sdk
        assert sys.modules["wandb"].sdk is sys.modules["wandb.sdk"]
        print("ok")
        """
    )
    assert out.strip() == "ok"
