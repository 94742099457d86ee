"""Submitting to Slurm (SageMaker HyperPod or any cluster): sbatch parameters, checks before queueing, reports."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.accounting import CostEstimate, estimate_cost
from core.ledger import INSTANCE_TYPE_ENV
from core.rundir import (
    SOURCE_COMMIT_ENV,
    SOURCE_DIRTY_ENV,
    SOURCE_SNAPSHOT_ENV,
    commit_and_dirty,
    source_files,
    work_tree_root,
)
from launchers.settings import HyperPodSettings

if TYPE_CHECKING:
    import submitit

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


def pack[Item](points: Sequence[Item], runs_per_gpu: int) -> list[list[Item]]:
    """The sweep points each task of the job array trains (`launcher.runs_per_gpu` consecutive points a task, the
    last task the rest); one point a task when `runs_per_gpu` is 1."""
    size = max(int(runs_per_gpu), 1)
    return [list(points[start : start + size]) for start in range(0, len(points), size)]


def array_tasks(settings: HyperPodSettings, runs: int) -> int:
    """How many tasks the job array of a sweep of `runs` points has: what the cost is counted in."""
    return len(pack(range(runs), settings.runs_per_gpu))


def tasks_per_node(settings: HyperPodSettings) -> int:
    """One training process per GPU; `tasks_per_node` (or 1) processes on CPU-only nodes."""
    return int(settings.tasks_per_node or settings.gpus_per_node or 1)


def auto_resume_enabled(settings: HyperPodSettings) -> bool:
    return on_hyperpod() if settings.auto_resume is None else bool(settings.auto_resume)


def srun_arguments(settings: HyperPodSettings, workdir: Path) -> list[str]:
    """Arguments of the `srun` that starts the training processes (one task's end ends them all, auto-resume,
    container, user extras, which come last and so win).

    `--kill-on-bad-exit=1`: when one task exits non-zero or is killed, Slurm ends the others. A rank whose peer is
    gone would otherwise wait for it in a collective: gloo and eager NCCL give up after their timeouts (minutes of
    every GPU of the job), and a collective replayed from a CUDA graph (the graphed update) never does."""
    arguments = ["--kill-on-bad-exit=1"]
    if auto_resume_enabled(settings):
        arguments.append("--auto-resume=1")
    if settings.container_image:
        arguments.append(f"--container-image={settings.container_image}")
        arguments.append(f"--container-workdir={workdir}")
        if settings.container_mounts:
            arguments.append(f"--container-mounts={','.join(settings.container_mounts)}")
    arguments.extend(settings.srun_args)
    return arguments


# What Slurm prints to srun's stderr (the batch script's) when it kills a step for memory: srun's report of a task
# the kernel's cgroup OOM killer ended, slurmstepd's count of those kills, and the step error of a step that
# jobacct_gather's OverMemoryKill ended for exceeding its job's --mem.
OUT_OF_MEMORY_MESSAGES = ("Out Of Memory", "oom_kill event", "oom-kill event", "Exceeded job memory limit")
# The batch script's stderr file and its size before the training step starts: the teardown reads only what this
# attempt's srun printed (the file is appended to by every attempt).
STDERR_MARK = [
    'rlforge_stderr=$(readlink -f "/proc/$$/fd/2")',
    'rlforge_stderr_offset=$(stat -c %s "$rlforge_stderr" 2>/dev/null || echo 0)',
]


INFINIBAND_DEVICES = "/sys/class/infiniband"
"""Where the kernel lists RDMA devices; an EFA device's ``device/driver`` link ends in ``efa``."""


def efa_environment(settings: HyperPodSettings) -> dict[str, str]:
    """The variables a node with an EFA device exports (``launcher.efa``, ``launcher.efa_device_rdma``): the one owner
    of NCCL's EFA settings."""
    if not settings.efa:
        return {}
    environment = {"FI_PROVIDER": "efa"}
    if settings.efa_device_rdma:
        environment["FI_EFA_USE_DEVICE_RDMA"] = "1"
    return environment


