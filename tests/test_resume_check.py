"""The resume check's comparison of a run's recorded config with the one composed now (core.resume)."""

from __future__ import annotations

import copy

import pytest
from omegaconf import OmegaConf

from core import resume


@pytest.fixture
def composed(compose_cfg):
    cfg = compose_cfg(["task=h1_rough"])
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def test_a_setting_added_since_the_run_at_its_default_is_no_change(composed):
    recorded = copy.deepcopy(composed)
    del recorded["task"]["frontend"]  # a run recorded before the setting existed
    found = resume.check_resume(recorded, composed, accept=False, run_dir="run")
    assert found == {"learned": [], "operational": []}


def test_a_setting_added_since_the_run_away_from_its_default_is_refused(composed):
    recorded = copy.deepcopy(composed)
    del recorded["task"]["frontend"]
    now = copy.deepcopy(composed)
    now["task"]["frontend"] = "warp"
    with pytest.raises(resume.ConfigChanged, match=r"task\.frontend: \(absent\) -> 'warp'"):
        resume.check_resume(recorded, now, accept=False, run_dir="run")


def test_a_setting_removed_since_the_run_is_still_a_change(composed):
    now = copy.deepcopy(composed)
    del now["task"]["frontend"]
    with pytest.raises(resume.ConfigChanged, match=r"task\.frontend: 'torch' -> \(absent\)"):
        resume.check_resume(composed, now, accept=False, run_dir="run")


def test_schema_defaults_are_read_through_the_config_groups():
    assert resume.schema_default("task.frontend") == "torch"
    assert resume.schema_default("algo.speed.graph_update") is True
    assert resume.schema_default("seed") == 42
    assert resume.schema_default("task.no_such_setting") is resume.MISSING_DEFAULT
    assert resume.schema_default("algo") is resume.MISSING_DEFAULT
