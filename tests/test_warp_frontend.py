"""Isaac Lab's Warp frontend (``task.frontend=warp``): the project's Warp terms equal the PyTorch terms they replace on
the same states, a task config adapts before the simulator starts or is refused saying what to change, and H1 flat
and rough build, step and train with it on the CPU (slow)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlforge_testing import H1_CPU_RUN, only_run, run_train

SMALL_H1 = ("task.num_envs=2", "task.terrain.num_rows=2", "task.terrain.num_cols=2", "task.kernels.precompile=false")
WARP_ORIGINS = ("isaaclab_experimental.", "isaaclab_tasks_experimental.", "tasks.warp_terms")


def test_frontend_is_a_typed_task_field_defaulting_to_torch(compose_cfg):
    assert compose_cfg().task.frontend == "torch"
    assert compose_cfg(["task=h1_flat", "task.frontend=warp"]).task.frontend == "warp"
    with pytest.raises(Exception, match="frontend"):
        compose_cfg(["task.frontend=jax"])


# ------------------------------------------------------------------------------- height scan, term level
def ray_caster(num_envs: int, num_rays: int, seed: int):
    """A ray caster's data as Isaac Lab's sensors hold it (Warp vec3 arrays behind ProxyArray), some rays missed."""
    import warp as wp
    from isaaclab.utils.warp import ProxyArray

    data = SimpleNamespace()
    sensor = SimpleNamespace(num_rays=num_rays, data=data)

    def fill(seed: int) -> None:
        rng = np.random.default_rng(seed)
        pos = rng.normal(size=(num_envs, 3)).astype(np.float32)
        pos[:, 2] += 20.0
        hits = rng.normal(size=(num_envs, num_rays, 3)).astype(np.float32)
        hits[rng.random((num_envs, num_rays)) < 0.1] = np.inf  # missed rays, as the sensor writes them
        if not hasattr(data, "pos_w"):
            data.pos_w = ProxyArray(wp.array(pos, dtype=wp.vec3f, device="cpu"))
            data.ray_hits_w = ProxyArray(wp.array(hits, dtype=wp.vec3f, device="cpu"))
        else:  # in place, as the sensor refreshes its buffers
            data.pos_w.torch.copy_(torch.from_numpy(pos))
            data.ray_hits_w.torch.copy_(torch.from_numpy(hits))

    fill(seed)
    return sensor, fill


@pytest.mark.parametrize("offset", [0.5, 0.0, -1.25])
def test_height_scan_equals_the_torch_term_on_the_same_sensor_state(offset):
    import warp as wp
    from isaaclab.envs.mdp.observations import height_scan
    from isaaclab.managers import ObservationTermCfg, SceneEntityCfg

    from tasks.warp_terms import HeightScan

    num_envs, num_rays = 5, 187
    sensor, refill = ray_caster(num_envs, num_rays, seed=1)
    env = SimpleNamespace(scene=SimpleNamespace(sensors={"scanner": sensor}), num_envs=num_envs, device="cpu")
    cfg = ObservationTermCfg(func=HeightScan, params={"sensor_cfg": SceneEntityCfg("scanner"), "offset": offset})
    term = HeightScan(cfg, env)
    assert term._descriptor.out_dim == num_rays  # the width the Warp observation manager allocates
    out = wp.zeros((num_envs, num_rays), dtype=wp.float32, device="cpu")
    for seed in (1, 2):  # the second state is written into the same buffers
        refill(seed)
        term(env, out, **cfg.params)
        expected = height_scan(env, cfg.params["sensor_cfg"], offset)
        assert expected.shape == (num_envs, num_rays)
        assert torch.equal(wp.to_torch(out), expected), f"state {seed}: Warp and PyTorch height scans differ"
        assert torch.isneginf(expected).any() and torch.isfinite(expected).any()


def test_height_scan_keeps_only_the_observation_manager_out_of_graphs():
    """The ray caster refreshes on its ``data`` read (host code and its own graph), which a recorded observation
    graph would not replay; the term says so, and the frontend then caps that one manager."""
    from isaaclab_experimental.utils.manager_call_switch import ManagerCallMode, ManagerCallSwitch
    from isaaclab_experimental.utils.warp import is_warp_capturable

    from tasks.warp_terms import HeightScan

    switch = ManagerCallSwitch({"default": int(ManagerCallMode.WARP_CAPTURED)})
    switch.register_manager_capturability("ObservationManager", is_warp_capturable(HeightScan))
    assert switch.get_mode_for_manager("ObservationManager") == ManagerCallMode.WARP_NOT_CAPTURED
    assert switch.get_mode_for_manager("RewardManager") == ManagerCallMode.WARP_CAPTURED


# --------------------------------------------------------------------------------------- config level
@pytest.fixture
def warp_env_cfg(compose_cfg, tmp_path, monkeypatch):
    """build_env_cfg of a task with task.frontend=warp: Isaac Lab's config adapted, no simulator started."""
    from tasks.isaaclab_env import build_env_cfg

    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path / "cache"))

    def build(task: str, *overrides: str, device: str = "cpu"):
        cfg = compose_cfg([f"task={task}", "task.frontend=warp", *SMALL_H1, *overrides])
        return build_env_cfg(cfg.task, device, 3)

    return build