def efa_setup(environment: dict[str, str], devices: str = INFINIBAND_DEVICES) -> list[str]:
    """Batch-script lines that export ``environment`` (:func:`efa_environment`) when the node has an EFA device
    under ``devices``, each variable only where the job's environment does not hold it already, and say so in the
    job's log. The training tasks of every node inherit what the batch script exports."""
    if not environment:
        return []
    lines = [
        "rlforge_efa=",
        f"for rlforge_driver in {shlex.quote(devices)}/*/device/driver; do",
        '  case "$(readlink -f "$rlforge_driver" 2>/dev/null)" in */efa) rlforge_efa=1 ;; esac',
        "done",
        'if [ -n "$rlforge_efa" ]; then',
    ]
    for name, value in environment.items():
        lines.append(f'  [ -n "${{{name}+set}}" ] || export {name}={shlex.quote(str(value))}')
    shown = " ".join(f"{name}=${{{name}}}" for name in environment)
    lines += [f'  echo "[hyperpod] EFA device found: {shown}"', "fi"]
    return lines


FIRST_TASK_END = r"^srun: error: .*: tasks? [0-9,-]+: "
"""srun's line for a task that ended badly (`srun: error: <node>: task 1: Exited with exit code 1`, `...: task 0:
Killed`); the first one of an attempt names what ended the step, the later ones what `--kill-on-bad-exit` ended."""
TASK_ERROR_EXIT = "Exited with exit code"
"""How srun's line says that a task exited with an error status of its own rather than by a signal."""


def killed_step_teardown(max_requeues: int, requeue: bool = True) -> list[str]:
    """Batch-script lines run after the training step: tell an out-of-memory kill apart, requeue other kills.

    srun exits with 128 + the signal number of a killed task. SIGKILL (a lost process, a failing node's
    cleanup) and SIGBUS (a memory hardware error) are retried when `requeue` is set; a Python error (exit 1) or a
    crash of the code itself (SIGSEGV, SIGABRT) is not, so a bug does not loop through the queue. With
    `--kill-on-bad-exit`, one rank's Python error gets the other ranks killed, and srun then reports SIGKILL: the
    first task end srun printed in this attempt (:data:`FIRST_TASK_END`) tells which came first. A step killed
    for exceeding its memory is not retried either: the same run would run out again, each attempt after a
    queue wait. Slurm says so in accounting (step state OUT_OF_MEMORY, on clusters that keep accounting) and
    in what srun prints (:data:`OUT_OF_MEMORY_MESSAGES`); either is enough.
    """
    pattern = shlex.quote("|".join(OUT_OF_MEMORY_MESSAGES))
    lines = [
        "step_status=$?",
        "step_output() {",
        '  tail -c "+$((${rlforge_stderr_offset:-0} + 1))" "${rlforge_stderr:-/dev/null}" 2>/dev/null',
        "}",
        "step_ran_out_of_memory() {",
        '  timeout 30 sacct -n -P -j "$SLURM_JOB_ID" -o State 2>/dev/null | grep -q OUT_OF_MEMORY && return 0',
        f"  step_output | grep -q -E {pattern}",
        "}",
        "first_task_end() {",
        f"  step_output | grep -m 1 -E {shlex.quote(FIRST_TASK_END)}",
        "}",
        'if [ "$step_status" -eq 137 ] || [ "$step_status" -eq 135 ]; then',
        "  if step_ran_out_of_memory; then",
        '    echo "[hyperpod] job $SLURM_JOB_ID: the training step ran out of memory and was killed; not requeueing," \\',
        '      "the same run would run out again. Give it more memory (launcher.mem_per_task_gb) or make it" \\',
        '      "smaller (task.num_envs)." >&2',
        '    exit "$step_status"',
        "  fi",
        f"  if first_task_end | grep -q {shlex.quote(TASK_ERROR_EXIT)}; then",
        '    echo "[hyperpod] job $SLURM_JOB_ID: a training process failed with an error ($(first_task_end |'
        + " sed 's/^srun: error: //'))\" \\",
        '      "and Slurm ended the others; not requeueing, the error would come back. Its log says why." >&2',
        "    exit 1",
        "  fi",
    ]
    if requeue:
        lines += [
            f'  if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {int(max_requeues)} ]; then',
            '    echo "[hyperpod] training step killed by signal $((step_status - 128)); requeueing job $SLURM_JOB_ID" >&2',
            '    scontrol requeue "$SLURM_JOB_ID" && exit 0',
            "  fi",
        ]
    lines += ["fi", 'exit "$step_status"']
    return lines


