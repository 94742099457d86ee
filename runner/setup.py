"""What must be registered before Hydra composes a config: schemas and resolvers."""

from __future__ import annotations

from omegaconf import OmegaConf

from core.config import register_configs
from core.rundir import resolve_run_dir

_registered = False


def register() -> None:
    """Register the config schemas and the ``rlforge_run_dir`` resolver (idempotent)."""
    global _registered
    if _registered:
        return
    register_configs()
    OmegaConf.register_new_resolver("rlforge_run_dir", resolve_run_dir, use_cache=True)
    _registered = True
