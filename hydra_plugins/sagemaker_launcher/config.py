"""Typed settings of the SageMaker launcher, stored in Hydra's ConfigStore."""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from core.config import LauncherConfig


@dataclass
class SageMakerSettings(LauncherConfig):
    """What `launcher=sagemaker` sends to SageMaker; one instance per job of a sweep.

    Every field can be set on the command line as `launcher.<field>=<value>`.
    """

    name: str = "sagemaker"
    """Launcher name, recorded in the run's manifest."""

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
    """Tags put on every Training Job, besides the launcher's own (git commit, overrides)."""

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
    """Print each job's request and send nothing to AWS."""

    max_source_mb: float = 50.0
    """Refuse a source package larger than this many megabytes (compressed)."""

    source_dir: str | None = None
    """Git work tree whose tracked and trackable files are packaged; null is this project."""


@dataclass
class SageMakerLauncherConf:
    """The `hydra/launcher` node: it only names the plugin class, settings live in `launcher`."""

    _target_: str = "hydra_plugins.sagemaker_launcher.launcher.SageMakerLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="sagemaker", node=SageMakerLauncherConf)
ConfigStore.instance().store(group="launcher", name="sagemaker_schema", node=SageMakerSettings)
