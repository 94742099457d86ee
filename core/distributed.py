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


class GradientMean:
    """Average the gradients of a fixed list of parameters over all ranks with one all-reduce of one flat buffer.

    A call copies every gradient into one flat buffer, sums the buffer over the ranks in a single all-reduce, divides
    it by the world size and copies each slice back into its parameter's ``.grad``. That is what rsl-rl's
    ``PPO.reduce_parameters`` computes: it packs the gradients into buffers of at most 25 MB and reduces each, so for
    a policy under 25 MB it also makes one all-reduce, but it builds a new buffer every time. Parameters without a
    gradient are skipped, as rsl-rl skips them.

    The buffer is made at the first call and kept, so later calls allocate nothing and never wait for the device:
    with NCCL the call can be recorded in a CUDA graph (NCCL 2.9.6 or newer) and replayed; with gloo it runs eagerly.
    The same code runs both ways.
    """

    def __init__(self, params, world_size: int) -> None:
        self.params = list(params)
        """The parameters whose gradients are averaged, in a fixed order (the same on every rank)."""
        self.world_size = world_size
        """Ranks taking part; the summed gradients are divided by it."""
        self.buffer = None
        """The flat buffer of all gradients, made at the first call."""

    def __call__(self) -> None:
        import torch
        import torch.distributed as dist

        grads = [param.grad for param in self.params if param.grad is not None]
        if not grads:
            return
        numel = sum(grad.numel() for grad in grads)
        buffer = self.buffer
        if buffer is None or buffer.numel() != numel or buffer.device != grads[0].device:
            buffer = self.buffer = torch.empty(numel, dtype=grads[0].dtype, device=grads[0].device)
        torch.cat([grad.reshape(-1) for grad in grads], out=buffer)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        buffer.div_(self.world_size)
        slices = buffer.split([grad.numel() for grad in grads])
        torch._foreach_copy_(grads, [piece.view_as(grad) for piece, grad in zip(slices, grads, strict=True)])
