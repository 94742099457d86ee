"""A run's environment and trainer without its run directory, and one training iteration of them.

For tools that measure or inspect the training loop (iteration profiles, the Warp modules a task loads)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def build(cfg: DictConfig) -> tuple[Any, Any, str]:
    """The environment and trainer ``train.py`` builds for ``cfg`` (no run directory, no logger output).

    Returns (environment handle, trainer, device); the caller closes the handle."""
    import torch

    from algos.ppo import build_trainer
    from core.distributed import dist_info, resolve_device
    from tasks import build_env

    info = dist_info()
    device = resolve_device(cfg.device, info)
    torch.manual_seed(int(cfg.seed))
    handle = build_env(cfg.task, device, int(cfg.seed))
    scratch = Path(tempfile.mkdtemp(prefix="rlforge-profile-"))
    trainer = build_trainer(
        handle.env, cfg, device=device, dist=info, run_dir=scratch, seed=int(cfg.seed), logger={"kind": "tensorboard"}
    )
    return handle, trainer, device


def one_iteration(trainer, obs):
    """One training iteration, as ``PPOTrainer.train`` runs it (without checkpoints and logging); the next obs."""
    import torch

    from algos import speed

    with torch.inference_mode():
        obs = trainer.collect(obs, speed.NanWatch() if trainer.cfg.get("check_for_nan", True) else None)
    trainer.learn(obs)
    trainer.logger.ep_extras.clear()
    return obs