def executor_parameters(
    settings: HyperPodSettings, job_name: str, code_dir: Path, workdir: Path, source: SourceSnapshot | None = None
) -> dict[str, Any]:
    """submitit SlurmExecutor parameters (sbatch flags, setup lines, srun arguments) of the runs of one submission.

    `code_dir` is the folder the jobs import the project from: the source snapshot's copy of train.py's folder
    when there is one (`source`, whose path, commit and dirty flag the jobs see in RLFORGE_SOURCE_*)."""
    tasks = tasks_per_node(settings)
    sbatch_extra = {"requeue": True, **settings.sbatch_params}
    # Jobs start in the submit directory; the code must be importable from wherever train.py was started.
    setup = [f"export PYTHONPATH={shlex.quote(str(code_dir))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    if source is not None:
        setup += [f"export {name}={shlex.quote(value)}" for name, value in source.environment().items()]
    if settings.instance_type:
        setup.append(f"export {INSTANCE_TYPE_ENV}={shlex.quote(settings.instance_type)}")
    setup += [*efa_setup(efa_environment(settings)), *settings.setup, *STDERR_MARK]
    parameters: dict[str, Any] = {
        "job_name": job_name,
        "time": int(settings.time_limit_min),
        "nodes": int(settings.nodes),
        "ntasks_per_node": tasks,
        "signal_delay_s": int(settings.signal_delay_s),
        "array_parallelism": int(settings.array_parallelism),
        "setup": setup,
        "srun_args": srun_arguments(settings, workdir),
        "additional_parameters": sbatch_extra,
    }
    # HyperPod's auto-resume restarts the step itself after a node failure; a requeue on top would restart the
    # run a second time for the same failure.
    requeue = settings.requeue_failed_steps and not auto_resume_enabled(settings)
    parameters["teardown"] = killed_step_teardown(int(settings.max_requeues), requeue=requeue)
    if settings.gpus_per_node:
        parameters["gpus_per_node"] = int(settings.gpus_per_node)
    # A task that trains packed sweep points runs `runs_per_gpu` training processes; the settings are per process.
    packed = max(int(settings.runs_per_gpu), 1)
    if settings.cpus_per_task:
        parameters["cpus_per_task"] = int(settings.cpus_per_task) * packed
    if settings.mem_per_task_gb:
        # sbatch's --mem is per node; the launcher's setting is per training process.
        parameters["mem"] = f"{int(round(float(settings.mem_per_task_gb) * 1024 * tasks * packed))}MB"
    for key in ("partition", "account", "qos"):
        if getattr(settings, key):
            parameters[key] = getattr(settings, key)
    return parameters


def cost_estimate(settings: HyperPodSettings, runs: int, prices: dict[str, Any] | None = None) -> CostEstimate:
    """The most a submission of `runs` sweep points can cost: every task of its job array (one per point, or per
    `runs_per_gpu` points when packed) holding `nodes` instances for one whole allocation (`time_limit_min`) at the
    HyperPod price of `instance_type`; each requeue may add one allocation more."""
    return estimate_cost(
        table="hyperpod",
        instance_type=settings.instance_type,
        instances_per_run=int(settings.nodes),
        hours_per_run=int(settings.time_limit_min) / 60,
        runs=array_tasks(settings, runs),
        prices=prices,
        unit="array task(s)" if settings.runs_per_gpu > 1 else "run(s)",
    )


def dry_run_text(executor: Any, settings: HyperPodSettings, points: Sequence[Sequence[str]]) -> str:
    """What `launcher.dry_run=true` prints for a sweep whose points have these overrides: the batch script of the
    job array, as sbatch would get it, which points each of its tasks trains when they are packed (shown by the
    overrides that set them apart), and the estimated cost, counted in array tasks."""
    shared = set.intersection(*(set(overrides) for overrides in points)) if len(points) > 1 else set()
    shown = [" ".join(item for item in overrides if item not in shared) for overrides in points]
    tasks = pack(list(enumerate(shown)), settings.runs_per_gpu)
    executor.parameters["map_count"] = len(tasks)  # what submitit's map_array adds for an array of that many tasks
    script = executor._make_submission_file_text(executor._submitit_command_str, "<uid>")
    estimate = cost_estimate(settings, len(points)).line()
    requeues = f" (per allocation: each of up to {settings.max_requeues} requeues may add one more)"
    if settings.runs_per_gpu <= 1:
        return f"dry run, nothing submitted: {len(points)} run(s) as one job array with this batch script:\n{script}\n{estimate}{requeues}"
    lines = [
        f"dry run, nothing submitted: {len(points)} run(s) packed {settings.runs_per_gpu} per array task "
        f"(launcher.runs_per_gpu), as one job array of {len(tasks)} task(s); each task trains its runs at once, as "
        "processes sharing its GPU (its CPUs on CPU nodes):",
        *(
            f"  task {task}: "
            + " | ".join(f"#{number} {overrides or '(no overrides)'}" for number, overrides in members)
            for task, members in enumerate(tasks)
        ),
        "with this batch script:",
        script,
        f"the cost counts array tasks ({len(tasks)}), not runs:",
        f"{estimate}{requeues}",
    ]
    return "\n".join(lines)


def submitit_folder(sweep_dir: str) -> str:
    """Where submitit keeps a submission's batch script, pickled calls and logs: `<sweep dir>/.submitit/<job id>`."""
    return f"{sweep_dir}/.submitit/%j"


def _script_only_executor() -> type:
    import submitit

    class ScriptOnly(submitit.SlurmExecutor):
        """A Slurm executor for writing batch scripts where Slurm's client is not installed: it submits nothing."""

        @classmethod
        def affinity(cls) -> int:
            return 1

        def _internal_process_submissions(self, delayed_submissions):
            raise RuntimeError("a dry run submits nothing; this machine has no Slurm client (srun, sbatch)")

    return ScriptOnly


def make_executor(
    settings: HyperPodSettings,
    *,
    job_name: str,
    sweep_dir: str,
    code_dir: Path,
    workdir: Path,
    source: SourceSnapshot | None = None,
) -> submitit.SlurmExecutor:
    """The submitit executor that submits the runs of one sweep (`sweep_dir`, as Hydra names it) as one job array.

    `code_dir` is train.py's folder, `workdir` the folder the jobs start in (the submit directory), `source` the
    snapshot the jobs run instead of `code_dir` (None: the live folder)."""
    import submitit

    # submitit refuses to build a Slurm executor where no `srun` is on PATH; a dry run only writes the batch script,
    # so it also works on a machine that is no Slurm login node (a laptop planning a sweep).
    kind = _script_only_executor() if settings.dry_run and shutil.which("srun") is None else submitit.SlurmExecutor
    executor = kind(
        folder=submitit_folder(sweep_dir),
        # submitit's own SIGUSR2 handler requeues a job until the run takes the signal over; same bound.
        max_num_timeout=int(settings.max_requeues),
        python=python_command(settings),
    )
    executor.update_parameters(
        **executor_parameters(settings, job_name, source.code_dir if source else code_dir, workdir, source=source)
    )
    return executor


SOURCE_PREFIX = "source-"


@dataclass(frozen=True)
class SourceSnapshot:
    """A copy of the project's source taken when the jobs were submitted; every attempt of them runs it."""

    path: Path
    """Folder of the copy (the work tree's root); `<sweep dir>/source-<digest>`."""
    code_dir: Path
    """train.py's folder inside the copy: what the jobs put first on PYTHONPATH."""
    commit: str
    """Commit the work tree was on ("none" before the first commit)."""
    dirty: bool
    """Whether the copy holds uncommitted changes (modified or untracked files, copied as they were)."""
    sha256: str
    """Digest of the copied files' names, modes and contents; equal sources give equal digests."""
    file_count: int
    """Number of files copied."""

    def environment(self) -> dict[str, str]:
        """What the jobs are told about the source they run (core.rundir records it in the run's manifest)."""
        return {
            SOURCE_SNAPSHOT_ENV: str(self.path),
            SOURCE_COMMIT_ENV: self.commit,
            SOURCE_DIRTY_ENV: "1" if self.dirty else "0",
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "commit": self.commit,
            "dirty": self.dirty,
            "sha256": self.sha256,
            "files": self.file_count,
        }


def snapshot_source(code_dir: Path, parent: Path) -> SourceSnapshot:
    """Copy the source of the work tree holding `code_dir` into `parent/source-<digest>` and describe it.

    The files are those git tracks or would track (core.rundir.source_files, the same rule
    as a SageMaker job's source package): committed, modified and new files as they are now; ignored outputs,
    virtual environments and caches are left out. The copies are made read-only; an unchanged source submitted
    again into the same folder reuses the copy.
    """
    import hashlib

    root = work_tree_root(code_dir)
    if root is None:
        raise SubmitCheckError(
            f"{code_dir} is not in a git work tree, so its source cannot be snapshot for the jobs; "
            "run from a git checkout, or set launcher.source_snapshot=false to run the live folder"
        )
    names = source_files(root)
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".source-", dir=parent))
    digest = hashlib.sha256()
    try:
        for name in names:
            source, target = root / name, staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            digest.update(name.encode() + b"\0")
            if source.is_symlink():
                link = os.readlink(source)
                os.symlink(link, target)
                digest.update(b"link\0" + link.encode() + b"\0")
                continue
            data = source.read_bytes()
            mode = source.stat().st_mode & 0o555
            target.write_bytes(data)
            target.chmod(mode)
            digest.update(f"{mode:o}\0".encode() + hashlib.sha256(data).digest())
        commit, dirty = commit_and_dirty(root)
        path = parent / f"{SOURCE_PREFIX}{digest.hexdigest()[:16]}"
        staging.chmod(0o755)
        try:
            staging.rename(path)
        except OSError:
            if not path.is_dir():
                raise
            # The same source was copied here before (the name is its digest): keep that copy.
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    inside = Path(code_dir).resolve().relative_to(root)
    return SourceSnapshot(
        path=path,
        code_dir=path / inside,
        commit=commit,
        dirty=dirty,
        sha256=digest.hexdigest(),
        file_count=len(names),
    )


