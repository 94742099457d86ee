"""Inside a Slurm job: distributed variables from Slurm, stop signals, resuming the run directory, requeueing."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from types import FrameType, TracebackType

# Signals that Slurm sends: SIGUSR2 before the time limit (`--signal=USR2@<delay>`) and on preemption
# (submitit's convention, `scancel --signal=USR2`); SIGTERM when the job is cancelled, requeued or its node
# is drained. Only SIGUSR2 asks for a requeue: a SIGTERM may be a user's `scancel`, which must end the run.
REQUEUE_SIGNAL = signal.SIGUSR2
STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


def export_distributed_env() -> dict[str, str]:
    """Set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from the Slurm task's environment.

    The rendezvous is the first node of the allocation, on a port derived from the job id (the same after a
    requeue, see :func:`rendezvous_port`). CUDA_VISIBLE_DEVICES is left as Slurm set it: the training code picks
    `cuda:<LOCAL_RANK>`.
    """
    from submitit.helpers import TorchDistributedEnvironment

    environment = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    port = rendezvous_port(os.environ.get("SLURM_JOB_ID", str(environment.master_port)))
    os.environ["MASTER_PORT"] = str(port)
    exported = {
        "RANK": str(environment.rank),
        "WORLD_SIZE": str(environment.world_size),
        "LOCAL_RANK": str(environment.local_rank),
        "MASTER_ADDR": environment.master_addr,
        "MASTER_PORT": str(port),
    }
    # Printed, not logged: Hydra configures logging only later, and this line belongs in every task's log.
    print(
        f"[hyperpod] rank {exported['RANK']} of {exported['WORLD_SIZE']} (local rank {exported['LOCAL_RANK']}) "
        f"on {os.uname().nodename}, rendezvous {exported['MASTER_ADDR']}:{exported['MASTER_PORT']}",
        flush=True,
    )
    return exported


def rendezvous_port(job_id: str, range_file: str = "/proc/sys/net/ipv4/ip_local_port_range") -> int:
    """The rendezvous port of a job: ``RLFORGE_MASTER_PORT`` if set, else one derived from the job id, below the
    kernel's ephemeral port range, so that no outgoing connection on the node can already hold it (a port inside
    that range can be taken by any client socket, and the rendezvous then fails with EADDRINUSE)."""
    if os.environ.get("RLFORGE_MASTER_PORT"):
        return int(os.environ["RLFORGE_MASTER_PORT"])
    try:
        ephemeral_low = int(Path(range_file).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low = 10000 if ephemeral_low > 12000 else 1024
    span = max(ephemeral_low - low, 1)
    digits = "".join(ch for ch in job_id if ch.isdigit()) or "0"
    return low + int(digits) % span


def global_rank() -> int:
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest `checkpoints/model_<iteration>.pt` of a run directory, or None."""
    checkpoints = []
    for path in Path(run_dir).glob("checkpoints/model_*.pt"):
        suffix = path.stem.removeprefix("model_")
        if suffix.isdigit():
            checkpoints.append((int(suffix), path))
    return max(checkpoints)[1] if checkpoints else None


def with_resume(overrides: list[str], run_dir: Path) -> list[str]:
    """`overrides` that continue `run_dir` when it already holds a checkpoint (a requeued or restarted job).

    A resubmitted job starts from the overrides it was first submitted with; the checkpoint on disk, not
    the job's history, decides whether this is a continuation, so a preemption, a time limit, a killed step
    and HyperPod's step restart after a node replacement all resume the same way.
    """
    if latest_checkpoint(run_dir) is None:
        return list(overrides)
    kept = [item for item in overrides if not item.split("=", 1)[0].lstrip("+~").startswith("resume")]
    return [*kept, f"resume={Path(run_dir).resolve()}"]


class StopSignals:
    """While active, SIGUSR2 and SIGTERM ask the training loop to checkpoint and stop (core.lifecycle).

    It replaces submitit's own handlers, which requeue from inside the handler before the training loop
    could write a checkpoint; here the loop finishes its iteration, saves, and the caller requeues.
    """

    def __init__(self) -> None:
        self.received: list[str] = []
        self._previous: dict[int, object] = {}

    @property
    def requeue_requested(self) -> bool:
        return signal.Signals(REQUEUE_SIGNAL).name in self.received

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        from core.lifecycle import request_stop

        name = signal.Signals(signum).name
        self.received.append(name)
        reason = "preempted or near the time limit (SIGUSR2)" if signum == REQUEUE_SIGNAL else f"stopped ({name})"
        request_stop(reason)

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]


def restart_count() -> int:
    """How often Slurm has already requeued this job (0 on its first start)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def requeue_this_job(max_requeues: int) -> str:
    """Requeue the job this process runs in (`scontrol requeue`); return what was done, raise if not allowed."""
    job_id = os.environ["SLURM_JOB_ID"]
    done = restart_count()
    if done >= max_requeues:
        raise RuntimeError(
            f"job {job_id} was already requeued {done} times (launcher.max_requeues={max_requeues}); not requeueing"
        )
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, text=True, timeout=60)
    return f"requeued Slurm job {job_id} (requeue {done + 1} of at most {max_requeues})"


def close_process_group() -> None:
    """End the torch.distributed group the run joined, if any, before the process exits.

    Left to interpreter exit, gloo's threads can abort the process (SIGABRT) after a successful run,
    which would make Slurm see a crashed step.
    """
    import sys

    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()
