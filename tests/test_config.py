"""Composition: every group combination composes; typos and wrong types fail before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from rlforge_testing import CONF, ROOT, run_train


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("task", options("task"))
@pytest.mark.parametrize("algo", options("algo"))
@pytest.mark.parametrize("launcher", options("launcher"))
@pytest.mark.parametrize("logger", options("logger"))
def test_every_group_combination_composes(compose_cfg, task, algo, launcher, logger):
    cfg = compose_cfg(
        [f"task={task}", f"algo={algo}", f"launcher={launcher}", f"logger={logger}"], return_hydra_config=True
    )
    assert cfg.task.name == task
    assert cfg.launcher.name == launcher
    assert cfg.logger.kind == logger
    assert cfg.algo.num_steps_per_env > 0
    # Every reward term of a task has a weight (MISSING would fail here).
    assert all(isinstance(term.weight, float) for term in cfg.task.rewards.values())


@pytest.mark.parametrize("preset", options("preset"))
def test_every_preset_composes(compose_cfg, preset):
    cfg = compose_cfg([f"preset={preset}"])
    assert cfg.task.name in options("task")


def test_defaults_are_h1_rough_ppo_local_tensorboard(compose_cfg):
    cfg = compose_cfg()
    assert (cfg.task.name, cfg.launcher.name, cfg.logger.kind) == ("h1_rough", "local", "tensorboard")
    assert cfg.task.physics == "newton_mjwarp"
    algo = cfg.algo
    assert list(algo.actor.hidden_dims) == [512, 256, 128] and algo.actor.activation == "elu"
    assert (algo.num_steps_per_env, algo.algorithm.learning_rate, algo.algorithm.desired_kl) == (24, 1e-3, 0.01)
    assert (algo.algorithm.num_learning_epochs, algo.algorithm.num_mini_batches) == (5, 4)


def test_reward_weight_override_and_removal(compose_cfg):
    cfg = compose_cfg(["task.rewards.feet_air_time.weight=0.5", "~task.rewards.feet_slide"])
    assert cfg.task.rewards.feet_air_time.weight == 0.5
    assert "feet_slide" not in cfg.task.rewards


def test_new_reward_term_from_function_path(compose_cfg):
    cfg = compose_cfg(
        [
            "+reward@task.rewards.stand_still=term",
            "task.rewards.stand_still.func=isaaclab_tasks.core.velocity.mdp:stand_still_joint_deviation_l1",
            "task.rewards.stand_still.weight=-0.1",
        ]
    )
    assert cfg.task.rewards.stand_still.func.endswith("stand_still_joint_deviation_l1")
    assert cfg.task.rewards.stand_still.weight == -0.1


def test_misspelt_reward_fails_at_composition(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="feet_air_tme"):
        compose_cfg(["task.rewards.feet_air_tme.weight=0.5"])


def test_wrong_type_fails_at_composition(compose_cfg):
    with pytest.raises((ConfigCompositionException, ValidationError), match="num_envs"):
        compose_cfg(["task.num_envs=many"])


def test_unknown_choice_names_the_valid_ones(compose_cfg):
    with pytest.raises(ConfigCompositionException) as error:
        compose_cfg(["task.physics=phsyx"])
    assert "newton_mjwarp, physx" in str(error.value.__cause__)


def test_unknown_top_level_key_fails(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="sede"):
        compose_cfg(["sede=3"])


def test_cli_typo_names_the_valid_terms_without_importing_the_simulator(tmp_path):
    result = run_train(["task.rewards.feet_air_tme.weight=0.5"], cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "feet_air_tme" in result.stderr
    # The hint lists the task's real terms, so the user sees the right spelling.
    assert "feet_air_time" in result.stderr and "track_lin_vel_xy_exp" in result.stderr
    assert not (tmp_path / "outputs").exists(), "a failed composition must not leave a run directory"


def test_cli_misspelt_event_names_the_valid_events(tmp_path):
    result = run_train(["task.events.push_robt.enabled=false"], cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "push_robot" in result.stderr


def test_cli_wrong_type_names_the_field(tmp_path):
    result = run_train(["task.num_envs=lots"], cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "num_envs" in result.stderr and "lots" in result.stderr


def test_composition_does_not_import_isaaclab():
    code = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "from runner.setup import register; register()\n"
        f"with initialize_config_dir(config_dir={str(CONF)!r}, version_base='1.3'):\n"
        "    cfg = compose(config_name='train', overrides=['launcher=hyperpod'])\n"
        "heavy = [m for m in ('isaaclab', 'torch', 'warp', 'submitit', 'boto3', 'sagemaker') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"composing imported heavy modules: {result.stdout}"


def test_cfg_job_prints_config_and_runs_nothing(tmp_path):
    result = run_train(["--cfg", "job", "task.num_envs=128"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "num_envs: 128" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_resume_without_earlier_run_says_what_to_do(tmp_path):
    result = run_train(["task=toy", "resume=true"], cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "no earlier run" in result.stderr


def test_resume_of_missing_directory_fails(tmp_path):
    result = run_train(["task=toy", f"resume={tmp_path / 'nope'}"], cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "no run directory there" in result.stderr


def test_task_registry_refuses_duplicates_and_lists_kinds():
    from tasks import list_kinds, register_kind

    assert {"isaaclab", "toy"} <= set(list_kinds())
    with pytest.raises(ValueError, match="already registered"):
        register_kind("toy", "tasks.toy:build")


def test_unknown_task_kind_names_registered_ones():
    from tasks.registry import resolve_builder

    with pytest.raises(ValueError, match="registered kinds: .*toy"):
        resolve_builder("nope")


def test_hint_handles_unknown_task_gracefully():
    from runner.errors import hint_for

    assert hint_for(["task=does_not_exist", "task.rewards.x.weight=1"]) is None
    assert "valid" in (hint_for(["task=toy", "task.rewards.trak.weight=1"]) or "").lower()


def test_readme_quick_start_commands_exist():
    makefile = (ROOT / "Makefile").read_text()
    assert "\ntrain:" in makefile and "\ntest:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make train" in readme and "make test" in readme
    assert Path(ROOT / "scripts" / "setup.sh").stat().st_mode & 0o111


SCHEMAS = {"task": "TaskConfig", "algo": "AlgoConfig", "logger": "LoggerConfig", "reward": "RewardTermConfig"}


def restated_defaults(node, schema, path=""):
    """Keys of a YAML option whose value equals the schema's default there (dict-typed fields hold entries)."""
    from omegaconf import DictConfig, OmegaConf

    found = []
    for key in node:
        if (
            key == "defaults"
            or key not in schema
            or OmegaConf.is_missing(schema, key)
            or OmegaConf.is_missing(node, key)
        ):
            continue
        value = node[key]
        default = schema[key]
        if isinstance(value, DictConfig) and isinstance(default, DictConfig) and len(default):
            found += restated_defaults(value, default, f"{path}{key}.")
        elif value == default and not (isinstance(value, DictConfig) and not len(value)):
            found.append(f"{path}{key}")
    return found


