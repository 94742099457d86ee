"""The task config reaches Isaac Lab's env config: weights, removed and added terms, events, escape hatch."""

from __future__ import annotations

import pytest

from tasks.isaaclab_env import build_env_cfg


@pytest.fixture(scope="module")
def h1_env_cfg(tmp_path_factory):
    import os

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rlforge_testing import CONF
    from runner.setup import register

    os.environ.setdefault("RLFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "task.num_envs=16",
                "task.rewards.feet_air_time.weight=0.5",
                "task.rewards.feet_air_time.params.threshold=0.3",
                "~task.rewards.feet_slide",
                "+reward@task.rewards.stand_still=term",
                "task.rewards.stand_still.func=isaaclab_tasks.core.velocity.mdp:stand_still_joint_deviation_l1",
                "task.rewards.stand_still.weight=-0.1",
                "+task.rewards.stand_still.params.command_name=base_velocity",
                "task.events.push_robot.enabled=false",
                "task.commands.ranges.lin_vel_x=[-0.5,1.5]",
                "task.observation_noise=false",
                "task.decimation=2",
                "+task.env_overrides.scene.env_spacing=3.5",
            ],
        )
    GlobalHydra.instance().clear()
    return build_env_cfg(cfg.task, "cpu", 7)


def test_scalars_reach_the_env(h1_env_cfg):
    assert h1_env_cfg.scene.num_envs == 16
    assert h1_env_cfg.seed == 7 and h1_env_cfg.sim.device == "cpu"
    assert h1_env_cfg.decimation == 2 and h1_env_cfg.sim.render_interval == 2
    assert h1_env_cfg.scene.height_scanner.update_period == pytest.approx(2 * 0.005)
    assert h1_env_cfg.commands.base_velocity.ranges.lin_vel_x == (-0.5, 1.5)
    assert h1_env_cfg.observations.policy.enable_corruption is False
    assert h1_env_cfg.scene.env_spacing == 3.5
    assert h1_env_cfg.scene.robot.spawn.usd_path.endswith(".usda")


def test_reward_terms_are_exactly_the_configured_ones(h1_env_cfg):
    rewards = h1_env_cfg.rewards
    assert rewards.feet_air_time.weight == 0.5
    assert rewards.feet_air_time.params["threshold"] == 0.3
    # The task's own parameters that the YAML does not mention are kept.
    assert rewards.feet_air_time.params["command_name"] == "base_velocity"
    assert rewards.feet_slide is None
    assert rewards.stand_still.func.__name__ == "stand_still_joint_deviation_l1"
    assert rewards.stand_still.weight == -0.1
    assert rewards.termination_penalty.weight == -200.0


def test_disabled_event_is_removed(h1_env_cfg):
    assert h1_env_cfg.events.push_robot is None
    assert h1_env_cfg.events.reset_base is not None


def test_unknown_reward_without_function_names_the_valid_ones():
    from omegaconf import OmegaConf

    from tasks.isaaclab_env import apply_rewards

    class Rewards:
        pass

    class Term:
        weight, params = 1.0, {}

    rewards = Rewards()
    rewards.track = Term()
    env_cfg = type("EnvCfg", (), {"rewards": rewards})()
    with pytest.raises(ValueError, match=r"not one of this environment's \(track\)"):
        apply_rewards(env_cfg, OmegaConf.to_container(OmegaConf.create({"nope": {"weight": 1.0}})))


def test_bad_escape_hatch_path_fails():
    from tasks.isaaclab_env import set_dotted

    target = type("Cfg", (), {"scene": type("Scene", (), {"env_spacing": 2.5})()})()
    set_dotted(target, "scene.env_spacing", 3.0)
    assert target.scene.env_spacing == 3.0
    with pytest.raises(ValueError, match="scene.spacing' does not exist"):
        set_dotted(target, "scene.spacing", 1.0)
