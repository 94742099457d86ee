"""Typed settings of `launcher=hyperpod` (Slurm / SageMaker HyperPod through submitit), stored in Hydra's ConfigStore."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from core.config import LauncherConfig
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class HyperPodLauncherConfig(LauncherConfig):
    """What `launcher=hyperpod` asks Slurm for; every field is set as `launcher.<field>=<value>`.

    One Slurm task runs per GPU (or `tasks_per_node` tasks on CPU-only nodes); every task is one
    training process, and the tasks of all nodes form one torch.distributed group.
    """

    name: str = "hyperpod"
    """Launcher name, recorded in the run's manifest."""
    nodes: int = 1
    """Nodes per run (each run of a sweep gets this many)."""
    gpus_per_node: int = 1
    """GPUs used on each node, one training process per GPU; 0 runs on the CPU (gloo) with `tasks_per_node`."""
    tasks_per_node: int | None = None
    """Training processes per node; null is one per GPU, or one when `gpus_per_node` is 0."""
    cpus_per_task: int | None = None
    """CPU cores reserved for each training process; null leaves the partition's default."""
    mem_per_task_gb: float | None = None
    """Memory reserved for each training process, in GB; null leaves the partition's default."""
    partition: str | None = None
    """Slurm partition; null uses the cluster's default partition."""
    account: str | None = None
    """Slurm account charged for the job; null uses the user's default account."""
    qos: str | None = None
    """Slurm quality of service; null uses the default."""
    time_limit_min: int = 1440
    """Wall-clock limit of one job allocation, in minutes; near it the run checkpoints and is requeued."""
    signal_delay_s: int = 120
    """Seconds before the time limit at which Slurm sends SIGUSR2 (checkpoint, then requeue)."""
    max_requeues: int = 20
    """Requeues of one run after preemption, time limit or a killed job step before it is left failed."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run in the batch script before the training processes start (module loads, venv activation)."""
    output_root: str = "outputs"
    """Folder for run directories and Slurm job files; every node must see it (on HyperPod, under /fsx)."""
    python: str | None = None
    """Python command on the compute nodes; null uses this interpreter (the same path must exist there)."""
    container_image: str | None = None
    """pyxis/enroot image (e.g. `/fsx/images/train.sqsh` or `nvcr.io#nvidia/pytorch:24.07-py3`); null runs on the host."""
    container_mounts: list[str] = field(default_factory=list)
    """`host_path:container_path` mounts of the container (the code and output_root must be mounted)."""
    srun_args: list[str] = field(default_factory=list)
    """Extra arguments of the `srun` that starts the training processes."""
    sbatch_params: dict[str, Any] = field(default_factory=dict)
    """Extra `#SBATCH --key=value` lines, e.g. `{exclusive: true, constraint: a100}`."""
    auto_resume: bool | None = None
    """HyperPod's `srun --auto-resume=1` (replace a faulty node and restart the step); null: on when this host
    is a HyperPod node (`/opt/sagemaker_cluster` exists). While it is on, a killed step is not also requeued
    (`requeue_failed_steps` is ignored): one node failure, one restart."""
    requeue_failed_steps: bool = True
    """Requeue the job when its training step is killed by a signal (a lost process or node), not when it fails
    with an error or was killed for exceeding its memory; bounded by `max_requeues`."""
    source_snapshot: bool = True
    """Copy the source (the files git tracks or would track) into `<sweep dir>/source-<digest>` at submission
    and run every attempt from that copy, so that edits made after submitting never reach a requeued job; needs a
    git work tree. False runs the live folder of train.py."""
    array_parallelism: int = 256
    """Runs of one sweep (one job array) that may run at the same time."""
    wait: bool = False
    """Block and print job state changes until every run ends, instead of returning after submission."""
    poll_interval_s: float = 15.0
    """Seconds between two state checks while waiting (`wait=true`)."""


@dataclass
class HyperPodQueueConf(SlurmQueueConf):
    """The `hydra/launcher` node of `launcher=hyperpod`: submitit's Slurm settings plus this launcher's own.

    `conf/launcher/hyperpod.yaml` fills every field from the `launcher` node, so users set `launcher.*` only;
    the fields below are the ones submitit's `SlurmQueueConf` lacks, documented on HyperPodLauncherConfig.
    """

    _target_: str = "hydra_plugins.hyperpod_launcher.launcher.HyperPodLauncher"
    tasks_per_node_override: int | None = None
    mem_per_task_gb: float | None = None
    setup_lines: list[str] = field(default_factory=list)
    max_requeues: int = 20
    python: str | None = None
    container_image: str | None = None
    container_mounts: list[str] = field(default_factory=list)
    srun_args: list[str] = field(default_factory=list)
    auto_resume: bool | None = None
    requeue_failed_steps: bool = True
    source_snapshot: bool = True
    output_root: str = "outputs"
    wait: bool = False
    poll_interval_s: float = 15.0


ConfigStore.instance().store(group="launcher", name="hyperpod_schema", node=HyperPodLauncherConfig)
ConfigStore.instance().store(
    group="hydra/launcher", name="hyperpod", node=HyperPodQueueConf, provider="hyperpod_launcher"
)
