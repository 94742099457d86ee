"""Environments: a registry of builders that turn a task config into an rsl-rl VecEnv."""

from tasks.registry import EnvHandle, build_env, list_kinds, register_kind

__all__ = ["EnvHandle", "build_env", "list_kinds", "register_kind"]
