"""The view of a task: what draws the frames of one of its envs, chosen by ``task.kind``.

A view has ``frame() -> (height, width, 3) uint8`` (the env as it is now, with the commanded and actual velocity
written on it) and ``close()``."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from video.overlay import draw_lines, velocity_lines
from video.probe import EpisodeClock, base_velocities

DEFAULT_SIZE = (640, 360)
"""Width and height of a frame [pixels] unless asked otherwise."""


class ToyView:
    """The toy point mass drawn by its own ``render`` (velocity space), with the velocities written on it."""

    def __init__(self, env, width: int, height: int, env_id: int = 0) -> None:
        self.env, self.env_id = env, int(env_id)
        self.width, self.height = int(width), int(height)
        self._clock = EpisodeClock()

    def frame(self) -> np.ndarray:
        step = int(self.env.episode_length_buf[self.env_id])
        episode = self._clock.tick(step)
        command, actual = (v[self.env_id].detach().cpu().double().numpy() for v in base_velocities("toy", self.env))
        picture = self.env.render(self.env_id, self.width, self.height)
        return draw_lines(picture, velocity_lines(command, actual, step * float(self.env.dt), episode))

    def close(self) -> None:
        """Nothing to free."""


def open_view(task: DictConfig, env, *, width: int = DEFAULT_SIZE[0], height: int = DEFAULT_SIZE[1], env_id: int = 0):
    """The view of env ``env_id`` of ``env``, built from the task config ``task``. Raises
    :class:`video.gl.RenderingUnavailable` (saying what to install) when a 3-D view has no OpenGL."""
    if not 0 <= env_id < env.num_envs:
        raise ValueError(f"env {env_id} does not exist: the environment has {env.num_envs} envs")
    width, height = width + width % 2, height + height % 2  # H.264 needs even sides
    if task.kind == "isaaclab":
        from video.isaaclab_view import IsaacLabView, robot_file

        return IsaacLabView(env, robot_file(task), width, height, env_id)
    if task.kind == "toy":
        return ToyView(env, width, height, env_id)
    raise ValueError(f"no view for task kind '{task.kind}'")
