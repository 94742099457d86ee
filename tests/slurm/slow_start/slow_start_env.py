"""Test-only task builder: the toy task, after a start-up that lasts RLFORGE_TEST_SLOW_START_S on a first attempt."""

from __future__ import annotations

import os
import time

from omegaconf import DictConfig

from tasks.registry import EnvHandle


def build(task: DictConfig, device: str, seed: int, clip_actions: float | None = None) -> EnvHandle:
    """Sleep through a long start-up on the job's first attempt (a signal handler that raises ends it), then
    build the toy task; a requeued attempt starts at once."""
    from tasks.toy import build as build_toy

    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) == 0:
        print(f"[slow start] building for {os.environ['RLFORGE_TEST_SLOW_START_S']} s", flush=True)
        time.sleep(float(os.environ["RLFORGE_TEST_SLOW_START_S"]))
    return build_toy(task, device, seed, clip_actions)
