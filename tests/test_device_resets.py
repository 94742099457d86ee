"""``task.device_resets``: resets taken from the termination mask on the device give the same steps as Isaac Lab's
Warp environment resetting by ids (the real environment, on the CPU), each masked part equals the part it replaces
on the same state, and what cannot be reset by mask is refused, by name."""

from __future__ import annotations

import pytest
import torch

from tasks.device_resets import MaskedVelocityCommand, keep_last_where_none_reset, terrain_levels_masked

SMALL = ("task.frontend=warp", "task.num_envs=8", "task.kernels.precompile=false")
SMALL_ROUGH = ("task=h1_rough", *SMALL, "task.terrain.num_rows=2", "task.terrain.num_cols=2")
FIXED_COMMANDS = (
    # Commands from one-point ranges: the draws are the same whichever way they are made, so the two reset paths
    # must give the same steps to the bit; standing_fraction 0 and every env heading-commanded keep the flags fixed.
    "task.commands.ranges.lin_vel_x=[0.6,0.6]",
    "task.commands.ranges.lin_vel_y=[0.1,0.1]",
    "task.commands.ranges.ang_vel_z=[-0.4,-0.4]",
    "task.commands.ranges.heading=[0.3,0.3]",
    "task.commands.standing_fraction=0.0",
    "task.commands.resampling_time_s=0.1",  # resampled every 5 steps: the masked countdown is exercised
    "task.episode_length_s=0.3",  # 15 steps: time-outs as well as falls
)


def test_device_resets_need_the_warp_frontend(compose_cfg):
    from tasks.isaaclab_env import build_env_cfg

    cfg = compose_cfg(["task=h1_rough", "task.device_resets=true"])
    with pytest.raises(ValueError, match="add task.frontend=warp"):
        build_env_cfg(cfg.task, "cpu", 0)


def test_logged_figures_stay_the_last_steps_where_no_environment_reset():
    from tasks.warp_frontend import saved_views

    buffer = torch.tensor([2.0, 3.0])  # a manager's persistent buffer; its figures are views of it
    first, second = buffer[0], buffer[1]
    before = {"Episode_Reward/a": first, "Episode_Reward/b": second, "Metrics/x": torch.tensor(5.0)}
    saved = saved_views(before)
    assert len(saved) == 1, "one copy per buffer"
    buffer.zero_()  # the reset of no environment rewrote it
    log = {"Episode_Reward/a": first, "Episode_Reward/b": second, "Metrics/x": torch.tensor(0.0), "new": 1.0}
    log = keep_last_where_none_reset(log, before, saved, torch.tensor(0))
    assert log["Episode_Reward/a"] is first and buffer.tolist() == [2.0, 3.0], "the buffer is restored in place"
    assert log["Metrics/x"].item() == 5.0 and log["new"] == 1.0
    saved = saved_views(before)
    buffer.copy_(torch.tensor([7.0, 8.0]))
    log = keep_last_where_none_reset(
        {"Episode_Reward/a": first, "Episode_Reward/b": second, "Metrics/x": torch.tensor(3.0)},
        before,
        saved,
        torch.tensor(2),
    )
    assert buffer.tolist() == [7.0, 8.0] and log["Metrics/x"].item() == 3.0, "with resets, this step's figures"


def build(compose_cfg, tmp_path, monkeypatch, *overrides: str, task: tuple[str, ...] = SMALL_ROUGH):
    from tasks.registry import build_env

    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg([*task, *overrides])
    return build_env(cfg.task, "cpu", 11)