def managed_terms(env_cfg) -> dict[str, object]:
    """``group.term`` -> the callable of every term the Warp managers run."""
    from isaaclab_experimental.envs.frontend import WarpFrontend

    found = {}
    for path, term in WarpFrontend._walk_terms(env_cfg):
        if path[0] in WarpFrontend.WARP_MANAGED_GROUPS:
            found[".".join(path)] = term.func if getattr(term, "func", None) is not None else term.class_type
    return found


def test_rough_config_runs_every_term_as_warp_with_the_projects_height_scan(warp_env_cfg):
    from tasks.warp_terms import HeightScan

    env_cfg = warp_env_cfg("h1_rough")
    terms = managed_terms(env_cfg)
    assert len(terms) > 20
    not_warp = {path: f.__module__ for path, f in terms.items() if not f.__module__.startswith(WARP_ORIGINS)}
    assert not not_warp, not_warp
    assert terms["observations.policy.height_scan"] is HeightScan
    # The curriculum stays with the PyTorch manager, the term unchanged; graphs are off on the CPU.
    assert env_cfg.curriculum.terrain_levels.func.__module__.startswith("isaaclab_tasks.")
    assert env_cfg.manager_call_config == {"default": 1}


def test_flat_config_is_isaac_labs_warp_frontend_alone(warp_env_cfg):
    terms = managed_terms(warp_env_cfg("h1_flat"))
    assert all(f.__module__.startswith(WARP_ORIGINS[:2]) for f in terms.values()), terms
    assert "observations.policy.height_scan" not in terms


def test_warp_on_a_gpu_leaves_the_graph_setting_to_isaac_lab(warp_env_cfg):
    assert getattr(warp_env_cfg("h1_flat", device="cuda:0"), "manager_call_config", None) is None


def test_warp_frontend_refuses_physx_saying_what_to_change(warp_env_cfg):
    with pytest.raises(ValueError, match=r"runs on Newton only.*task.physics=newton_mjwarp, or task.frontend=torch"):
        warp_env_cfg("h1_flat", "task.physics=physx")


def test_a_term_without_a_warp_version_is_refused_before_the_simulator(warp_env_cfg):
    added = [
        "+reward@task.rewards.torque_limits=term",
        "task.rewards.torque_limits.func=isaaclab.envs.mdp.rewards:applied_torque_limits",
        "task.rewards.torque_limits.weight=-0.1",
    ]
    with pytest.raises(ValueError, match=r"(?s)h1_flat.*rewards.torque_limits.*applied_torque_limits.*frontend=torch"):
        warp_env_cfg("h1_flat", *added)


def test_warm_up_state_of_an_earlier_env_is_dropped_and_decorations_kept(warp_env_cfg):
    from isaaclab_experimental.envs.mdp.observations import generated_commands

    from tasks.warp_frontend import forget_warm_up

    env_cfg = warp_env_cfg("h1_flat")
    generated_commands._is_warmed_up, generated_commands._cmd_wp = True, object()  # what a first call leaves
    cleared = forget_warm_up(env_cfg)
    assert "observations.policy.velocity_commands" in cleared
    assert not hasattr(generated_commands, "_is_warmed_up") and not hasattr(generated_commands, "_cmd_wp")
    assert generated_commands._has_descriptor and generated_commands._descriptor.out_dim == "command"


def test_registration_is_idempotent_and_where_the_frontend_looks():
    from isaaclab.envs.mdp.observations import height_scan
    from isaaclab_experimental.envs.frontend import WarpFrontend

    from tasks.warp_frontend import register_twins, twin_module_for
    from tasks.warp_terms import HeightScan

    register_twins()
    register_twins()
    assert WarpFrontend.WARP_ROOT_PREFIXES.count("tasks.warp_terms") == 1
    module = twin_module_for(height_scan)
    assert WarpFrontend._resolve_warp_twin("height_scan", [module]) is HeightScan


