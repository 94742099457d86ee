"""Submitting to Slurm (SageMaker HyperPod or any cluster): sbatch parameters, checks before queueing, reports."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Present on every node of a SageMaker HyperPod cluster (the lifecycle scripts' provisioning data).
HYPERPOD_MARKER = Path("/opt/sagemaker_cluster")
# Where HyperPod mounts FSx for Lustre, the storage every node shares.
HYPERPOD_SHARED_ROOT = Path("/fsx")
# Slurm states in which a job may still run again (submitit's list of unfinished states).
UNFINISHED_STATES = {
    "READY",
    "PENDING",
    "RUNNING",
    "UNKNOWN",
    "REQUEUED",
    "COMPLETING",
    "PREEMPTED",
    "CONFIGURING",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
}
MAX_GPUS_PER_NODE = 16


class SubmitCheckError(ValueError):
    """A problem found on the submit host; nothing was queued."""


def on_hyperpod() -> bool:
    return HYPERPOD_MARKER.exists()


def tasks_per_node(params: dict[str, Any]) -> int:
    """One training process per GPU; `tasks_per_node_override` (or 1) processes on CPU-only nodes."""
    gpus = params.get("gpus_per_node") or 0
    return int(params.get("tasks_per_node_override") or gpus or 1)


def auto_resume_enabled(params: dict[str, Any]) -> bool:
    asked = params.get("auto_resume")
    return on_hyperpod() if asked is None else bool(asked)


def srun_arguments(params: dict[str, Any], workdir: Path) -> list[str]:
    """Arguments of the `srun` that starts the training processes (auto-resume, container, user extras)."""
    arguments = []
    if auto_resume_enabled(params):
        arguments.append("--auto-resume=1")
    if params.get("container_image"):
        arguments.append(f"--container-image={params['container_image']}")
        arguments.append(f"--container-workdir={workdir}")
        if params.get("container_mounts"):
            arguments.append(f"--container-mounts={','.join(params['container_mounts'])}")
    arguments.extend(params.get("srun_args") or [])
    return arguments


def requeue_on_killed_step(max_requeues: int) -> list[str]:
    """Batch-script lines run after the training step: requeue when a training process was killed from outside.

    srun exits with 128 + the signal number of a killed task. SIGKILL (the OOM killer, a lost process, a
    failing node's cleanup) and SIGBUS (a memory hardware error) are retried; a Python error (exit 1) or a
    crash of the code itself (SIGSEGV, SIGABRT) is not, so a bug does not loop through the queue.
    """
    return [
        "step_status=$?",
        'case "$step_status" in',
        f'  {128 + 9}|{128 + 7}) if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {int(max_requeues)} ]; then',
        '    echo "training step killed by signal $((step_status - 128)); requeueing job $SLURM_JOB_ID" >&2',
        '    scontrol requeue "$SLURM_JOB_ID" && exit 0',
        "  fi ;;",
        "esac",
        'exit "$step_status"',
    ]


def executor_parameters(params: dict[str, Any], code_dir: Path, workdir: Path) -> dict[str, Any]:
    """submitit SlurmExecutor parameters (sbatch flags, setup lines, srun arguments) for one run."""
    tasks = tasks_per_node(params)
    gpus = params.get("gpus_per_node") or 0
    sbatch_extra = {"requeue": True, **(params.get("additional_parameters") or {})}
    # Jobs start in the submit directory; the code must be importable from wherever train.py was started.
    setup = [
        f"export PYTHONPATH={shlex.quote(str(code_dir))}${{PYTHONPATH:+:$PYTHONPATH}}",
        *(params.get("setup_lines") or []),
        *(params.get("setup") or []),
    ]
    parameters: dict[str, Any] = {
        "job_name": params.get("name") or "train",
        "time": int(params["timeout_min"]),
        "nodes": int(params["nodes"]),
        "ntasks_per_node": tasks,
        "signal_delay_s": int(params["signal_delay_s"]),
        "array_parallelism": int(params["array_parallelism"]),
        "setup": setup,
        "srun_args": srun_arguments(params, workdir),
        "additional_parameters": sbatch_extra,
        "stderr_to_stdout": bool(params.get("stderr_to_stdout")),
    }
    if params.get("requeue_failed_steps", True):
        parameters["teardown"] = requeue_on_killed_step(int(params["max_requeues"]))
    if gpus:
        parameters["gpus_per_node"] = int(gpus)
    if params.get("cpus_per_task"):
        parameters["cpus_per_task"] = int(params["cpus_per_task"])
    if params.get("mem_per_task_gb"):
        # sbatch's --mem is per node; the launcher's setting is per training process.
        parameters["mem"] = f"{int(round(float(params['mem_per_task_gb']) * 1024 * tasks))}MB"
    for key in ("partition", "account", "qos"):
        if params.get(key):
            parameters[key] = params[key]
    return parameters


def _sinfo(*args: str) -> list[str]:
    result = subprocess.run(["sinfo", "-h", *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise SubmitCheckError(f"the Slurm controller did not answer `sinfo`: {result.stderr.strip()}")
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def _check_writable(folder: Path) -> str | None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        return (
            f"output root {folder} is not writable ({error.strerror or error}); set launcher.output_root to a "
            f"folder every node can write (on HyperPod, under {HYPERPOD_SHARED_ROOT})"
        )
    return None


def check_before_submit(params: dict[str, Any], output_root: Path) -> list[str]:
    """Everything that can be found wrong before queueing; returns warnings, raises SubmitCheckError on errors."""
    errors: list[str] = []
    warnings: list[str] = []
    nodes, gpus = params.get("nodes"), params.get("gpus_per_node") or 0
    if not isinstance(nodes, int) or nodes < 1:
        errors.append(f"launcher.nodes={nodes}: a run needs at least 1 node")
    if gpus < 0 or gpus > MAX_GPUS_PER_NODE:
        errors.append(f"launcher.gpus_per_node={gpus}: use 0 (CPU) to {MAX_GPUS_PER_NODE}")
    override = params.get("tasks_per_node_override")
    if override is not None and (override < 1 or (gpus and override != gpus)):
        errors.append(
            f"launcher.tasks_per_node={override}: one process runs per GPU; leave it null when "
            "gpus_per_node > 0, or give at least 1 on CPU nodes"
        )
    if params.get("cpus_per_task") is not None and params["cpus_per_task"] < 1:
        errors.append(f"launcher.cpus_per_task={params['cpus_per_task']}: give at least 1 or null")
    if params.get("mem_per_task_gb") is not None and params["mem_per_task_gb"] <= 0:
        errors.append(f"launcher.mem_per_task_gb={params['mem_per_task_gb']}: give a positive size or null")
    timeout_min, delay_s = params.get("timeout_min", 0), params.get("signal_delay_s", 0)
    if timeout_min < 1:
        errors.append(f"launcher.time_limit_min={timeout_min}: give the job's wall-clock limit in minutes (>= 1)")
    elif delay_s < 0 or delay_s >= timeout_min * 60:
        errors.append(
            f"launcher.signal_delay_s={delay_s} must be shorter than the time limit "
            f"({timeout_min} min = {timeout_min * 60} s), or the checkpoint signal comes before the run starts"
        )
    if params.get("max_requeues", 0) < 0:
        errors.append(f"launcher.max_requeues={params['max_requeues']}: give 0 or more")
    problem = _check_writable(output_root)
    if problem:
        errors.append(problem)
    elif on_hyperpod() and not str(output_root.resolve()).startswith(str(HYPERPOD_SHARED_ROOT)):
        warnings.append(
            f"output root {output_root.resolve()} is not under {HYPERPOD_SHARED_ROOT}; make sure every node sees it"
        )
    if shutil.which("sbatch") is None:
        errors.append("`sbatch` is not on PATH: submit from a Slurm login or head node")
    elif not errors:
        errors.extend(_check_cluster(params, nodes, gpus))
    if errors:
        raise SubmitCheckError("nothing was submitted:\n  - " + "\n  - ".join(errors))
    return warnings


def _check_cluster(params: dict[str, Any], nodes: int, gpus: int) -> list[str]:
    """Partition, node count and GPUs against what the controller reports."""
    partitions = {line.rstrip("*"): line.endswith("*") for line in _sinfo("-o", "%P")}
    partition = params.get("partition") or next((name for name, default in partitions.items() if default), None)
    if params.get("partition") and partition not in partitions:
        return [f"launcher.partition={partition} does not exist; partitions: {', '.join(sorted(partitions))}"]
    if partition is None:
        return ["the cluster has no default partition; set launcher.partition"]
    rows = [line.split() for line in _sinfo("-p", partition, "-N", "-o", "%N %G")]
    node_names = {row[0] for row in rows}
    errors = []
    if nodes > len(node_names):
        errors.append(f"launcher.nodes={nodes} but partition {partition} has {len(node_names)} node(s)")
    if gpus and not any("gpu" in (row[1] if len(row) > 1 else "") for row in rows):
        errors.append(
            f"partition {partition} has no GPUs (no gpu GRES); use launcher.gpus_per_node=0 to train on "
            "the CPU, or pick a GPU partition"
        )
    return errors


@dataclass
class SubmittedRun:
    """One run handed to Slurm: its job id and the directory it writes."""

    job_id: str
    run_dir: str
    overrides: list[str]
    log_file: str

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "run_dir": self.run_dir, "overrides": self.overrides, "log": self.log_file}


def write_manifest(sweep_dir: Path, runs: Sequence[SubmittedRun]) -> Path:
    """Record the submission next to the runs (`slurm_jobs.json`), for people and tools that follow them."""
    path = sweep_dir / "slurm_jobs.json"
    previous = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(previous + [run.to_dict() for run in runs], indent=2) + "\n")
    return path


def report(runs: Sequence[SubmittedRun], manifest: Path, out: Callable[[str], None] = print) -> None:
    """Tell the user what was queued and how to follow it."""
    out(f"Submitted {len(runs)} run(s) to Slurm:")
    for run in runs:
        suffix = f"  [{' '.join(run.overrides)}]" if run.overrides else ""
        out(f"  job {run.job_id}  ->  {run.run_dir}{suffix}")
    first = runs[0]
    job_ids = ",".join(sorted({run.job_id.split("_")[0] for run in runs}))
    out("Follow them with:")
    out(f"  squeue -j {job_ids}                      # queue state")
    out(f"  sacct -j {job_ids} -o JobID,State,Elapsed,NodeList   # history, requeues included")
    out(f"  tail -f {first.log_file}")
    out(f"  tensorboard --logdir {Path(first.run_dir).parent}")
    out(f"  scancel {job_ids}                         # stop (no requeue)")
    out(f"Submission record: {manifest}")


def wait_for(jobs: Sequence[Any], poll_interval_s: float, out: Callable[[str], None] = print) -> dict[str, str]:
    """Block until every submitit job has finished for good, printing each state change; return final states."""
    last: dict[str, str] = {}
    while True:
        if jobs:
            jobs[0].watcher.update()  # One sacct call for all jobs.
        for job in jobs:
            state = job.watcher.get_state(job.job_id, mode="cache")
            if last.get(job.job_id) != state:
                out(f"{time.strftime('%H:%M:%S')}  job {job.job_id}: {state}")
                last[job.job_id] = state
        if all(state.split()[0] not in UNFINISHED_STATES for state in last.values()):
            return last
        time.sleep(poll_interval_s)


def python_command(params: dict[str, Any]) -> str:
    """Interpreter of the compute nodes: the launcher's setting, or the one running this submission."""
    return params.get("python") or shlex.quote(sys.executable)


def code_dir() -> Path:
    """The folder of the started script (train.py), which holds the importable packages."""
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    return Path(main_file).resolve().parent if main_file else Path(os.getcwd())
