"""Distributed context from the standard torch.distributed variables, set by torchrun, Slurm or SageMaker."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a distributed run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Read RANK, WORLD_SIZE and LOCAL_RANK (defaults: a single process)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def resolve_device(requested: str, info: DistInfo) -> str:
    """``auto`` -> this rank's GPU when CUDA is present, else the CPU; ``cuda`` -> this rank's GPU."""
    import torch

    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        return f"cuda:{info.local_rank}"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={requested} but this machine has no CUDA device; use device=cpu or device=auto")
    return requested


def init_process_group(info: DistInfo, device: str) -> None:
    """Join the process group: NCCL between GPUs, gloo on the CPU (MASTER_ADDR/MASTER_PORT rendezvous)."""
    import torch
    import torch.distributed as dist

    if not info.is_distributed or dist.is_initialized():
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def any_rank(flag: bool, info: DistInfo, device: str) -> bool:
    """True on every rank when ``flag`` is true on any rank (one all-reduce)."""
    if not info.is_distributed:
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
