"""The train config composed in this process from overrides, as ``train.py`` would compose it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from core.rundir import project_root

CONF_DIR = project_root() / "conf"


def compose_config(overrides: list[str], conf_dir: Path = CONF_DIR) -> DictConfig:
    """``conf/train.yaml`` (of ``conf_dir``) with ``overrides``, through Hydra's compose API.

    Hydra's global state is cleared before and after, so this can be called any number of times."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from runner.setup import register

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return compose(config_name="train", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