@pytest.mark.parametrize("group", sorted(SCHEMAS))
def test_schemas_own_the_defaults_and_options_state_only_what_they_change(group):
    # conf/README.md: a YAML option never restates a schema default, so a default has one place to change.
    from omegaconf import OmegaConf

    from core import config

    schema = OmegaConf.structured(getattr(config, SCHEMAS[group]))
    for path in sorted((CONF / group).glob("*.yaml")):
        node = OmegaConf.load(path)
        assert restated_defaults(node, schema) == [], f"{path.relative_to(CONF)} restates schema defaults"


@pytest.mark.parametrize(
    "override",
    [
        "task.frontend=warp",
        "task.terrain.collision=heightfield",
        "task.terrain.midphase=tiled",
        "task.device_resets=true",
    ],
)
def test_the_toy_refuses_isaaclab_only_settings_instead_of_ignoring_them(compose_cfg, override):
    from tasks.registry import build_env

    cfg = compose_cfg(["task=toy", override])
    key = override.split("=")[0]
    with pytest.raises(ValueError, match=rf"{key}=.* applies to Isaac Lab environments"):
        build_env(cfg.task, "cpu", 0)
    handle = build_env(compose_cfg(["task=toy"]).task, "cpu", 0)  # the defaults build
    assert handle.env.num_envs == cfg.task.num_envs
