"""Resets chosen on the device (``task.device_resets=true``): the Warp frontend's env step without a host read.

Isaac Lab's Warp environment turns each step's termination mask into environment ids on the host
(``reset_buf.nonzero()``), because its command and curriculum terms and the scene's reset take ids. That read waits
for the device to finish the step's physics, and the device then idles while the host launches the resets,
commands, observations and the next policy step: on one H200 at 4096 H1s the GPU was busy 51% of an iteration.
Here the step hands the mask itself to every reset-time consumer, so the host can queue the next step while the
device computes this one:

- the Warp managers (observations, actions, rewards, events, terminations) and the scene's assets and sensors
  already take a mask (Isaac Lab's own mask path);
- the terrain curriculum (``terrain_levels_vel``) and the velocity command (``UniformVelocityCommand``, its reset,
  its resampling when a command runs out, and its metrics) are computed for every environment and kept where the
  mask is set (:func:`terrain_levels_masked`, :class:`MaskedVelocityCommand`);
- the episode counters are zeroed where the mask is set.

What stays the same: which environments reset, and every deterministic figure (terrain levels, origins, metrics,
logged means). What differs: the random draws (new commands, resampling times, a solved terrain's random level) are
drawn for every environment and kept for the masked ones, where Isaac Lab draws only as many as environments reset,
so the random stream differs from the host-read path's from the first reset on; each value comes from the same
distribution. A step in which no environment resets keeps the last logged figures, as Isaac Lab's step does.

Anything else at reset time (other command or curriculum terms, recorder terms, stateful actuators, deformable
objects) is refused when the environment is built, by name.
"""

from __future__ import annotations

from typing import Any

import torch

from tasks.warp_frontend import saved_views

MASK_ONLY = object()
"""``env_ids`` of a reset that takes the environment's reset mask alone (passed to ``_reset_idx``)."""


