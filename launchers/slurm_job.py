"""Inside a Slurm job: distributed variables from Slurm, stop signals, resuming the run directory, requeueing."""

from __future__ import annotations

import enum
import os
import re
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

# Signals that Slurm sends to a job's processes: SIGUSR2 before the time limit (`--signal=USR2@<delay>`) and
# on a preemption notice sent as that signal (`scancel --signal=USR2`); SIGTERM when the job is preempted
# (PreemptMode=REQUEUE or CANCEL with a GraceTime: SIGTERM at once, the kill when the grace time is over), when a
# user cancels it (`scancel`) and when it is requeued (`scontrol requeue`). SIGUSR2 always asks for a requeue;
# what a SIGTERM means is read from the controller (see :func:`classify_stop`).
REQUEUE_SIGNAL = signal.SIGUSR2
STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class StopKind(enum.Enum):
    """What the plugin does once the run has stopped on a signal."""

    REQUEUE = "requeue"
    """Preempted or near the time limit: requeue the job, the next attempt continues the run."""
    REQUEUED_BY_SLURM = "requeued by Slurm"
    """Slurm has already requeued the job (`scontrol requeue`, a grace time that ran out): just leave."""
    STOP = "stop"
    """Cancelled by a user: the run ends here and is not requeued."""


@dataclass(frozen=True)
class StopDecision:
    """What a stop signal meant, as the controller described the job when the signal arrived."""

    kind: StopKind
    signal: str
    """Name of the first stop signal (``SIGTERM``, ``SIGUSR2``)."""
    explanation: str
    """One sentence for the log and the ledger."""
    job: dict[str, str] = field(default_factory=dict)
    """The fields of `scontrol show job` the decision read (JobState, PreemptTime, Restarts, EndTime)."""


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


JOB_FIELDS = ("JobState", "Reason", "Restarts", "PreemptTime", "EndTime")


def describe_job(job_id: str) -> dict[str, str]:
    """The fields of `scontrol show job <job_id>` in :data:`JOB_FIELDS` (empty if the controller did not answer)."""
    try:
        result = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if result.returncode != 0:
        return {}
    described = {}
    for name in JOB_FIELDS:
        found = re.search(rf"(?:^|\s){name}=(\S+)", result.stdout)
        if found:
            described[name] = found.group(1)
    return described


def _is_set(value: str | None) -> bool:
    return bool(value) and value not in {"None", "Unknown", "(null)", "N/A"}


def is_preemption(job: dict[str, str]) -> bool:
    """Whether the controller's description of a job (:func:`describe_job`) says it is being preempted."""
    return _is_set(job.get("PreemptTime"))


def classify_stop(signal_name: str, job: dict[str, str], restarts_before: int) -> StopDecision:
    """Decide what a stop signal means from the controller's view of the job at that moment.

    Measured on Slurm 22.05 (tests/slurm): a job preempted with a GraceTime gets SIGTERM while it is still
    RUNNING with `PreemptTime` set, and Slurm does not requeue it itself if it exits within the grace time (it
    ends COMPLETED), so the run requeues it. A user's `scancel` leaves the job COMPLETING or CANCELLED without a
    preemption time. `scontrol requeue` (by a user, or by Slurm when the grace time ran out) has already counted
    one more restart than this attempt started with. SIGUSR2 comes only for a time limit or a preemption notice.
    """
    state = job.get("JobState", "")
    restarts = int(job["Restarts"]) if job.get("Restarts", "").isdigit() else restarts_before
    if restarts > restarts_before:
        return StopDecision(
            StopKind.REQUEUED_BY_SLURM, signal_name, f"Slurm requeued the job ({signal_name}, {state})", job
        )
    if signal_name == signal.Signals(REQUEUE_SIGNAL).name:
        what = "preempted by Slurm" if is_preemption(job) else "near the time limit or preempted"
        return StopDecision(StopKind.REQUEUE, signal_name, f"{what} ({signal_name})", job)
    if state == "RUNNING" and is_preemption(job):
        return StopDecision(
            StopKind.REQUEUE,
            signal_name,
            f"preempted by Slurm at {job['PreemptTime']} ({signal_name}; killed at {job.get('EndTime', '?')} "
            "unless it leaves first)",
            job,
        )
    if not job:
        explanation = f"stopped ({signal_name}; the controller did not describe the job, so it is not requeued)"
    else:
        explanation = f"cancelled ({signal_name}, job {state or 'state unknown'})"
    return StopDecision(StopKind.STOP, signal_name, explanation, job)


class StopSignals:
    """While active, SIGUSR2 and SIGTERM ask the training loop to checkpoint and stop (core.lifecycle).

    It replaces submitit's own handlers, which requeue from inside the handler before the training loop
    could write a checkpoint; here the loop finishes its iteration, saves, and the caller asks :meth:`decision`
    what to do. The handler itself only records the signal: it may run anywhere in the main thread, where
    starting a process or a thread could wait on a lock that the interrupted code holds.

    A task that trains packed sweep points in processes of its own (`launcher.runs_per_gpu`) passes `on_signal`
    instead, which is called with the signal's number in place of the stop request (the processes' own handlers
    ask their runs to stop); it must be as safe in a signal handler (send signals, set flags).
    """

    def __init__(
        self,
        job_id: str | None = None,
        restarts_before: int | None = None,
        on_signal: Callable[[int], None] | None = None,
    ) -> None:
        self.received: list[str] = []
        self.job_id = job_id if job_id is not None else os.environ.get("SLURM_JOB_ID", "")
        self.restarts_before = restart_count() if restarts_before is None else restarts_before
        self.on_signal = on_signal
        self._previous: dict[int, object] = {}

    def decision(self) -> StopDecision | None:
        """What the first stop signal meant (None if none came), from the controller's view of the job now.

        Asked once the run has stopped: a preempted job is still RUNNING until its grace time is over (after
        that Slurm has killed this process), and a cancel or a requeue does not change back."""
        if not self.received:
            return None
        job = describe_job(self.job_id) if self.job_id else {}
        return classify_stop(self.received[0], job, self.restarts_before)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        from core.lifecycle import request_stop

        name = signal.Signals(signum).name
        self.received.append(name)
        if self.on_signal is not None:
            self.on_signal(signum)
            return
        # During start-up the request raises core.lifecycle.Interrupted at once, from here.
        request_stop("preempted or near the time limit (SIGUSR2)" if signum == REQUEUE_SIGNAL else f"stopped ({name})")

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]


# Signals that end a process when a crash of the code itself ends it: such a step is not requeued (the batch script's
# teardown requeues only SIGKILL and SIGBUS), so a bug does not loop through the queue.
CRASH_SIGNALS = (signal.SIGSEGV, signal.SIGABRT, signal.SIGFPE, signal.SIGILL)


def killed_points_status(signals: Sequence[int]) -> int:
    """The exit status of a task whose packed points' processes were killed by these signals: that of a training
    step killed by one of them (128 + its number), so that the batch script's teardown treats the task as it treats
    a killed step. A crash of the code comes first (not requeued); else the first kill (SIGKILL or SIGBUS: a lost
    process, requeued unless Slurm reports it ran out of memory)."""
    crashes = [number for number in signals if number in CRASH_SIGNALS]
    return 128 + int((crashes or list(signals))[0])


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
