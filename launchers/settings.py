"""Typed settings of the launchers (`launcher=local`, `launcher=hyperpod`, `launcher=sagemaker`).

They are the `launcher` node of the composed config, set as `launcher.<field>=<value>`; each launcher reads its own
settings from that node (:func:`settings_from_config`) and from nowhere else. The Hydra plugins store them in the
ConfigStore (:func:`register_configs`) when Hydra imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from core.config import LauncherConfig


@dataclass
class LocalSettings(LauncherConfig):
    """What `launcher=local` does with the points of a sweep (`-m`); a single run always trains in this process."""

    name: str = "local"
    """Launcher name, recorded in the run's manifest and ledger."""
    runs_per_gpu: int = 1
    """Sweep points (`-m`) training at once on each GPU, each in a process of its own pinned to one GPU
    (CUDA_VISIBLE_DEVICES, round-robin over the GPUs torch sees; on a machine without CUDA, or when every point sets
    `device=cpu`, this many processes on the CPU). Each point keeps the run directory it gets with 1, and its output
    goes to `process.log` there; the points share the CPUs (OMP_NUM_THREADS, unless set). A failed point is reported
    while the others go on. 1 runs the points one after another in this process (Hydra's basic launcher).
    On an H200 at 4096 envs, 2 per GPU gained 7% of steady throughput and overlaps the runs' start-ups, which counts
    most for short runs: docs/benchmarks.md, "Several runs on one GPU" (`scripts/scaling.py --pack`)."""


@dataclass
class HyperPodSettings(LauncherConfig):
    """What `launcher=hyperpod` asks Slurm (SageMaker HyperPod or any Slurm cluster) for.

    One Slurm task runs per GPU (or `tasks_per_node` tasks on CPU-only nodes); every task is one training process,
    and the tasks of all nodes form one torch.distributed group. The runs of one sweep are one job array and share
    these settings.
    """

    name: str = "hyperpod"
    """Launcher name, recorded in the run's manifest and ledger."""
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
    instance_type: str | None = None
    """The cluster's instance type (e.g. `ml.p5.48xlarge`): exported to the jobs as RLFORGE_INSTANCE_TYPE, so each
    run's ledger and cost use its price, and used for the estimated cost of a submission; null leaves both to the
    price file's default."""
    time_limit_min: int = 1440
    """Wall-clock limit of one job allocation, in minutes; near it the run checkpoints and is requeued."""
    signal_delay_s: int = 120
    """Seconds before the time limit at which Slurm sends SIGUSR2 (checkpoint, then requeue)."""
    max_requeues: int = 20
    """Requeues of one run after preemption, time limit or a killed job step before it is left failed."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run in the batch script before the training processes start (module loads, venv activation)."""
    efa: bool = True
    """On a node with an EFA device, export `FI_PROVIDER=efa` in the batch script: NCCL then reaches the other nodes
    over EFA (through the aws-ofi-nccl plugin of HyperPod's images), whose libfabric uses its EFA provider only, never
    its TCP one. A value the job's environment already holds (the submitter's shell, the cluster) is kept, and `setup` lines
    run after these. False exports nothing. docs/hyperpod.md lists the settings."""
    efa_device_rdma: bool = False
    """With `efa`, also export `FI_EFA_USE_DEVICE_RDMA=1` (GPUDirect RDMA over EFA): for instances whose EFA device
    supports RDMA (p4d, p4de, for which SageMaker's training toolkit sets it); leave it off on others."""
    output_root: str = "outputs"
    """Folder for run directories and Slurm job files; every node must see it (on HyperPod, under /fsx)."""
    python: str | None = None
    """Python command on the compute nodes; null uses this interpreter (the same path must exist there)."""
    container_image: str | None = None
    """pyxis/enroot image (e.g. `/fsx/images/train.sqsh` or `nvcr.io#nvidia/pytorch:24.07-py3`); null runs on the
    host."""
    container_mounts: list[str] = field(default_factory=list)
    """`host_path:container_path` mounts of the container (the code and output_root must be mounted); used with
    `container_image`."""
    srun_args: list[str] = field(default_factory=list)
    """Extra arguments of the `srun` that starts the training processes (after the launcher's own, such as
    `--kill-on-bad-exit=1`, so that one given here wins)."""
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
    """Tasks of one job array (one sweep) that may run at the same time; each task trains `runs_per_gpu` runs."""
    runs_per_gpu: int = 1
    """Sweep points trained by each task of the job array, at once, as processes sharing the task's GPU (with
    `gpus_per_node=0`: sharing its CPUs); 1 gives every point its own task. Each point keeps its own run directory,
    ledger and checkpoints, gets the job's signals, and is resumed when the task is requeued; its output goes to
    `process.log` in its run directory. Packs single-process runs only: needs `nodes=1` and `gpus_per_node` 1 (or 0
    with `tasks_per_node` null or 1). `cpus_per_task` and `mem_per_task_gb` stay per training process (the task
    asks for `runs_per_gpu` times as much, and its points share its CPUs: OMP_NUM_THREADS, unless set). What packing
    gains is measured in docs/benchmarks.md, "Several runs on one GPU" (`scripts/scaling.py --pack`)."""
    dry_run: bool = False
    """Print the batch script each job array would be submitted with and the estimated cost; submit nothing."""
    wait: bool = False
    """Block and print job state changes until every run ends, instead of returning after submission."""
    poll_interval_s: float = 15.0
    """Seconds between two state checks while waiting (`wait=true`)."""


