"""An explicit registry of environment builders, keyed by ``task.kind``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig


@dataclass
class EnvHandle:
    """A built environment: the rsl-rl ``VecEnv`` and what closes it.

    ``env`` follows rsl-rl's ``VecEnv``: ``num_envs``, ``num_actions``, ``max_episode_length``,
    ``episode_length_buf`` (num_envs,), ``get_observations() -> TensorDict`` of (num_envs, obs_dim) groups,
    ``step(actions (num_envs, num_actions)) -> (obs, rewards (num_envs,), dones (num_envs,), extras)``,
    with ``extras["log"]`` holding per-term episode sums and ``extras["time_outs"]`` the truncations.
    """

    env: Any
    close: Callable[[], None] = lambda: None
    info: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[DictConfig, str, int, float | None], EnvHandle]
_BUILDERS: dict[str, str] = {}


def register_kind(kind: str, builder_path: str) -> None:
    """Register a builder by ``module:function`` path, imported only when used; a duplicate kind is refused.
    This registry is the one list of valid ``task.kind`` values."""
    if kind in _BUILDERS:
        raise ValueError(f"task kind '{kind}' is already registered (by {_BUILDERS[kind]})")
    _BUILDERS[kind] = builder_path


def list_kinds() -> list[str]:
    """Registered task kinds."""
    return sorted(_BUILDERS)


def resolve_builder(kind: str) -> Builder:
    """The builder of a task kind, imported now."""
    import importlib

    if kind not in _BUILDERS:
        raise ValueError(f"unknown task kind '{kind}'; registered kinds: {', '.join(list_kinds())}")
    module_name, func_name = _BUILDERS[kind].split(":")
    return getattr(importlib.import_module(module_name), func_name)


def build_env(task: DictConfig, device: str, seed: int, clip_actions: float | None = None) -> EnvHandle:
    """Build the environment that ``task`` describes, on ``device``, seeded with ``seed``; with ``clip_actions``,
    the environment clamps every action to ``[-clip_actions, clip_actions]`` before applying it."""
    if clip_actions is not None and clip_actions <= 0:
        raise ValueError(f"algo.clip_actions must be positive (or null for no clipping), not {clip_actions}")
    return resolve_builder(task.kind)(task, device, seed, clip_actions)


register_kind("isaaclab", "tasks.isaaclab_env:build")
register_kind("toy", "tasks.toy:build")