# --------------------------------------------------------------------------------------------------- logs
def test_each_steps_log_is_a_snapshot_of_the_managers_buffers():
    """The managers' figures are views of one buffer each, rewritten at every reset: what the learner keeps of a
    step holds that step's figures afterwards, one copy per buffer, and the environment's own log is left alone."""
    from tasks.warp_frontend import snapshot_logs

    rewards, terminations = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.25, 0.75])
    log = {f"Episode_Reward/{i}": rewards[i] for i in range(3)}
    log |= {f"Episode_Termination/{i}": terminations[i] for i in range(2)}
    log |= {"Metrics/fresh": torch.tensor(5.0), "Curriculum/level": 1.5}
    extras = {"log": log, "time_outs": torch.zeros(2, dtype=torch.bool)}
    env = SimpleNamespace(step=lambda actions: (None, None, None, extras))
    snapshot_logs(env)
    _, _, _, first = env.step(None)
    rewards.copy_(torch.tensor([7.0, 8.0, 9.0]))  # the next step's reset
    terminations.copy_(torch.tensor([1.0, 0.0]))
    _, _, _, second = env.step(None)
    assert [float(first["log"][f"Episode_Reward/{i}"]) for i in range(3)] == [1.0, 2.0, 3.0]
    assert [float(first["log"][f"Episode_Termination/{i}"]) for i in range(2)] == [0.25, 0.75]
    assert [float(second["log"][f"Episode_Reward/{i}"]) for i in range(3)] == [7.0, 8.0, 9.0]
    bases = {id(value._base) for value in first["log"].values() if getattr(value, "_base", None) is not None}
    assert len(bases) == 2, "one copy per buffer, not per figure"
    assert first["log"]["Metrics/fresh"] is log["Metrics/fresh"] and first["log"]["Curriculum/level"] == 1.5
    assert extras["log"] is log and log["Episode_Reward/0"]._base is rewards, "the environment's log is its own"
    assert first["time_outs"] is extras["time_outs"]


# -------------------------------------------------------------------------- environments (simulator)
def devices() -> list:
    cuda = pytest.param("cuda:0", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))
    return ["cpu", cuda]


@pytest.mark.slow
@pytest.mark.parametrize("device", devices())
def test_warp_envs_build_and_step_one_after_another_in_one_process(compose_cfg, device, tmp_path, monkeypatch):
    """h1_flat, then h1_rough in the same process (a local sweep does this): each reads its own buffers; rough's
    height scan equals the PyTorch term on the env's own sensor, and the curriculum's origins are the reset's."""
    from isaaclab.envs.mdp.observations import height_scan

    from tasks.registry import build_env

    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    for task in ("h1_flat", "h1_rough"):
        cfg = compose_cfg([f"task={task}", "task.frontend=warp", "task.observation_noise=false", *SMALL_H1])
        handle = build_env(cfg.task, device, 5)
        try:
            env, unwrapped = handle.env, handle.env.unwrapped
            assert type(unwrapped).__name__ == "ManagerBasedRLEnvWarp"
            captured = handle.info["captured"]
            manager = unwrapped.observation_manager
            names, cfgs = manager._group_obs_term_names["policy"], manager._group_obs_term_cfgs["policy"]
            env.get_observations()
            for _ in range(3):
                obs, _, _, _ = env.step(torch.rand(env.num_envs, env.num_actions, device=device) * 2 - 1)
                command = unwrapped.command_manager.get_command("base_velocity")
                assert torch.equal(cfgs[names.index("velocity_commands")].out_torch, command)
                if task == "h1_rough":
                    term = cfgs[names.index("height_scan")]
                    expected = height_scan(unwrapped, term.params["sensor_cfg"]).clamp(*term.clip)
                    assert torch.equal(term.out_torch, expected)
                    assert expected.unique().numel() > 1, "the scan should see the rough terrain"
            assert obs["policy"].shape == (2, 256 if task == "h1_rough" else 69)
            if task == "h1_rough":
                origins = unwrapped.scene.env_origins
                assert unwrapped.env_origins_wp.ptr == origins.data_ptr(), "the Warp reset must read the origins"
                assert unwrapped.curriculum_manager.active_terms == ["terrain_levels"]
            # Only the height scan keeps a manager (rough's observations) out of graphs, on any device.
            caps = unwrapped._manager_call_switch._max_modes
            assert ("ObservationManager" in caps) == (task == "h1_rough")
            assert not {"ActionManager", "EventManager", "TerminationManager", "RewardManager"} & set(caps)
            graphs_expected = device.startswith("cuda")
            assert captured == {
                name: graphs_expected and not (task == "h1_rough" and name == "ObservationManager") for name in captured
            }
        finally:
            handle.close()


