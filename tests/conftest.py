"""Shared fixtures: config composition with Hydra's compose API, and quick toy-run overrides."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from rlforge_testing import CONF


@pytest.fixture
def compose_cfg() -> Iterator:
    """compose(overrides) -> the composed train config, with Hydra's global state cleared after."""
    from runner.setup import register

    register()

    def _compose(overrides: list[str] | None = None, return_hydra_config: bool = False) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="train", overrides=overrides or [], return_hydra_config=return_hydra_config)

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def toy_args(tmp_path: Path) -> list[str]:
    """Overrides for a fast toy run whose outputs land in ``tmp_path``."""
    return ["task=toy", f"output_root={tmp_path / 'outputs'}", "task.num_envs=16", "algo.num_steps_per_env=8"]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``-n N --dist loadgroup`` (``make test``), every Slurm test goes to one worker, which starts the one
    cluster they share; the other workers take the rest meanwhile (the Slurm tests spend much of their time waiting
    on the scheduler)."""
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))
