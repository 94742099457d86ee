"""Test-only task builder: the toy task, whose step raises on one rank after some steps of a first attempt."""

from __future__ import annotations

import os

from omegaconf import DictConfig

from tasks.registry import EnvHandle


def build(task: DictConfig, device: str, seed: int, clip_actions: float | None = None) -> EnvHandle:
    """The toy task; on rank ``R`` of ``RLFORGE_TEST_FAILING_RANK=R:STEPS`` (first attempt only) its step raises
    ``RuntimeError`` after ``STEPS`` steps, or the build itself does with ``STEPS`` 0, while every other rank goes
    on."""
    from tasks.toy import build as build_toy

    rank, steps = (int(part) for part in os.environ["RLFORGE_TEST_FAILING_RANK"].split(":"))
    first_attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) == 0
    failing = first_attempt and int(os.environ.get("RANK", "0")) == rank
    if failing and steps == 0:
        raise RuntimeError(f"rank {rank} fails at start-up (test)")
    handle = build_toy(task, device, seed, clip_actions)
    if failing:
        env, step, taken = handle.env, handle.env.step, [0]

        def failing_step(actions):
            taken[0] += 1
            if taken[0] > steps:
                raise RuntimeError(f"rank {rank} fails at step {taken[0]} (test)")
            return step(actions)

        env.step = failing_step
    return handle