def rollout(handle, steps: int) -> list[dict]:
    """``steps`` steps of fixed random actions from a fixed start (episode counters spread as rsl-rl spreads them);
    per step the outputs and the reset-time state both paths must agree on."""
    env, unwrapped = handle.env, handle.env.unwrapped
    generator = torch.Generator().manual_seed(4)
    unwrapped.episode_length_buf.copy_(
        torch.randint(0, int(unwrapped.max_episode_length), (env.num_envs,), generator=generator)
    )
    env.get_observations()
    term = unwrapped.command_manager.get_term("base_velocity")
    levels = getattr(unwrapped.scene.terrain, "terrain_levels", None)
    records, kept = [], []
    for _ in range(steps):
        actions = torch.rand(env.num_envs, env.num_actions, generator=generator) * 2 - 1
        obs, rewards, dones, extras = env.step(actions)
        kept.append(extras["log"])  # as the learner keeps it: by reference, averaged at the iteration's end
        records.append(
            {
                "obs": obs["policy"].clone(),
                "rewards": rewards.clone(),
                "dones": dones.clone(),
                "time_outs": extras["time_outs"].clone(),
                "episode_length": unwrapped.episode_length_buf.clone(),
                "command": term.vel_command_b.clone(),
                "heading": term.heading_target.clone(),
                "time_left": term.time_left.clone(),
                "command_counter": term.command_counter.clone(),
                "levels": torch.empty(0) if levels is None else levels.clone(),  # a plane has no levels
                "origins": unwrapped.scene.env_origins.clone(),
                "log": {k: torch.as_tensor(v).clone() for k, v in extras["log"].items()},
            }
        )
    for step, (log, record) in enumerate(zip(kept, records, strict=True)):
        for name, value in log.items():
            assert torch.equal(torch.as_tensor(value), record["log"][name]), f"step {step} kept {name} as read then"
    return records


@pytest.mark.slow
@pytest.mark.parametrize("task", [SMALL_ROUGH, ("task=h1_flat", *SMALL)], ids=["h1_rough", "h1_flat"])
def test_masked_resets_give_the_steps_of_resets_by_ids(compose_cfg, tmp_path, monkeypatch, task):
    """The same environment, actions and start, stepped with Isaac Lab's reset by ids and then with the masked one
    (observation noise, reset events and pushes on, as the task has them): every observation, reward, done, counter,
    command, terrain level and logged figure equal, step by step; and each step's log, kept as the learner keeps it,
    still holds that step's figures at the end (the managers rewrite one buffer at every reset)."""
    steps = 40
    runs = {}
    for device_resets in (False, True):
        handle = build(
            compose_cfg, tmp_path, monkeypatch, *FIXED_COMMANDS, f"task.device_resets={device_resets}", task=task
        )
        try:
            unwrapped = handle.env.unwrapped
            assert ("step" in vars(unwrapped)) == device_resets
            assert ("compute" in vars(unwrapped.command_manager)) == device_resets
            torch.manual_seed(0)
            runs[device_resets] = rollout(handle, steps)
        finally:
            handle.close()
    by_ids, masked = runs[False], runs[True]
    resets = torch.stack([r["dones"] for r in by_ids]).sum(dim=1)
    assert (resets > 0).any() and (resets == 0).any(), "the run should have steps with and without resets"
    assert ((resets > 0) & (resets < 8)).any(), "some steps should reset part of the environments"
    logged = [
        torch.stack([value for name, value in r["log"].items() if name.startswith("Episode_Reward/")])
        for r, count in zip(by_ids, resets, strict=True)
        if count > 0
    ]
    assert any(not torch.equal(logged[0], later) for later in logged[1:]), "resets should log different figures"
    for step, (a, b) in enumerate(zip(by_ids, masked, strict=True)):
        assert a["log"].keys() == b["log"].keys(), step
        for key in a:
            if key == "log":
                for name in a["log"]:
                    assert torch.equal(a["log"][name], b["log"][name]), (step, name)
            else:
                assert torch.equal(a[key], b[key]), (step, key)