# ------------------------------------------------------------------------------------------- curriculum
def terrain_levels_masked(env: Any, mask: torch.Tensor, asset_name: str) -> torch.Tensor:
    """Isaac Lab's ``terrain_levels_vel`` for the environments of ``mask`` (bool, one per environment), computed for
    all and kept where the mask is set; returns the mean terrain level, as the term does."""
    asset = env.scene[asset_name]
    terrain = env.scene.terrain
    command = env.command_manager.get_command("base_velocity")
    distance = torch.linalg.norm(asset.data.root_pos_w.torch[:, :2] - env.scene.env_origins[:, :2], dim=1)
    move_up = distance > terrain.cfg.terrain_generator.size[0] / 2
    move_down = distance < torch.linalg.norm(command[:, :2], dim=1) * env.max_episode_length_s * 0.5
    move_down &= ~move_up
    if terrain.terrain_origins is not None:
        levels = terrain.terrain_levels + move_up.long() - move_down.long()
        solved = torch.randint_like(levels, terrain.max_terrain_level)
        levels = torch.where(levels >= terrain.max_terrain_level, solved, torch.clip(levels, 0))
        terrain.terrain_levels.copy_(torch.where(mask, levels, terrain.terrain_levels))
        origins = terrain.terrain_origins[terrain.terrain_levels, terrain.terrain_types]
        terrain.env_origins.copy_(torch.where(mask.unsqueeze(1), origins, terrain.env_origins))
    return torch.mean(terrain.terrain_levels.float())


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` where ``mask`` is set (0 where it is set nowhere), on the device."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / count.clamp_min(1)


# ---------------------------------------------------------------------------------------------- command
class MaskedVelocityCommand:
    """Isaac Lab's ``UniformVelocityCommand`` reset and resampled by mask instead of by ids (same buffers)."""

    def __init__(self, term: Any) -> None:
        self.term = term

    def resample(self, mask: torch.Tensor) -> None:
        """New resampling times and commands where ``mask`` is set (the term's ``_resample``)."""
        term, cfg = self.term, self.term.cfg

        def draw(low: float, high: float) -> torch.Tensor:
            return torch.empty(term.num_envs, device=term.device).uniform_(low, high)

        term.time_left.copy_(torch.where(mask, draw(*cfg.resampling_time_range), term.time_left))
        command = term.vel_command_b
        for axis, span in enumerate((cfg.ranges.lin_vel_x, cfg.ranges.lin_vel_y, cfg.ranges.ang_vel_z)):
            command[:, axis] = torch.where(mask, draw(*span), command[:, axis])
        if cfg.heading_command:
            term.heading_target.copy_(torch.where(mask, draw(*cfg.ranges.heading), term.heading_target))
            term.is_heading_env.copy_(torch.where(mask, draw(0.0, 1.0) <= cfg.rel_heading_envs, term.is_heading_env))
        term.is_standing_env.copy_(torch.where(mask, draw(0.0, 1.0) <= cfg.rel_standing_envs, term.is_standing_env))
        term.command_counter += mask.to(term.command_counter.dtype)

    def reset(self, mask: torch.Tensor, count: torch.Tensor) -> dict[str, torch.Tensor]:
        """The term's ``reset``: the ended episodes' metrics finalized and logged (means over the mask), zeroed,
        the commands resampled; ``success_rate`` goes to ``extras["log"]`` as the term puts it there."""
        term = self.term
        denom = term._step_count.clamp_min(1.0)
        error_xy, error_yaw = term._error_xy_sum / denom, term._error_yaw_sum / denom
        success = (error_xy < term.cfg.vel_xy_success_threshold) & (error_yaw < term.cfg.vel_yaw_success_threshold)
        for name, value in (("error_vel_xy", error_xy), ("error_vel_yaw", error_yaw), ("success_rate", success)):
            metric = term.metrics[name]
            metric.copy_(torch.where(mask, value.to(metric.dtype), metric))
        extras = {}
        for name, metric in term.metrics.items():
            extras[name] = _masked_mean(metric, mask, count)
            metric.masked_fill_(mask, 0.0)
        term.command_counter.masked_fill_(mask, 0)
        self.resample(mask)
        term._env.extras.setdefault("log", {})["Metrics/success_rate"] = extras.pop("success_rate")
        for running in (term._error_xy_sum, term._error_yaw_sum, term._step_count):
            running.masked_fill_(mask, 0.0)
        return extras

    def compute(self, dt: float) -> None:
        """The term's ``compute``: metrics, the countdown, resampling where it ran out, the command's update."""
        term = self.term
        term._update_metrics()
        term.time_left -= dt
        self.resample(term.time_left <= 0.0)
        term._update_command()


# ------------------------------------------------------------------------------------------ environment
def unsupported(env: Any) -> list[str]:
    """What in ``env`` takes environment ids at reset and has no masked version here (empty: supported)."""
    from isaaclab.actuators import ImplicitActuator
    from isaaclab.envs.mdp.commands.velocity_command import UniformVelocityCommand
    from isaaclab_experimental.utils.manager_call_switch import ManagerCallMode
    from isaaclab_tasks.core.velocity.mdp.curriculums import terrain_levels_vel

    found = []
    if not hasattr(env, "_manager_call_switch"):
        found.append("the environment is not Isaac Lab's Warp environment (task.frontend=warp)")
        return found
    for name, term in env.command_manager._terms.items():
        if type(term) is not UniformVelocityCommand:
            found.append(f"command '{name}' ({type(term).__name__}; UniformVelocityCommand only)")
    for name, cfg in zip(env.curriculum_manager._term_names, env.curriculum_manager._term_cfgs, strict=True):
        if cfg.func is not terrain_levels_vel:
            found.append(f"curriculum term '{name}' ({getattr(cfg.func, '__name__', cfg.func)})")
    for manager in ("EventManager", "TerminationManager"):
        if env._manager_call_switch.get_mode_for_manager(manager) == ManagerCallMode.STABLE:
            found.append(f"{manager} in Isaac Lab's stable mode (resets by ids)")
    if env.recorder_manager.active_terms:
        found.append(f"recorder terms {list(env.recorder_manager.active_terms)}")
    if getattr(env, "has_rtx_sensors", False):
        found.append("RTX sensors (re-rendered at reset)")
    scene = env.scene
    for kind in ("_deformable_objects", "_surface_grippers"):
        if getattr(scene, kind, None):
            found.append(f"{kind.strip('_').replace('_', ' ')} {list(getattr(scene, kind))}")
    for name, articulation in scene._articulations.items():
        control = getattr(articulation.actuators, "_control", None)
        if control is not None and getattr(control, "_native_actuator_path_active", False):
            found.append(f"articulation '{name}' runs native actuators (reset by ids)")
        for group, actuator in articulation.actuators.items():
            if actuator is not None and not isinstance(actuator, ImplicitActuator):
                found.append(f"actuator group '{name}/{group}' ({type(actuator).__name__} keeps per-env state)")
    return found


class DeviceResets:
    """Installed on one Warp environment: its ``step`` and ``_reset_idx`` replaced by the masked versions (the
    original ``_reset_idx`` still serves ``reset()``, which passes ids); :meth:`remove` puts them back."""

    def __init__(self, env: Any) -> None:
        problems = unsupported(env)
        if problems:
            raise ValueError(
                "task.device_resets=true resets environments by the termination mask on the device, which this "
                "environment's reset-time parts cannot take: " + "; ".join(problems) + ". Use task.device_resets=false."
            )
        import warp as wp

        self.env = env
        self.mask = wp.to_torch(env.reset_mask_wp)
        self.commands = [MaskedVelocityCommand(term) for term in env.command_manager._terms.values()]
        self.curriculum = [
            (name, cfg.params.get("asset_cfg").name if cfg.params.get("asset_cfg") is not None else "robot")
            for name, cfg in zip(env.curriculum_manager._term_names, env.curriculum_manager._term_cfgs, strict=True)
        ]
        self._original_reset_idx = env._reset_idx
        env.step = self.step
        env._reset_idx = self.reset_idx
        env.command_manager.compute = self.compute_commands

    def remove(self) -> None:
        """Give the environment back its own ``step``, ``_reset_idx`` and command update."""
        for name in ("step", "_reset_idx"):
            self.env.__dict__.pop(name, None)
        self.env.command_manager.__dict__.pop("compute", None)

    def compute_commands(self, dt: float) -> None:
        """The command manager's ``compute``, each term resampled by mask where its command ran out."""
        for command in self.commands:
            command.compute(dt)

    # ---------------------------------------------------------------- the step
    def step(self, action: torch.Tensor):
        """The Warp environment's step, in its order, with the reset taken from the mask on the device."""
        import warp as wp

        env = self.env
        call = env._manager_call_switch.call_stage
        if env._action_in_wp is None:
            raise RuntimeError("Action buffer not initialized. Call reset() before step().")
        wp.copy(env._action_in_wp, wp.from_torch(action.to(env.device), dtype=wp.float32))
        call(
            stage="ActionManager_process_action",
            warp_call={"fn": env.action_manager.process_action, "kwargs": {"action": env._action_in_wp}},
        )
        env.recorder_manager.record_pre_step()
        rendering = env.sim.is_rendering
        for _ in range(env.cfg.decimation):
            env._sim_step_counter += 1
            call(stage="ActionManager_apply_action", warp_call={"fn": env.action_manager.apply_action})
            call(stage="Scene_write_data_to_sim", warp_call={"fn": env.scene.write_data_to_sim})
            env.sim.step(render=False)
            env.recorder_manager.record_post_physics_decimation_step()
            if rendering and env._sim_step_counter % env.cfg.sim.render_interval == 0:
                env.sim.render()
            env.scene.update(dt=env.physics_dt)
        env.episode_length_buf += 1
        env.common_step_counter += 1
        call(stage="TerminationManager_compute", warp_call={"fn": env.step_warp_termination_compute})
        env.reward_buf = call(
            stage="RewardManager_compute",
            warp_call={"fn": env.reward_manager.compute, "kwargs": {"dt": float(env.step_dt)}},
        )
        wp.copy(env.reset_mask_wp, env.termination_manager.dones_wp)  # its stable mode is refused (unsupported)
        env._reset_idx(MASK_ONLY, env_mask=env.reset_mask_wp)
        env.command_manager.compute(dt=float(env.step_dt))
        if "interval" in env.event_manager.available_modes:
            call(
                stage="EventManager_apply_interval",
                warp_call={"fn": env.event_manager.apply, "kwargs": {"mode": "interval", "dt": float(env.step_dt)}},
            )
        from isaaclab_experimental.envs.manager_based_rl_env_warp import clone_obs_buffer

        env.obs_buf = call(
            stage="ObservationManager_compute_update_history",
            warp_call={
                "fn": env.observation_manager.compute,
                "kwargs": {"update_history": True, "return_cloned_output": False},
                "output": clone_obs_buffer,
            },
        )
        return env.obs_buf, env.reward_buf, env.reset_terminated, env.reset_time_outs, env.extras

    # --------------------------------------------------------------- the reset
    def reset_idx(self, env_ids: Any, *, env_mask: Any = None) -> None:
        """``_reset_idx`` by the mask when called with :data:`MASK_ONLY`, else the environment's own (by ids)."""
        if env_ids is not MASK_ONLY:
            return self._original_reset_idx(env_ids, env_mask=env_mask)
        return self.reset_masked(env_mask)

    def reset_masked(self, env_mask: Any) -> None:
        """The Warp environment's ``_reset_idx`` in its order, every part given the mask (no ids, no host read)."""
        env, mask = self.env, self.mask
        call = env._manager_call_switch.call_stage
        count = mask.sum()
        before = env.extras.get("log") or {}
        saved = saved_views(before)
        manager = env.curriculum_manager
        for name, asset in self.curriculum:
            manager._curriculum_state[name] = terrain_levels_masked(env, mask, asset)
        scene = env.scene
        for group in (scene._articulations, scene._rigid_objects, scene._rigid_object_collections):
            for asset in group.values():
                asset.reset(None, env_mask=env_mask)
        for sensor in scene._sensors.values():
            sensor.reset(None, env_mask=env_mask)
        if "reset" in env.event_manager.available_modes:
            env._global_env_step_count_wp.fill_(env._sim_step_counter // env.cfg.decimation)
            call(
                stage="EventManager_apply_reset",
                warp_call={
                    "fn": env.event_manager.apply,
                    "kwargs": {
                        "mode": "reset",
                        "env_mask_wp": env_mask,
                        "global_env_step_count": env._global_env_step_count_wp,
                    },
                },
            )
        log: dict[str, Any] = {}
        for stage, manager_reset in (
            ("ObservationManager_reset", env.observation_manager.reset),
            ("ActionManager_reset", env.action_manager.reset),
            ("RewardManager_reset", env.reward_manager.reset),
        ):
            log.update(call(stage=stage, warp_call={"fn": manager_reset, "kwargs": {"env_mask": env_mask}}) or {})
        log.update(env.curriculum_manager.reset())
        for name, command in zip(env.command_manager._terms, self.commands, strict=True):
            for metric, value in command.reset(mask, count).items():
                log[f"Metrics/{name}/{metric}"] = value
        for stage, manager_reset in (
            ("EventManager_reset", env.event_manager.reset),
            ("TerminationManager_reset", env.termination_manager.reset),
        ):
            log.update(call(stage=stage, warp_call={"fn": manager_reset, "kwargs": {"env_mask": env_mask}}) or {})
        env.episode_length_buf.masked_fill_(mask, 0)
        env.extras["log"] = keep_last_where_none_reset(log, before, saved, count)


def keep_last_where_none_reset(
    log: dict[str, Any],
    before: dict[str, Any],
    saved: dict[int, tuple[torch.Tensor, torch.Tensor]],
    count: torch.Tensor,
) -> dict[str, Any]:
    """``log`` where some environment reset (``count`` > 0), else the figures of the log ``before`` this step's
    reset, as Isaac Lab's step leaves its previous log in place when no environment resets. A figure that is the
    same view in both (a manager's persistent buffer, which earlier steps' logs hold too) gets its buffer back in
    place from ``saved`` (:func:`saved_views`, taken before the reset); the others are chosen, on the device."""
    some = count > 0
    restored = set()
    for key, value in log.items():
        if not isinstance(value, torch.Tensor) or not isinstance(before.get(key), torch.Tensor):
            continue
        base = value._base
        if before[key] is value and base is not None and id(base) in saved:
            if id(base) not in restored:
                restored.add(id(base))
                buffer, copy = saved[id(base)]
                buffer.copy_(torch.where(some, buffer, copy))
        else:
            log[key] = torch.where(some, value, before[key])
    return log
