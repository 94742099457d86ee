"""Load a trained policy from a checkpoint without building an environment."""

from __future__ import annotations

from pathlib import Path

import torch
from tensordict import TensorDict


def load_actor(checkpoint_path: str | Path, device: str = "cpu"):
    """The actor (rsl-rl ``MLPModel``) of a checkpoint, in eval mode, and its policy I/O description."""
    from rsl_rl.utils import resolve_class

    state = torch.load(checkpoint_path, map_location=device, weights_only=False)
    io = state.get("policy_io")
    if io is None:
        raise ValueError(f"{checkpoint_path} has no policy I/O description; it was not written by this project")
    obs = TensorDict(
        {group: torch.zeros(1, dim, device=device) for group, dim in io["obs_dims"].items()}, batch_size=[1]
    )
    actor_class, actor_cfg = resolve_class(io["actor"])
    actor = actor_class(obs, io["obs_groups"], "actor", io["num_actions"], **actor_cfg).to(device)
    actor.load_state_dict(state["actor_state_dict"])
    actor.eval()
    return actor, io