@pytest.mark.slow
@pytest.mark.parametrize(("task", "device_resets"), [("h1_flat", False), ("h1_rough", False), ("h1_rough", True)])
def test_h1_trains_with_the_warp_frontend_on_the_cpu(task, device_resets, tmp_path):
    args = [
        f"task={task}",
        "task.frontend=warp",
        f"task.device_resets={device_resets}",
        *H1_CPU_RUN,
        f"output_root={tmp_path / 'outputs'}",
        "algo.max_iterations=2",
    ]
    result = run_train(args, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    run_dir = only_run(tmp_path / "outputs" / task)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2]
    assert all("Episode_Reward/track_lin_vel_xy_exp" in m and m["env_steps"] == 8 for m in metrics)
    if task == "h1_rough":
        assert all("Curriculum/terrain_levels" in m for m in metrics)
    startup = (run_dir / "startup.log").read_text()
    assert "[rlforge] Warp frontend: CUDA graphs for no manager" in startup
    assert ("[rlforge] resets chosen on the device (task.device_resets)" in startup) == device_resets
    assert "frontend: warp" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "checkpoints" / "model_2.pt").is_file()


# ------------------------------------------------------------------------------------------ benchmark
def test_benchmark_gives_each_trainer_its_frontend_and_flat_tasks_one_ground(tmp_path):
    from bench.benchmark import parse_args
    from bench.trainers import Settings, command_for, environment_for

    args = parse_args(["--task", "h1_flat", "--frontend", "warp", "--isaaclab-frontend", "torch"])
    assert (args.task, args.ours_frontend, args.isaaclab_frontend) == ("h1_flat", "warp", "torch")
    settings = Settings(
        device="cpu",
        num_envs=16,
        iterations=2,
        seed=1,
        usd_path="/r/h1.usda",
        terrain_rows=4,
        terrain_cols=4,
        task="h1_flat",
        isaaclab_task="Isaac-Velocity-Flat-H1",
        ground_usd="/g/flat.usda",
        actor_hidden_dims=[128, 128, 128],
        critic_hidden_dims=[128, 64],
        ours_frontend="warp",
        isaaclab_frontend="warp",
    )
    ours, theirs = command_for("ours", settings, tmp_path), command_for("isaaclab", settings, tmp_path)
    assert {"task=h1_flat", "task.frontend=warp", "algo.actor.hidden_dims=[128,128,128]"} <= set(ours)
    assert "algo.critic.hidden_dims=[128,64]" in ours
    assert not any(arg.startswith("task.terrain.") for arg in ours), "a flat task has no terrain grid"
    assert theirs[theirs.index("--task") + 1] == "Isaac-Velocity-Flat-H1"
    assert theirs[theirs.index("--frontend") + 1] == "warp"
    assert {"env.scene.terrain.terrain_type=usd", "env.scene.terrain.usd_path=/g/flat.usda"} <= set(theirs)
    assert not any("terrain_generator" in arg for arg in theirs)
    # Isaac Lab's Warp managers record graphs unless told otherwise, which the CPU cannot; ours needs no variable.
    assert json.loads(environment_for("isaaclab", settings)["MANAGER_CALL_CONFIG"]) == {"default": 1}
    assert environment_for("ours", settings) == {}
    on_gpu = Settings(**{**settings.__dict__, "device": "cuda"})
    assert environment_for("isaaclab", on_gpu) == {}
    torch_only = Settings(**{**settings.__dict__, "ours_frontend": "torch", "isaaclab_frontend": "torch"})
    assert "--frontend" not in command_for("isaaclab", torch_only, tmp_path)
    assert not any(arg.startswith("task.frontend") for arg in command_for("ours", torch_only, tmp_path))


def test_benchmark_task_settings_follow_isaac_labs_task_and_runner_settings():
    from bench.trainers import task_settings

    flat, rough = task_settings("h1_flat"), task_settings("h1_rough")
    assert flat["isaaclab_task"] == "Isaac-Velocity-Flat-H1" and flat["ground_usd"].endswith(".usda")
    assert flat["actor_hidden_dims"] == [128, 128, 128] and flat["critic_hidden_dims"] == [128, 128, 128]
    assert rough["isaaclab_task"] == "Isaac-Velocity-Rough-H1" and rough["ground_usd"] is None
    assert rough["actor_hidden_dims"] == [512, 256, 128]


def test_isaac_labs_warp_trainer_refuses_rough_terrain_even_with_our_terms_registered():
    from bench.trainers import isaaclab_warp_refusal
    from tasks.warp_frontend import register_twins

    register_twins()  # Isaac Lab's own trainer does not have them
    assert "height_scan" in isaaclab_warp_refusal("Isaac-Velocity-Rough-H1")
    assert isaaclab_warp_refusal("Isaac-Velocity-Flat-H1") is None