def source_for(settings: HyperPodSettings, code_dir: Path, sweep_dir: Path) -> SourceSnapshot | None:
    """The source the jobs of one submission run: a snapshot of `code_dir`'s work tree in `sweep_dir`, or None with
    `launcher.source_snapshot=false` (the jobs run the live `code_dir`)."""
    return snapshot_source(code_dir, sweep_dir) if settings.source_snapshot else None


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


def check_before_submit(settings: HyperPodSettings, output_root: Path, code_dir: Path | None = None) -> list[str]:
    """Everything that can be found wrong before queueing; returns warnings, raises SubmitCheckError on errors.

    `code_dir` is train.py's folder, which must be in a git work tree when the source is snapshot."""
    errors: list[str] = []
    warnings: list[str] = []
    nodes, gpus = settings.nodes, settings.gpus_per_node
    if nodes < 1:
        errors.append(f"launcher.nodes={nodes}: a run needs at least 1 node")
    if gpus < 0 or gpus > MAX_GPUS_PER_NODE:
        errors.append(f"launcher.gpus_per_node={gpus}: use 0 (CPU) to {MAX_GPUS_PER_NODE}")
    tasks = settings.tasks_per_node
    if tasks is not None and (tasks < 1 or (gpus and tasks != gpus)):
        errors.append(
            f"launcher.tasks_per_node={tasks}: one process runs per GPU; leave it null when "
            "gpus_per_node > 0, or give at least 1 on CPU nodes"
        )
    if settings.cpus_per_task is not None and settings.cpus_per_task < 1:
        errors.append(f"launcher.cpus_per_task={settings.cpus_per_task}: give at least 1 or null")
    if settings.mem_per_task_gb is not None and settings.mem_per_task_gb <= 0:
        errors.append(f"launcher.mem_per_task_gb={settings.mem_per_task_gb}: give a positive size or null")
    time_limit_min, delay_s = settings.time_limit_min, settings.signal_delay_s
    if time_limit_min < 1:
        errors.append(f"launcher.time_limit_min={time_limit_min}: give the job's wall-clock limit in minutes (>= 1)")
    elif delay_s < 0 or delay_s >= time_limit_min * 60:
        errors.append(
            f"launcher.signal_delay_s={delay_s} must be shorter than the time limit "
            f"({time_limit_min} min = {time_limit_min * 60} s), or the checkpoint signal comes before the run starts"
        )
    if settings.max_requeues < 0:
        errors.append(f"launcher.max_requeues={settings.max_requeues}: give 0 or more")
    packed = settings.runs_per_gpu
    if packed < 1:
        errors.append(
            f"launcher.runs_per_gpu={packed}: give 1 (one sweep point per array task) or more (that many points "
            "trained at once by each task)"
        )
    elif packed > 1 and (nodes != 1 or gpus > 1 or (tasks or 1) != 1):
        errors.append(
            f"launcher.runs_per_gpu={packed} packs single-process runs into each array task: it needs "
            "launcher.nodes=1 and launcher.gpus_per_node=1 (or 0 on CPU nodes, with tasks_per_node null or 1); "
            "set launcher.runs_per_gpu=1 for multi-GPU or multi-node runs"
        )
    if settings.efa_device_rdma and not settings.efa:
        errors.append("launcher.efa_device_rdma=true needs launcher.efa=true (it is one of the EFA settings)")
    if settings.source_snapshot and code_dir is not None and work_tree_root(code_dir) is None:
        errors.append(
            f"{code_dir} is not in a git work tree, which launcher.source_snapshot=true copies for the jobs; "
            "run from a git checkout, or set launcher.source_snapshot=false to run the live folder"
        )
    problem = _check_writable(output_root)
    if problem:
        errors.append(problem)
    elif on_hyperpod() and not str(output_root.resolve()).startswith(str(HYPERPOD_SHARED_ROOT)):
        warnings.append(
            f"output root {output_root.resolve()} is not under {HYPERPOD_SHARED_ROOT}; make sure every node sees it"
        )
    if settings.dry_run:
        # A dry run may be made anywhere (a laptop, CI): the cluster is asked only when it answers.
        try:
            warnings.extend(_check_cluster(settings.partition, nodes, gpus) if shutil.which("sinfo") else [])
        except SubmitCheckError as error:
            warnings.append(f"dry run: the cluster was not checked ({error})")
    elif shutil.which("sbatch") is None:
        errors.append("`sbatch` is not on PATH: submit from a Slurm login or head node")
    elif not errors:
        errors.extend(_check_cluster(settings.partition, nodes, gpus))
    if errors:
        raise SubmitCheckError("nothing was submitted:\n  - " + "\n  - ".join(errors))
    return warnings