@dataclass
class SageMakerSettings(LauncherConfig):
    """What `launcher=sagemaker` sends to SageMaker; one instance per job of a sweep."""

    name: str = "sagemaker"
    """Launcher name, recorded in the composed config kept next to each job's record."""
    role: str | None = None
    """IAM role ARN that SageMaker assumes to run the job (required)."""
    region: str | None = None
    """AWS region of the jobs; null takes the region of the AWS profile or environment."""
    profile: str | None = None
    """Named AWS profile to submit with; null uses the default credential chain."""
    image_uri: str | None = None
    """ECR URI of the training image built from docker/Dockerfile (required)."""
    instance_type: str = "ml.g5.2xlarge"
    """SageMaker instance type of every instance of the job."""
    instance_count: int = 1
    """Number of instances; each runs `processes_per_instance` train.py processes of one distributed run."""
    processes_per_instance: int | None = None
    """Training processes per instance; null runs one per GPU (one on a CPU instance)."""
    volume_size_gb: int = 100
    """Size of the EBS volume attached to each instance, in GB."""
    max_runtime_s: int = 86400
    """Time after which SageMaker stops the job, in seconds of training time."""
    spot: bool = False
    """Run on managed Spot capacity; an interrupted job restarts and resumes from its checkpoint."""
    max_wait_s: int | None = None
    """Spot only: seconds to wait for capacity plus training time; null is twice max_runtime_s."""
    output_path: str | None = None
    """S3 URI under which the source, checkpoints and model of each run are stored;
    null is s3://sagemaker-<region>-<account>/<project_name>."""
    checkpoint_s3_uri: str | None = None
    """S3 URI synced with the run directory; null gives each run its own under output_path.
    Naming one that holds a run continues that run only with `resume=true`."""
    base_job_name: str | None = None
    """Leading part of the job names; null is <project_name>-<task name>."""
    project_name: str = "rlforge"
    """Project name used in default job names and S3 prefixes."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags put on every Training Job, besides the launcher's own (git commit, task, launch)."""
    environment: dict[str, str] = field(default_factory=dict)
    """Plain (non-secret) environment variables of the training container."""
    secret_env: list[str] = field(default_factory=list)
    """Names of environment variables (e.g. WANDB_API_KEY) whose values are read from the
    submitter's environment at submission and passed to the container; never stored in the config."""
    subnets: list[str] = field(default_factory=list)
    """VPC subnet ids to run in (needed for EFA); empty runs outside a VPC."""
    security_group_ids: list[str] = field(default_factory=list)
    """VPC security group ids; required together with subnets."""
    keep_alive_s: int = 0
    """Warm-pool keep-alive after a job ends, in seconds (0 turns it off; not with Spot)."""
    kernel_cache_s3_uri: str | None = "kernel-cache"
    """Where jobs share Warp's compiled kernels: an s3:// URI, or a prefix relative to output_path (the default,
    `kernel-cache`, is <output_path>/kernel-cache). Each job fetches the kernels of its software versions and GPU
    architecture before training and writes back new ones after its first iteration and at its end; a failure of the
    cache never fails the job. null or "" turns it off. See docs/sagemaker.md for the IAM permissions."""
    max_parallel_jobs: int = 8
    """Most jobs of one sweep running at once; further points are submitted as earlier ones end."""
    wait: bool = False
    """Follow the jobs to their end and exit non-zero with the reason if one failed."""
    poll_interval_s: float = 30.0
    """Seconds between two status checks while following jobs."""
    dry_run: bool = False
    """Print each job's request (the arguments the SDK would get) and the estimated cost; send nothing to AWS."""
    max_source_mb: float = 50.0
    """Refuse a source package larger than this many megabytes (compressed)."""
    source_dir: str | None = None
    """Git work tree whose tracked and trackable files are packaged; null is this project."""


def register_configs() -> None:
    """Store the settings schemas in Hydra's ConfigStore; `conf/launcher/<name>.yaml` extends them."""
    store = ConfigStore.instance()
    store.store(group="launcher", name="local_schema", node=LocalSettings)
    store.store(group="launcher", name="hyperpod_schema", node=HyperPodSettings)
    store.store(group="launcher", name="sagemaker_schema", node=SageMakerSettings)


def settings_from_config[Settings: (LocalSettings, HyperPodSettings, SageMakerSettings)](
    config: DictConfig, schema: type[Settings]
) -> Settings:
    """The typed settings in a composed config's `launcher` node, interpolations resolved.

    Raises ValueError when the node is missing or holds another launcher's settings."""
    node = OmegaConf.select(config, "launcher", default=None)
    if node is None:
        raise ValueError("the composed config has no `launcher` node; select one with launcher=<name>")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.to_container(node, resolve=True))
    except OmegaConfBaseException as error:
        raise ValueError(f"the `launcher` node does not hold {schema.__name__}: {error}") from error
    return OmegaConf.to_object(merged)
