"""A point mass tracking a velocity command: a tiny pure-torch VecEnv that exercises the training path fast."""

from __future__ import annotations

import time

import numpy as np
import torch
from omegaconf import DictConfig
from tensordict import TensorDict

from tasks.registry import EnvHandle


class PointMassVelocityEnv:
    """2-D point masses that learn to follow a commanded velocity.

    Observations (num_envs, 6): velocity (2), command (2), last action (2). Actions (num_envs, 2): accelerations.
    Reward terms: ``track_velocity`` (exp of the squared tracking error over ``std``^2) and ``action_magnitude``
    (squared action norm), each scaled by its weight and the step length, as Isaac Lab's reward manager does.
    """

    def __init__(self, task: DictConfig, device: str, seed: int, clip_actions: float | None = None) -> None:
        self.device = torch.device(device)
        self.clip_actions = clip_actions
        self.num_envs = int(task.num_envs)
        self.num_actions = 2
        self.dt = float(task.sim_dt) * int(task.decimation)
        self.max_episode_length = int(round(float(task.episode_length_s) / self.dt))
        self.cfg = {"task": "toy", "num_envs": self.num_envs}
        known = {"track_velocity", "action_magnitude"}
        unknown = set(task.rewards) - known
        if unknown:
            raise ValueError(f"toy task has no reward terms {sorted(unknown)}; valid: {sorted(known)}")
        self.weights = {name: float(term.weight) for name, term in task.rewards.items()}
        self.std = float(task.rewards.get("track_velocity", {}).get("params", {}).get("std", 0.5))
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.velocity = torch.zeros(self.num_envs, 2, device=self.device)
        self.command = torch.zeros(self.num_envs, 2, device=self.device)
        self.last_action = torch.zeros(self.num_envs, 2, device=self.device)
        self.episode_length_buf = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.episode_sums = {name: torch.zeros(self.num_envs, device=self.device) for name in self.weights}
        self._resample(torch.arange(self.num_envs, device=self.device))

    def _resample(self, ids: torch.Tensor) -> None:
        shape = (len(ids), 2)
        self.command[ids] = torch.rand(shape, generator=self.generator, device=self.device) * 2.0 - 1.0
        self.velocity[ids] = 0.0
        self.last_action[ids] = 0.0
        self.episode_length_buf[ids] = 0

    def get_observations(self) -> TensorDict:
        obs = torch.cat([self.velocity, self.command, self.last_action], dim=-1)
        return TensorDict({"policy": obs}, batch_size=[self.num_envs], device=self.device)

    def step(self, actions: torch.Tensor):
        if self.clip_actions is not None:
            actions = actions.clamp(-self.clip_actions, self.clip_actions)
        actions = actions.clamp(-5.0, 5.0)  # the point mass's own limit
        self.velocity = self.velocity * 0.9 + actions * self.dt * 2.0
        self.last_action = actions
        error = ((self.velocity - self.command) ** 2).sum(-1)
        terms = {
            "track_velocity": torch.exp(-error / self.std**2),
            "action_magnitude": (actions**2).sum(-1),
        }
        reward = torch.zeros(self.num_envs, device=self.device)
        for name, weight in self.weights.items():
            value = terms[name] * weight * self.dt
            self.episode_sums[name] += value
            reward += value
        self.episode_length_buf += 1
        time_outs = self.episode_length_buf >= self.max_episode_length
        extras: dict = {"time_outs": time_outs, "log": {}}
        done_ids = time_outs.nonzero(as_tuple=False).flatten()
        if len(done_ids):
            for name, sums in self.episode_sums.items():
                extras["log"][f"Episode_Reward/{name}"] = sums[done_ids].mean() / (self.max_episode_length * self.dt)
                sums[done_ids] = 0.0
            extras["log"]["Metrics/velocity_error"] = error[done_ids].sqrt().mean()
            self._resample(done_ids)
        return self.get_observations(), reward, time_outs.long(), extras

    def render(self, env_id: int = 0, width: int = 320, height: int = 240) -> np.ndarray:
        """A picture of env ``env_id`` in velocity space, (height, width, 3) uint8: the point mass (orange disc)
        sits at its velocity, the command is a green arrow from the centre; a tracking policy keeps the disc on
        the arrow's tip. Grey rings mark 1 and 2 m/s; the commanded range is 1 m/s per axis."""
        size = min(width, height)
        scale = size / 6.0  # pixels per m/s: +-3 m/s fill the shorter side
        center = np.array([width / 2.0, height / 2.0])
        rows, cols = np.mgrid[0:height, 0:width]
        radius = np.hypot(cols - center[0], rows - center[1])
        image = np.empty((height, width, 3), dtype=np.uint8)
        image[:] = (245, 245, 240)
        for ring in (1.0, 2.0):
            image[np.abs(radius - ring * scale) < 1.0] = (200, 200, 200)
        image[np.abs(rows - center[1]) < 0.6] = (215, 215, 215)
        image[np.abs(cols - center[0]) < 0.6] = (215, 215, 215)

        def pixel(velocity: torch.Tensor) -> np.ndarray:  # screen y grows downwards
            x, y = velocity.detach().cpu().double().tolist()
            return center + scale * np.array([x, -y])

        tip = pixel(self.command[env_id])
        shaft = tip - center
        # Distance of every pixel to the segment centre -> tip: the arrow's shaft is the pixels closer than 2.
        along = np.clip(
            ((cols - center[0]) * shaft[0] + (rows - center[1]) * shaft[1]) / max(shaft @ shaft, 1e-9), 0, 1
        )
        image[np.hypot(cols - center[0] - along * shaft[0], rows - center[1] - along * shaft[1]) < 2.0] = (30, 170, 60)
        image[np.hypot(cols - tip[0], rows - tip[1]) < 5.0] = (30, 170, 60)
        mass = pixel(self.velocity[env_id])
        image[np.hypot(cols - mass[0], rows - mass[1]) < max(4.0, size / 24.0)] = (237, 107, 20)
        return image


TOY_OVERRIDES = {"startup_delay_s": "seconds the build waits before the env exists, as a slow simulator start does"}
"""What ``task.env_overrides`` may set on the toy task."""


ISAACLAB_ONLY = {
    "frontend": "torch",
    "terrain.collision": "mesh",
    "terrain.midphase": "thread",
    "device_resets": "False",
}
"""Task settings (and their defaults) that only Isaac Lab environments act on: the toy refuses other values
rather than ignore them."""


def build(task: DictConfig, device: str, seed: int, clip_actions: float | None = None) -> EnvHandle:
    """Build the toy environment (after ``task.env_overrides.startup_delay_s`` seconds, default 0)."""
    from omegaconf import OmegaConf

    for key, default in ISAACLAB_ONLY.items():
        value = OmegaConf.select(task, key, default=default)
        if str(value) != default:
            raise ValueError(
                f"task.{key}={value} applies to Isaac Lab environments; the toy task has none (drop the override, "
                f"or use task.{key}={default})"
            )
    overrides = dict(task.get("env_overrides") or {})
    unknown = set(overrides) - set(TOY_OVERRIDES)
    if unknown:
        valid = "; ".join(f"{name}: {what}" for name, what in TOY_OVERRIDES.items())
        raise ValueError(f"toy task has no env_overrides {sorted(unknown)}; valid: {valid}")
    delay = float(overrides.get("startup_delay_s", 0.0))
    deadline = time.monotonic() + delay
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))  # short sleeps: a signal handler runs between them
    return EnvHandle(env=PointMassVelocityEnv(task, device, seed, clip_actions), info={"kind": "toy"})