def _check_cluster(asked_partition: str | None, nodes: int, gpus: int) -> list[str]:
    """Partition, node count and GPUs against what the controller reports."""
    partitions = {line.rstrip("*"): line.endswith("*") for line in _sinfo("-o", "%P")}
    partition = asked_partition or next((name for name, default in partitions.items() if default), None)
    if asked_partition and partition not in partitions:
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
    source: SourceSnapshot | None = None
    """The copy of the source the job runs (None with launcher.source_snapshot=false: the live folder)."""
    task_log: str | None = None
    """Packed runs (`launcher.runs_per_gpu`): the Slurm log of the array task that trains this run with the others
    of its pack; `log_file` is then the run's own process log."""

    def to_dict(self) -> dict[str, Any]:
        record = {
            "job_id": self.job_id,
            "run_dir": self.run_dir,
            "overrides": self.overrides,
            "log": self.log_file,
            "source": self.source.to_dict() if self.source else None,
        }
        if self.task_log is not None:
            record["task_log"] = self.task_log
        return record


def write_manifest(sweep_dir: Path, runs: Sequence[SubmittedRun]) -> Path:
    """Record the submission next to the runs (`slurm_jobs.json`), for people and tools that follow them."""
    path = sweep_dir / "slurm_jobs.json"
    previous = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(previous + [run.to_dict() for run in runs], indent=2) + "\n")
    return path


def report(runs: Sequence[SubmittedRun], manifest: Path, out: Callable[[str], None] = print) -> None:
    """Tell the user what was queued and how to follow it."""
    tasks = len({run.job_id for run in runs})
    packed = f" as {tasks} array task(s), each training its runs at once" if tasks < len(runs) else ""
    out(f"Submitted {len(runs)} run(s) to Slurm{packed}:")
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


def python_command(settings: HyperPodSettings) -> str:
    """Interpreter of the compute nodes: the launcher's setting, or the one running this submission.

    `-P` keeps the job's working directory (the submit directory, often the live checkout) off the front of
    sys.path, where `python -m` would put it: the project is imported from PYTHONPATH, the source snapshot."""
    return f"{settings.python or shlex.quote(sys.executable)} -P"


def code_dir() -> Path:
    """The folder of the started script (train.py), which holds the importable packages."""
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    return Path(main_file).resolve().parent if main_file else Path(os.getcwd())