@pytest.mark.slow
def test_masked_parts_equal_isaac_labs_on_the_same_state(compose_cfg, tmp_path, monkeypatch):
    """On one built environment: the masked terrain curriculum gives Isaac Lab's levels and origins (robots moved
    up, down, and past the last level), and the masked command resampling changes only the masked environments,
    with values in their ranges; anything that resets by ids only is refused by name."""
    from isaaclab_tasks.core.velocity.mdp.curriculums import terrain_levels_vel

    from tasks.device_resets import DeviceResets

    handle = build(compose_cfg, tmp_path, monkeypatch)
    try:
        env = handle.env.unwrapped
        handle.env.get_observations()
        for _ in range(3):
            handle.env.step(torch.rand(8, handle.env.num_actions) * 2 - 1)
        terrain = env.scene.terrain
        root = env.scene["robot"].data.root_pos_w.torch
        command = env.command_manager.get_command("base_velocity")
        command[:, 0] = 0.5
        origins = terrain.env_origins
        origins[0, :2] = root[0, :2] + 10.0  # far from its origin: promoted
        origins[1, :2] = root[1, :2]  # has not moved while commanded to: demoted
        origins[2, :2] = root[2, :2] + 10.0
        terrain.terrain_levels[0] = 0
        terrain.terrain_levels[1] = 1
        terrain.terrain_levels[2] = terrain.max_terrain_level - 1  # promoted past the last level: a random one
        ids = torch.tensor([0, 1, 2, 5])
        mask = torch.zeros(8, dtype=torch.bool)
        mask[ids] = True
        saved = terrain.terrain_levels.clone(), terrain.env_origins.clone()
        expected_mean = terrain_levels_vel(env, ids)
        expected = terrain.terrain_levels.clone(), terrain.env_origins.clone()
        terrain.terrain_levels.copy_(saved[0])
        terrain.env_origins.copy_(saved[1])
        mean = terrain_levels_masked(env, mask, "robot")
        assert expected[0][0] == 1 and expected[0][1] == 0, "Isaac Lab's term promoted env 0 and demoted env 1"
        for levels, origins in (expected, (terrain.terrain_levels, terrain.env_origins)):
            assert 0 <= levels[2] < terrain.max_terrain_level
            assert torch.equal(origins[2], terrain.terrain_origins[levels[2], terrain.terrain_types[2]])
        keep = torch.ones(8, dtype=torch.bool)
        keep[2] = False
        assert torch.equal(terrain.terrain_levels[keep], expected[0][keep])
        assert torch.equal(terrain.env_origins[keep], expected[1][keep])
        assert float(mean) == pytest.approx(float(terrain.terrain_levels.float().mean()))
        assert float(expected_mean) == pytest.approx(float(expected[0].float().mean()))

        term = env.command_manager.get_term("base_velocity")
        before = {
            name: getattr(term, name).clone()
            for name in ("vel_command_b", "heading_target", "time_left", "command_counter", "is_standing_env")
        }
        MaskedVelocityCommand(term).resample(mask)
        for name, old in before.items():
            new = getattr(term, name)
            assert torch.equal(new[~mask], old[~mask]), f"{name} changed where the mask is not set"
        ranges = term.cfg.ranges
        assert torch.equal(term.command_counter[mask], before["command_counter"][mask] + 1)
        for axis, span in enumerate((ranges.lin_vel_x, ranges.lin_vel_y, ranges.ang_vel_z)):
            values = term.vel_command_b[mask, axis]
            assert ((values >= span[0]) & (values <= span[1])).all(), axis
        heading = term.heading_target[mask]
        assert ((heading >= ranges.heading[0]) & (heading <= ranges.heading[1])).all()
        low, high = term.cfg.resampling_time_range
        assert ((term.time_left[mask] >= low) & (term.time_left[mask] <= high)).all()

        class Stateful(torch.nn.Module):
            """Stands in for an actuator model that keeps per-env state (a delayed PD), which resets by ids."""

        robot = env.scene["robot"]
        group = next(iter(robot.actuators))
        real = robot.actuators._groups[group]
        robot.actuators._groups[group] = Stateful()
        try:
            with pytest.raises(ValueError, match=rf"actuator group 'robot/{group}' \(Stateful keeps per-env state\)"):
                DeviceResets(env)
        finally:
            robot.actuators._groups[group] = real
        assert "step" not in vars(env), "a refused install leaves the environment as it was"
    finally:
        handle.close()


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="reads of the device are what this counts: no CUDA device")
def test_a_step_with_device_resets_does_not_wait_for_the_device(compose_cfg, tmp_path, monkeypatch):
    """PyTorch's sync debug mode raises at any PyTorch read of the device (``nonzero``, ``item``, a copy to the
    host) during the steps, with resets happening in them (Warp's own reads are not seen by it)."""
    from tasks.registry import build_env

    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg([*SMALL_ROUGH, "task.episode_length_s=0.1", "task.device_resets=true"])
    handle = build_env(cfg.task, "cuda:0", 11)
    try:
        env = handle.env
        env.get_observations()
        actions = torch.rand(env.num_envs, env.num_actions, device="cuda:0") * 2 - 1
        for _ in range(3):  # first calls record the managers' graphs and allocate
            env.step(actions)
        dones = []
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(10):
                _, _, done, _ = env.step(actions)
                dones.append(done.clone())
        finally:
            torch.cuda.set_sync_debug_mode(0)
        assert torch.stack(dones).sum() > 0, "environments should have reset during the steps"
    finally:
        handle.close()
