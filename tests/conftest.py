"""Shared fixtures: config composition with Hydra's compose API, and quick toy-run overrides."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from rlforge_testing import CONF, SLURM_TESTS


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


# The Slurm tests share one cluster, started by the first of them on its worker. A second worker would start a second
# cluster whose job ids are the first one's (both count from 1), so a test that finds a job's processes by its id could
# signal the other cluster's. Under `make test` (`-n N --dist loadgroup`) SLURM_TESTS is one work unit, on one worker.


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A Slurm test outside SLURM_TESTS could run on another worker, which would start a cluster of its own."""
    strays = [item.nodeid for item in items if item.get_closest_marker("slurm") and not _under_slurm_tests(item.nodeid)]
    if strays:
        raise pytest.UsageError(
            f"Slurm-marked tests must live under {SLURM_TESTS} (one worker, one cluster): move {', '.join(strays)}"
        )


def _under_slurm_tests(nodeid: str) -> bool:
    return nodeid.startswith(SLURM_TESTS)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` with SLURM_TESTS as one group. xdist's own grouping (the ``xdist_group`` mark) appends the
    group to ``item._nodeid``, which pytest 9.2 no longer reads (it keeps ``item._id``): marked tests went to every
    worker."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class SlurmTestsTogether(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return SLURM_TESTS if _under_slurm_tests(nodeid) else super()._split_scope(nodeid)

    return SlurmTestsTogether(config, log)
