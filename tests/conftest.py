"""Shared fixtures: config composition with Hydra's compose API, and running train.py as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
REFERENCE_H1 = ROOT.parent / "shared" / "reference" / "unitree_h1"

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def compose_cfg() -> Iterator:
    """compose(overrides) -> the composed train config, with Hydra's global state cleared after."""
    from core.setup import register

    register()

    def _compose(overrides: list[str] | None = None, return_hydra_config: bool = False) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="train", overrides=overrides or [], return_hydra_config=return_hydra_config)

    yield _compose
    GlobalHydra.instance().clear()


def run_train(args: list[str], cwd: Path, timeout: float = 600, env: dict | None = None,
              script: str = "train.py") -> subprocess.CompletedProcess:
    """Run ``train.py`` (or a script) with this interpreter, as a user would, from ``cwd``."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def toy_args(tmp_path: Path) -> list[str]:
    """Overrides for a fast toy run whose outputs land in ``tmp_path``."""
    return ["task=toy", f"output_root={tmp_path / 'outputs'}", "task.num_envs=16", "algo.num_steps_per_env=8"]
