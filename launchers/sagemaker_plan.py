"""Planning SageMaker Training Jobs, without AWS: from each run's settings and overrides to the request the job is
created with.

A job's request (:func:`trainer_request`) is the keyword arguments of the SageMaker SDK's `ModelTrainer`, as plain
data; `launchers.sagemaker_aws.create_training_job` hands exactly this dict to the SDK, and a dry run prints exactly
this dict (`launchers.sagemaker_dry_run`). The SDK adds what it owns: a timestamp to the job name and the channel of
its own scripts (`sm_drivers`, whose `sm_train.sh` runs `source_code.command` with `source_code.args`).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.ledger import SUBMITTED_AT_ENV
from launchers.sagemaker_source import SourcePackage
from launchers.settings import SageMakerSettings

CONTAINER_CHECKPOINT_DIR = "/opt/ml/checkpoints"
"""Where SageMaker keeps the checkpoint S3 URI in sync (and restores it after a Spot restart)."""

ENTRY_COMMAND = "exec python3 -m launchers.sagemaker_entry"
"""Command the container runs from the unpacked source; its arguments follow.

The SDK's sm_train.sh runs it with `eval` from the shell that is the container's PID 1. `exec` puts the entry
in that shell's place: a stop or Spot interruption signals PID 1 alone, and a shell, which has no handler for
SIGTERM, would never receive it (a PID namespace's init gets only the signals it handles)."""

JOB_NAME_LIMIT = 63
"""SageMaker's limit on a training job name."""

SDK_NAME_SUFFIX = len("-YYYYmmddHHMMSS")
"""The SDK appends a timestamp of this length to the base job name it is given."""

UNKNOWN_REGION = "<region>"
"""The region a dry run names when neither the settings nor the environment give one."""

# Overrides that select or configure where a run goes, not what it computes; the job must
# not carry them, or the container would submit the run again instead of training.
_LAUNCH_ONLY_KEYS = ("launcher", "hydra")
# The container decides whether to resume from what its checkpoint folder holds.
_CONTAINER_DECIDES_KEYS = ("resume",)


class LaunchError(RuntimeError):
    """A setting or the AWS state forbids the launch; raised before anything is uploaded."""


@dataclass
class PlannedJob:
    """One training run to become one Training Job."""

    job_num: int
    """Index of the run in its sweep."""
    settings: SageMakerSettings
    """The run's launcher settings (a sweep may vary them per point)."""
    overrides: list[str]
    """The run's command-line overrides as Hydra received them."""
    task_name: str = "run"
    """Name of the task, used in the default job name."""
    resume: bool = False
    """Whether the run asked to continue an existing run (`resume=...` not false)."""
    record_dir: Path | None = None
    """Local folder where the submission record of this run is written; None writes none."""


@dataclass
class SubmittedJob:
    """A planned job with the names, locations and request it was given; its name and final state once created and
    followed."""

    planned: PlannedJob
    stem: str
    """Unique base of the job name; the SDK appends a timestamp to it."""
    checkpoint_s3_uri: str
    """S3 URI SageMaker keeps in sync with the container's checkpoint folder (the run directory's parent)."""
    output_s3_uri: str
    """S3 URI under which SageMaker stores the job's model and output."""
    container_overrides: list[str]
    """The overrides train.py runs with in the container."""
    environment: dict[str, str]
    """The container's environment, secrets included."""
    tags: dict[str, str]
    """Tags of the job, besides the git commit of the source."""
    kernel_cache_uri: str | None = None
    """The shared kernel cache's S3 prefix the container fetches from and writes back to; None: off."""
    request: dict[str, Any] = field(default_factory=dict)
    """The `ModelTrainer` keyword arguments the job is created with (:func:`trainer_request`)."""
    name: str | None = None
    """The Training Job name, known once the job is created."""
    final: dict[str, Any] = field(default_factory=dict)
    """The last DescribeTrainingJob answer, once followed to a terminal status."""


def override_key(override: str) -> str:
    """The config key an override sets: `+a.b=1` -> `a.b`, `launcher=sagemaker` -> `launcher`."""
    key = override.split("=", 1)[0].lstrip("+~")
    return key.split("@", 1)[0]


def container_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides the container passes to train.py: all but the launch-only ones, in order."""
    kept = []
    for override in overrides:
        key = override_key(override)
        head = re.split(r"[./]", key, maxsplit=1)[0]
        if head in _LAUNCH_ONLY_KEYS or key in _CONTAINER_DECIDES_KEYS:
            continue
        kept.append(override)
    return kept


def sanitize_name(text: str) -> str:
    """Lower-case letters, digits and single hyphens, as SageMaker names allow."""
    text = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()
    return re.sub(r"-+", "-", text) or "run"


def job_stem(base: str, launch_token: str, job_num: int) -> str:
    """A base job name unique to this launch and point that fits SageMaker's 63 characters.

    The SDK appends `-YYYYmmddHHMMSS`; the launch token (random per submission) and the point
    number keep two points submitted in the same second, or two sweeps, apart.
    """
    tail = f"-{launch_token}-{job_num}"
    room = JOB_NAME_LIMIT - SDK_NAME_SUFFIX - len(tail)
    if room < 1:
        raise LaunchError(f"sweep point number {job_num} is too large for a job name")
    head = sanitize_name(base)[:room].rstrip("-") or "run"
    return f"{head}{tail}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key prefix without slashes at its ends) of an s3:// URI."""
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?", uri or "")
    if not match:
        raise LaunchError(f"not an S3 URI of the form s3://bucket/prefix: {uri!r}")
    return match.group(1), (match.group(2) or "").strip("/")


def console_url(region: str, job_name: str) -> str:
    """Link to the job's page in the SageMaker console."""
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{job_name}"


def check_settings(settings: SageMakerSettings) -> None:
    """Refuse settings SageMaker would reject or that make no sense, with what to change."""
    problems = []
    if not settings.role:
        problems.append("launcher.role is required: the ARN of the IAM role SageMaker runs the job as")
    elif not re.fullmatch(r"arn:aws[a-z\-]*:iam::\d{12}:role/.+", settings.role):
        problems.append(f"launcher.role must be an IAM role ARN, got {settings.role!r}")
    if not settings.image_uri:
        problems.append("launcher.image_uri is required: the ECR URI of the image from docker/Dockerfile")
    if settings.instance_count < 1:
        problems.append(f"launcher.instance_count must be at least 1, got {settings.instance_count}")
    if settings.processes_per_instance is not None and settings.processes_per_instance < 1:
        problems.append("launcher.processes_per_instance must be at least 1 or null")
    if settings.volume_size_gb < 1:
        problems.append(f"launcher.volume_size_gb must be at least 1, got {settings.volume_size_gb}")
    if settings.max_runtime_s < 1:
        problems.append(f"launcher.max_runtime_s must be positive, got {settings.max_runtime_s}")
    if settings.spot and settings.max_wait_s is not None and settings.max_wait_s < settings.max_runtime_s:
        problems.append(
            f"launcher.max_wait_s ({settings.max_wait_s}) must be at least launcher.max_runtime_s "
            f"({settings.max_runtime_s}): it counts the training time too"
        )
    if not settings.spot and settings.max_wait_s is not None:
        problems.append("launcher.max_wait_s applies to Spot jobs only: set launcher.spot=true or leave it null")
    if settings.keep_alive_s < 0:
        problems.append("launcher.keep_alive_s must not be negative")
    if settings.keep_alive_s and settings.spot:
        problems.append("launcher.keep_alive_s (warm pools) cannot be combined with launcher.spot=true")
    if bool(settings.subnets) != bool(settings.security_group_ids):
        problems.append("launcher.subnets and launcher.security_group_ids must be given together")
    if settings.max_parallel_jobs < 1:
        problems.append("launcher.max_parallel_jobs must be at least 1")
    if settings.poll_interval_s <= 0:
        problems.append("launcher.poll_interval_s must be positive")
    cache = settings.kernel_cache_s3_uri
    if cache and "://" in cache and not cache.startswith("s3://"):
        problems.append(
            f"launcher.kernel_cache_s3_uri must be an s3:// URI or a prefix relative to launcher.output_path, "
            f"got {cache!r}: a Training Job reads its kernel cache from S3"
        )
    uri_fields = ["output_path", "checkpoint_s3_uri"]
    if cache and cache.startswith("s3://"):
        uri_fields.append("kernel_cache_s3_uri")
    for uri_field in uri_fields:
        value = getattr(settings, uri_field)
        if value is not None:
            try:
                parse_s3_uri(value)
            except LaunchError as error:
                problems.append(f"launcher.{uri_field}: {error}")
    for key in settings.tags:
        if key.lower().startswith("aws:"):
            problems.append(f"launcher.tags: keys starting with 'aws:' are reserved ({key})")
    clashing = sorted(set(settings.secret_env) & set(settings.environment))
    if clashing:
        problems.append(f"names in both launcher.environment and launcher.secret_env: {clashing}")
    if problems:
        raise LaunchError("SageMaker launch refused:\n  - " + "\n  - ".join(problems))


def kernel_cache_uri(settings: SageMakerSettings, output_path: str) -> str | None:
    """The S3 prefix of the shared kernel cache: `launcher.kernel_cache_s3_uri` as given, or relative to the output
    path; None when it is off (null or empty)."""
    value = (settings.kernel_cache_s3_uri or "").strip()
    if not value:
        return None
    if value.startswith("s3://"):
        return value.rstrip("/")
    return f"{output_path.rstrip('/')}/{value.strip('/')}"


def secret_values(names: Sequence[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Values of the named variables from the submitter's environment; all must be set."""
    environ = os.environ if environ is None else environ
    missing = [name for name in names if not environ.get(name)]
    if missing:
        raise LaunchError(
            f"launcher.secret_env names variables not set in this environment: {missing}; export them before submitting"
        )
    return {name: environ[name] for name in names}


def dry_run_location(settings: SageMakerSettings, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Region and output path of a dry run, which asks AWS nothing: the settings' or the environment's region, and
    the settings' output path or the default bucket's name with the account left as `<account>`."""
    environ = os.environ if environ is None else environ
    region = settings.region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or UNKNOWN_REGION
    output_path = settings.output_path or f"s3://sagemaker-{region}-<account>/{sanitize_name(settings.project_name)}"
    return region, output_path.rstrip("/")


def source_s3_uri(output_path: str, source: SourcePackage) -> str:
    """Where the source package is uploaded: one object per distinct content under `<output_path>/source/`."""
    return f"{output_path.rstrip('/')}/source/{source.sha256[:16]}/source.tar.gz"


def git_commit_tag(source: SourcePackage) -> str:
    """The `git-commit` tag of the jobs: the source's commit, shortened, marked `-dirty` with uncommitted files."""
    return source.git_commit[:12] + ("-dirty" if source.git_dirty else "")


def plan_jobs(
    planned: Sequence[PlannedJob],
    *,
    region: str,
    output_path: str,
    source: SourcePackage,
    launch_token: str | None = None,
    submitted_at: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[SubmittedJob]:
    """Names, S3 locations, environment, tags and request of every job, the source package uploaded under
    `output_path`; asks AWS nothing.

    Raises LaunchError when a secret is not set or when two runs would share a checkpoint URI.
    """
    token = launch_token or secrets.token_hex(3)
    submitted_at = time.time() if submitted_at is None else submitted_at
    output_path = output_path.rstrip("/")
    jobs = []
    for job in planned:
        settings = job.settings
        base = settings.base_job_name or f"{settings.project_name}-{job.task_name}"
        stem = job_stem(base, token, job.job_num)
        run_prefix = f"{output_path}/{stem}"
        environment = {"PYTHONUNBUFFERED": "1", SUBMITTED_AT_ENV: str(submitted_at)}
        if region != UNKNOWN_REGION:
            # SageMaker does not tell the container its region; the kernel cache's S3 client (and any other AWS
            # client in the job) then uses the job's regional endpoints, which a VPC's S3 endpoint serves.
            environment["AWS_DEFAULT_REGION"] = region
        environment.update(settings.environment)
        environment.update(secret_values(settings.secret_env, environ))
        submitted = SubmittedJob(
            planned=job,
            stem=stem,
            checkpoint_s3_uri=(settings.checkpoint_s3_uri or f"{run_prefix}/checkpoints").rstrip("/"),
            output_s3_uri=f"{run_prefix}/output",
            container_overrides=container_overrides(job.overrides),
            environment=environment,
            tags={"task": sanitize_name(job.task_name), "launch": token, **settings.tags},
            kernel_cache_uri=kernel_cache_uri(settings, output_path),
        )
        submitted.request = trainer_request(submitted, source_s3_uri(output_path, source), git_commit_tag(source))
        jobs.append(submitted)
    by_uri: dict[str, list[int]] = {}
    for job in jobs:
        by_uri.setdefault(job.checkpoint_s3_uri, []).append(job.planned.job_num)
    shared = {uri: nums for uri, nums in by_uri.items() if len(nums) > 1}
    if shared:
        uri, nums = next(iter(shared.items()))
        raise LaunchError(
            f"sweep points {nums} would share the checkpoint URI {uri}; leave "
            "launcher.checkpoint_s3_uri unset so each run gets its own"
        )
    return jobs


def entry_arguments(job: SubmittedJob) -> list[str]:
    """The arguments of `ENTRY_COMMAND` for this job: the checkpoint folder, the kernel cache, processes per
    instance, overrides."""
    arguments = ["--checkpoint-dir", CONTAINER_CHECKPOINT_DIR]
    if job.kernel_cache_uri:
        arguments += ["--kernel-cache", job.kernel_cache_uri]
    if job.planned.settings.processes_per_instance is not None:
        arguments += ["--processes-per-instance", str(job.planned.settings.processes_per_instance)]
    return [*arguments, "--", *job.container_overrides]


def trainer_request(job: SubmittedJob, source_uri: str, git_commit: str) -> dict[str, Any]:
    """The keyword arguments of the SDK's `ModelTrainer` that creates this job, as plain data: each nested dict holds
    the fields of the SDK's config class of that name (`compute` of `Compute`, ...), `tags` the fields of its `Tag`s.
    """
    settings = job.planned.settings
    max_wait = None
    if settings.spot:
        max_wait = settings.max_wait_s if settings.max_wait_s is not None else 2 * settings.max_runtime_s
    networking = None
    if settings.subnets:
        networking = {"subnets": list(settings.subnets), "security_group_ids": list(settings.security_group_ids)}
    return {
        "role": settings.role,
        "training_image": settings.image_uri,
        "base_job_name": job.stem,
        "source_code": {"source_dir": source_uri, "command": ENTRY_COMMAND, "args": entry_arguments(job)},
        "compute": {
            "instance_type": settings.instance_type,
            "instance_count": settings.instance_count,
            "volume_size_in_gb": settings.volume_size_gb,
            "enable_managed_spot_training": True if settings.spot else None,
            "keep_alive_period_in_seconds": settings.keep_alive_s or None,
        },
        "stopping_condition": {"max_runtime_in_seconds": settings.max_runtime_s, "max_wait_time_in_seconds": max_wait},
        "checkpoint_config": {"s3_uri": job.checkpoint_s3_uri, "local_path": CONTAINER_CHECKPOINT_DIR},
        "output_data_config": {"s3_output_path": job.output_s3_uri},
        "networking": networking,
        "environment": dict(job.environment),
        "tags": [{"key": key, "value": str(value)} for key, value in {**job.tags, "git-commit": git_commit}.items()],
    }
