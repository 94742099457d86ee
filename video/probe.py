"""What a video and the play figures read from a built environment: commanded and actual base velocity, step length.

Velocities are (num_envs, 3) tensors of (forward, lateral, yaw rate) in the robot's base frame [m/s, m/s, rad/s];
a task without a yaw command (the toy point mass) has NaN as its yaw rate."""

from __future__ import annotations

import math

import torch


def base_velocities(kind: str, env) -> tuple[torch.Tensor, torch.Tensor]:
    """(commanded, actual) base velocities of every env of a ``kind`` task (``task.kind``)."""
    if kind == "isaaclab":
        unwrapped = env.unwrapped
        command = unwrapped.command_manager.get_command("base_velocity")[:, :3]
        data = unwrapped.scene["robot"].data
        linear = as_tensor(data.root_lin_vel_b)[:, :2]
        yaw = as_tensor(data.root_ang_vel_b)[:, 2:3]
        return command.float(), torch.cat([linear, yaw], dim=-1).float()
    if kind == "toy":
        nan = torch.full((env.num_envs, 1), math.nan, device=env.command.device)
        return torch.cat([env.command, nan], dim=-1), torch.cat([env.velocity, nan], dim=-1)
    raise ValueError(f"no velocity reader for task kind '{kind}'")


def step_seconds(kind: str, env) -> float:
    """Simulated seconds per environment step (policy step) of a ``kind`` task."""
    if kind == "isaaclab":
        return float(env.unwrapped.step_dt)
    if kind == "toy":
        return float(env.dt)
    raise ValueError(f"no step length for task kind '{kind}'")


class EpisodeClock:
    """Counts the episodes of one env from its step counter, which falls back to 0 at every reset."""

    def __init__(self) -> None:
        self.episode, self._last = 1, -1

    def tick(self, step: int) -> int:
        """Note the env's step counter now; return the episode it is in (1 for the first)."""
        if step < self._last:
            self.episode += 1
        self._last = step
        return self.episode


def as_tensor(value) -> torch.Tensor:
    """A torch tensor of an Isaac Lab data field (a warp-backed ``ProxyArray`` or already a tensor)."""
    return value.torch if hasattr(value, "torch") else torch.as_tensor(value)
