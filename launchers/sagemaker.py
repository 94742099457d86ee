"""Plans, submits and follows SageMaker Training Jobs for composed training runs.

The Hydra plugin in `hydra_plugins/sagemaker_launcher` turns each sweep point into a
`PlannedJob`; this module checks every setting before anything is uploaded, packages and
uploads the source once, creates one Training Job per point with the SageMaker Python SDK v3
(`sagemaker-train`'s `ModelTrainer`) and, if asked, follows the jobs to their end. boto3 and
the SDK are imported inside the functions that use them, so composing a config stays fast.

Following a job also keeps its record on the submit host up to date: `sagemaker_job.json` next to the sweep
point's composed config gains SageMaker's own timeline of the job (DescribeTrainingJob's status transitions,
training and billable time), and once the job has ended the run's ledger, metrics and manifest are copied there from
the checkpoint URI, so that `scripts/report.py` reads one folder for the whole account of the job.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.accounting import SAGEMAKER_RECORD
from core.ledger import LEDGER
from core.rundir import MANIFEST, METRICS, METRICS_REDONE, write_bytes_atomic, write_json_atomic
from hydra_plugins.sagemaker_launcher.config import SageMakerSettings
from launchers.sagemaker_entry import RUN_DIR_NAME
from launchers.sagemaker_source import SourcePackage, SourcePackageError, package_source

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""The work tree this launcher ships by default."""

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

TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")

RUN_RECORDS = (LEDGER, METRICS, METRICS_REDONE, MANIFEST, "summary.json", "overrides.yaml")
"""Files of the run directory copied next to the submission record once a followed job has ended: what the report
reads. The composed config stays the submit host's own (it names the launcher and the instances)."""

# Overrides that select or configure where a run goes, not what it computes; the job must
# not carry them, or the container would submit the run again instead of training.
_LAUNCH_ONLY_KEYS = ("launcher", "hydra")
# The container decides whether to resume from what its checkpoint folder holds.
_CONTAINER_DECIDES_KEYS = ("resume",)


class LaunchError(RuntimeError):
    """A setting or the AWS state forbids the launch; raised before anything is uploaded."""


class JobsFailed(RuntimeError):
    """One or more followed jobs ended in a status other than Completed."""


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
    """A planned job with the names and locations it was given."""

    planned: PlannedJob
    stem: str
    """Unique base of the job name; the SDK appends a timestamp to it."""
    run_prefix: str
    """S3 URI under which this run's output (and, by default, checkpoints) live."""
    checkpoint_s3_uri: str
    output_s3_uri: str
    container_overrides: list[str]
    environment: dict[str, str]
    tags: dict[str, str]
    kernel_cache_uri: str | None = None
    """The shared kernel cache's S3 prefix the container fetches from and writes back to; None: off."""
    name: str | None = None
    """The Training Job name, known once the job is created."""
    final: dict[str, Any] = field(default_factory=dict)
    """The last DescribeTrainingJob answer, once followed to a terminal status."""


# --------------------------------------------------------------------------------------
# Pure helpers: names, overrides, settings checks.
# --------------------------------------------------------------------------------------


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


def secret_values(names: Sequence[str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """Values of the named variables from the submitter's environment; all must be set."""
    environ = os.environ if environ is None else environ
    missing = [name for name in names if not environ.get(name)]
    if missing:
        raise LaunchError(
            f"launcher.secret_env names variables not set in this environment: {missing}; export them before submitting"
        )
    return {name: environ[name] for name in names}


# --------------------------------------------------------------------------------------
# AWS side.
# --------------------------------------------------------------------------------------


def open_boto_session(settings: SageMakerSettings):
    """A boto3 session for the settings' profile and region, with credentials present."""
    import boto3
    import botocore.exceptions

    try:
        boto_session = boto3.Session(profile_name=settings.profile, region_name=settings.region)
    except botocore.exceptions.ProfileNotFound as error:
        raise LaunchError(f"launcher.profile: {error}") from error
    if not boto_session.region_name:
        raise LaunchError(
            "no AWS region: set launcher.region, AWS_REGION/AWS_DEFAULT_REGION, or a region in the AWS profile"
        )
    if boto_session.get_credentials() is None:
        raise LaunchError(
            "no AWS credentials found: run `aws configure` or `aws sso login`, set AWS_PROFILE or "
            "launcher.profile, or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    return boto_session


def sdk_config_without_telemetry() -> dict:
    """The user's SageMaker SDK defaults with the SDK's telemetry turned off.

    `ModelTrainer.train` otherwise reports to a public AWS host besides the API endpoint.
    """
    from sagemaker.core.config.config import load_sagemaker_config

    config = load_sagemaker_config() or {}
    config.setdefault("SchemaVersion", "1.0")
    modules = config.setdefault("SageMaker", {}).setdefault("PythonSDK", {}).setdefault("Modules", {})
    modules["TelemetryOptOut"] = True
    return config


def open_sdk_session(boto_session, bucket: str, prefix: str):
    """A SageMaker SDK session storing under s3://bucket/prefix, telemetry off."""
    from sagemaker.core.helper.session_helper import Session

    return Session(
        boto_session=boto_session,
        default_bucket=bucket,
        default_bucket_prefix=prefix or None,
        sagemaker_config=sdk_config_without_telemetry(),
    )


def default_output_path(boto_session, settings: SageMakerSettings) -> str:
    """s3://sagemaker-<region>-<account>/<project>, the bucket the SDK itself would pick."""
    import botocore.exceptions

    try:
        account = boto_session.client("sts").get_caller_identity()["Account"]
    except botocore.exceptions.BotoCoreError as error:
        raise LaunchError(f"could not determine the AWS account for the default bucket: {error}") from error
    return f"s3://sagemaker-{boto_session.region_name}-{account}/{sanitize_name(settings.project_name)}"


def s3_prefix_in_use(s3_client, uri: str) -> bool:
    """Whether any object lies under the S3 prefix `uri`."""
    import botocore.exceptions

    bucket, prefix = parse_s3_uri(uri)
    try:
        answer = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1)
    except botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return False
        raise
    return answer.get("KeyCount", 0) > 0


def running_jobs_using(sagemaker_client, checkpoint_uri: str) -> list[str]:
    """Names of in-progress jobs that sync the given checkpoint URI."""
    wanted = checkpoint_uri.rstrip("/")
    users = []
    for page in sagemaker_client.get_paginator("list_training_jobs").paginate(StatusEquals="InProgress"):
        for summary in page.get("TrainingJobSummaries", []):
            name = summary["TrainingJobName"]
            described = sagemaker_client.describe_training_job(TrainingJobName=name)
            uri = described.get("CheckpointConfig", {}).get("S3Uri", "")
            if uri.rstrip("/") == wanted:
                users.append(name)
    return users


# --------------------------------------------------------------------------------------
# Planning and submission.
# --------------------------------------------------------------------------------------


@dataclass
class LaunchPlan:
    """Everything decided before the first upload."""

    jobs: list[SubmittedJob]
    region: str
    output_path: str
    source: SourcePackage
    source_s3_uri: str
    boto_session: Any = None


def plan_jobs(
    planned: Sequence[PlannedJob],
    *,
    boto_session=None,
    region: str = "<region>",
    output_path: str | None = None,
    launch_token: str | None = None,
    environ: dict[str, str] | None = None,
) -> list[SubmittedJob]:
    """Names, S3 locations, environment and tags of every job; checks checkpoint sharing.

    Raises LaunchError when two runs would share a checkpoint URI, or (given a boto session)
    when a named checkpoint URI already holds another run and the run does not resume it.
    """
    from core import ledger

    token = launch_token or secrets.token_hex(3)
    submitted_at = time.time()
    output_path = (output_path or "s3://sagemaker-<region>-<account>/rlforge").rstrip("/")
    jobs = []
    for job in planned:
        settings = job.settings
        base = settings.base_job_name or f"{settings.project_name}-{job.task_name}"
        stem = job_stem(base, token, job.job_num)
        run_prefix = f"{output_path}/{stem}"
        checkpoint = (settings.checkpoint_s3_uri or f"{run_prefix}/checkpoints").rstrip("/")
        environment = {"PYTHONUNBUFFERED": "1", ledger.SUBMITTED_AT_ENV: str(submitted_at)}
        if region != "<region>":
            # SageMaker does not tell the container its region; the kernel cache's S3 client (and any other AWS
            # client in the job) then uses the job's regional endpoints, which a VPC's S3 endpoint serves.
            environment["AWS_DEFAULT_REGION"] = region
        environment.update(settings.environment)
        environment.update(secret_values(settings.secret_env, environ))
        tags = {"task": sanitize_name(job.task_name), "launch": token, **settings.tags}
        jobs.append(
            SubmittedJob(
                planned=job,
                stem=stem,
                run_prefix=run_prefix,
                checkpoint_s3_uri=checkpoint,
                output_s3_uri=f"{run_prefix}/output",
                container_overrides=container_overrides(job.overrides),
                environment=environment,
                tags=tags,
                kernel_cache_uri=kernel_cache_uri(settings, output_path),
            )
        )
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
    if boto_session is not None:
        s3_client = boto_session.client("s3")
        for job in jobs:
            if not job.planned.settings.checkpoint_s3_uri:
                continue
            in_use = s3_prefix_in_use(s3_client, job.checkpoint_s3_uri)
            if in_use and not job.planned.resume:
                raise LaunchError(
                    f"checkpoint URI {job.checkpoint_s3_uri} already holds another run; pass resume=true "
                    "to continue that run, or choose an unused URI (or leave it unset)"
                )
            if in_use:
                users = running_jobs_using(boto_session.client("sagemaker"), job.checkpoint_s3_uri)
                if users:
                    raise LaunchError(
                        f"checkpoint URI {job.checkpoint_s3_uri} is being written by running job(s) {users}; "
                        "stop them before resuming that run"
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


def container_command(job: SubmittedJob) -> str:
    """The command line the job's sm_train.sh runs, written as the SDK writes it: the command's words, then
    each argument shell-quoted."""
    return " ".join([*ENTRY_COMMAND.split(), *(shlex.quote(argument) for argument in entry_arguments(job))])


def build_trainer(job: SubmittedJob, sdk_session, source_s3_uri: str, git_commit: str):
    """The ModelTrainer whose `train()` creates this job's Training Job."""
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        Networking,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
        Tag,
    )
    from sagemaker.train import ModelTrainer

    settings = job.planned.settings
    max_wait = None
    if settings.spot:
        max_wait = settings.max_wait_s if settings.max_wait_s is not None else 2 * settings.max_runtime_s
    networking = None
    if settings.subnets:
        networking = Networking(subnets=list(settings.subnets), security_group_ids=list(settings.security_group_ids))
    tags = [Tag(key=key, value=str(value)) for key, value in {**job.tags, "git-commit": git_commit}.items()]
    return ModelTrainer(
        sagemaker_session=sdk_session,
        role=settings.role,
        training_image=settings.image_uri,
        base_job_name=job.stem,
        source_code=SourceCode(source_dir=source_s3_uri, command=ENTRY_COMMAND, args=entry_arguments(job)),
        compute=Compute(
            instance_type=settings.instance_type,
            instance_count=settings.instance_count,
            volume_size_in_gb=settings.volume_size_gb,
            enable_managed_spot_training=True if settings.spot else None,
            keep_alive_period_in_seconds=settings.keep_alive_s or None,
        ),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=settings.max_runtime_s, max_wait_time_in_seconds=max_wait
        ),
        checkpoint_config=CheckpointConfig(s3_uri=job.checkpoint_s3_uri, local_path=CONTAINER_CHECKPOINT_DIR),
        output_data_config=OutputDataConfig(s3_output_path=job.output_s3_uri),
        networking=networking,
        environment=dict(job.environment),
        tags=tags,
    )


def describe_request(job: SubmittedJob, source: SourcePackage, source_s3_uri: str) -> str:
    """Human-readable request of one job, with secret values masked (for dry runs)."""
    settings = job.planned.settings
    secret_names = set(settings.secret_env)
    environment = {key: ("***" if key in secret_names else value) for key, value in job.environment.items()}
    lines = [
        f"job #{job.planned.job_num}: {job.stem}-<timestamp>",
        f"  image:       {settings.image_uri}",
        f"  role:        {settings.role}",
        f"  instances:   {settings.instance_count} x {settings.instance_type}, {settings.volume_size_gb} GB volume",
        f"  spot:        {settings.spot}"
        + (f" (max wait {settings.max_wait_s or 2 * settings.max_runtime_s} s)" if settings.spot else ""),
        f"  max runtime: {settings.max_runtime_s} s",
        f"  command:     {container_command(job)}",
        f"  source:      {source_s3_uri} ({source.size_bytes / 1e6:.2f} MB, {source.file_count} files)",
        f"  checkpoints: {job.checkpoint_s3_uri}",
        f"  output:      {job.output_s3_uri}",
        f"  kernels:     {job.kernel_cache_uri or 'not shared'}",
        f"  environment: {environment}",
        f"  tags:        {job.tags}",
    ]
    if settings.subnets:
        lines.append(
            f"  vpc:         subnets {list(settings.subnets)}, security groups {list(settings.security_group_ids)}"
        )
    if settings.keep_alive_s:
        lines.append(f"  keep-alive:  {settings.keep_alive_s} s")
    return "\n".join(lines)


def upload_source(boto_session, source: SourcePackage, source_s3_uri: str) -> None:
    """Upload the source tarball unless an object of the same content is already there."""
    import botocore.exceptions

    bucket, key = parse_s3_uri(source_s3_uri)
    s3_client = boto_session.client("s3")
    try:
        head = s3_client.head_object(Bucket=bucket, Key=key)
        if head.get("ContentLength") == source.size_bytes:
            log.info("source already uploaded at %s", source_s3_uri)
            return
    except botocore.exceptions.ClientError:
        pass
    s3_client.upload_file(str(source.path), bucket, key)


def write_record(job: SubmittedJob, region: str, source_s3_uri: str) -> None:
    """Leave, next to the local sweep output, what identifies and reproduces the job."""
    if job.planned.record_dir is None:
        return
    record = {
        "training_job_name": job.name,
        "region": region,
        "console_url": console_url(region, job.name or ""),
        "checkpoint_s3_uri": job.checkpoint_s3_uri,
        "output_s3_uri": job.output_s3_uri,
        "source_s3_uri": source_s3_uri,
        "kernel_cache_uri": job.kernel_cache_uri,
        "overrides": job.container_overrides,
        "tags": job.tags,
    }
    job.planned.record_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job.planned.record_dir / SAGEMAKER_RECORD, record)


def _seconds(value: Any) -> float | None:
    """A DescribeTrainingJob time (a datetime) as Unix seconds."""
    return value.timestamp() if hasattr(value, "timestamp") else None


def sagemaker_timeline(described: dict[str, Any]) -> dict[str, Any]:
    """What the report needs of a DescribeTrainingJob answer, as plain data with Unix-second times: status, the
    secondary status transitions (Starting, Downloading, Training, Uploading, ... each with its start and end),
    training and billable seconds, Spot, instances."""
    resources = described.get("ResourceConfig") or {}
    return {
        "status": described.get("TrainingJobStatus"),
        "secondary_status": described.get("SecondaryStatus"),
        "failure_reason": described.get("FailureReason"),
        "creation_time": _seconds(described.get("CreationTime")),
        "training_start_time": _seconds(described.get("TrainingStartTime")),
        "training_end_time": _seconds(described.get("TrainingEndTime")),
        "training_time_s": described.get("TrainingTimeInSeconds"),
        "billable_time_s": described.get("BillableTimeInSeconds"),
        "spot": bool(described.get("EnableManagedSpotTraining")),
        "instance_type": resources.get("InstanceType"),
        "instance_count": resources.get("InstanceCount"),
        "transitions": [
            {
                "status": transition.get("Status"),
                "start": _seconds(transition.get("StartTime")),
                "end": _seconds(transition.get("EndTime")),
                "message": transition.get("StatusMessage"),
            }
            for transition in described.get("SecondaryStatusTransitions") or []
        ],
        "described_at": time.time(),
    }


def record_timeline(record_dir: Path, job_name: str | None, described: dict[str, Any]) -> None:
    """Add SageMaker's timeline of the job to its record (`sagemaker_job.json`), replacing an older one."""
    import json

    path = record_dir / SAGEMAKER_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {"training_job_name": job_name}
    record["sagemaker"] = sagemaker_timeline(described)
    write_json_atomic(path, record)


def collect_run_records(s3_client, checkpoint_s3_uri: str, record_dir: Path) -> list[str]:
    """Copy the run's ledger, metrics and manifest from the checkpoint URI next to the submission record, where
    `scripts/report.py` reads them with SageMaker's timeline; returns the names copied (missing ones are skipped)."""
    import botocore.exceptions

    bucket, prefix = parse_s3_uri(checkpoint_s3_uri)
    copied = []
    for name in RUN_RECORDS:
        key = "/".join(part for part in (prefix, RUN_DIR_NAME, name) if part)
        try:
            data = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except botocore.exceptions.ClientError:
            continue
        write_bytes_atomic(record_dir / name, data)
        copied.append(name)
    return copied


def update_record(s3_client, record_dir: Path, job_name: str, checkpoint_s3_uri: str, described: dict) -> None:
    """Keep the job's timeline in its record, and once it has ended, copy the run's records next to it."""
    record_timeline(record_dir, job_name, described)
    if described.get("TrainingJobStatus") in TERMINAL_STATUSES:
        copied = collect_run_records(s3_client, checkpoint_s3_uri, record_dir)
        log.info("%s: copied %s to %s", job_name, ", ".join(copied) or "nothing", record_dir)


def follow_up(boto_session) -> Callable[[SubmittedJob, dict[str, Any]], None]:
    """What to do with each answer while following a job: `update_record`. A failure here is logged; it never
    changes the launch's outcome."""
    s3_client = boto_session.client("s3")

    def on_answer(job: SubmittedJob, described: dict[str, Any]) -> None:
        if job.planned.record_dir is None or job.name is None:
            return
        try:
            update_record(s3_client, job.planned.record_dir, job.name, job.checkpoint_s3_uri, described)
        except Exception as error:  # noqa: BLE001 - the record is a convenience; the job's outcome stands
            log.warning("%s: could not update the record in %s: %s", job.name, job.planned.record_dir, error)

    return on_answer


def update_records(folder: Path, profile: str | None = None) -> int:
    """Update every job record under `folder` (a sweep's output, or one point) from DescribeTrainingJob and the
    job's checkpoint URI, as following the job would have; for jobs submitted without `launcher.wait`. Returns how
    many records were updated."""
    import json

    import boto3

    updated = 0
    for path in sorted(Path(folder).rglob(SAGEMAKER_RECORD)):
        record = json.loads(path.read_text())
        session = boto3.Session(profile_name=profile, region_name=record.get("region"))
        described = session.client("sagemaker").describe_training_job(TrainingJobName=record["training_job_name"])
        update_record(
            session.client("s3"), path.parent, record["training_job_name"], record["checkpoint_s3_uri"], described
        )
        print(f"{path.parent}: {record['training_job_name']} {described['TrainingJobStatus']}")
        updated += 1
    return updated


def launch(
    planned: Sequence[PlannedJob],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> list[SubmittedJob]:
    """Check, package, upload, submit and (with `wait`) follow the jobs of one launch.

    All checks run before the first upload. Settings are read from the first job for what is
    shared by the launch (region, profile, output path, source, wait, parallelism).

    Raises:
        LaunchError: a setting or the AWS state forbids the launch (nothing was uploaded).
        JobsFailed: with `wait`, a job ended Failed or Stopped.
    """
    if not planned:
        return []
    shared = planned[0].settings
    for job in planned:
        check_settings(job.settings)
    source_root = Path(shared.source_dir).resolve() if shared.source_dir else PROJECT_ROOT
    max_bytes = int(shared.max_source_mb * 1e6)

    with tempfile.TemporaryDirectory(prefix="sagemaker-source-") as staging:
        try:
            source = package_source(source_root, Path(staging) / "source.tar.gz", max_bytes)
        except SourcePackageError as error:
            raise LaunchError(str(error)) from error
        git_commit = source.git_commit[:12] + ("-dirty" if source.git_dirty else "")
        log.info("source package: %.2f MB, %d files, commit %s", source.size_bytes / 1e6, source.file_count, git_commit)

        if shared.dry_run:
            region = shared.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "<region>"
            output_path = (
                shared.output_path or f"s3://sagemaker-{region}-<account>/{sanitize_name(shared.project_name)}"
            )
            source_uri = f"{output_path.rstrip('/')}/source/{source.sha256[:16]}/source.tar.gz"
            jobs = plan_jobs(planned, region=region, output_path=output_path)
            for job in jobs:
                log.info("dry run, nothing sent:\n%s", describe_request(job, source, source_uri))
            return jobs

        boto_session = open_boto_session(shared)
        region = boto_session.region_name
        output_path = (shared.output_path or default_output_path(boto_session, shared)).rstrip("/")
        jobs = plan_jobs(planned, boto_session=boto_session, region=region, output_path=output_path)
        source_uri = f"{output_path}/source/{source.sha256[:16]}/source.tar.gz"

        # Everything is checked: from here on, things are uploaded and created.
        bucket, prefix = parse_s3_uri(output_path)
        sdk_session = open_sdk_session(boto_session, bucket, prefix)
        sdk_session.default_bucket()
        upload_source(boto_session, source, source_uri)
        log.info("source uploaded to %s", source_uri)

        tracker = JobTracker(sdk_session.sagemaker_client, shared.poll_interval_s, sleep, follow_up(boto_session))
        for job in jobs:
            while tracker.running_count() >= job.planned.settings.max_parallel_jobs:
                tracker.poll_until_one_ends()
            trainer = build_trainer(job, sdk_session, source_uri, git_commit)
            trainer.train(wait=False, logs=False)
            job.name = trainer._latest_training_job.training_job_name
            tracker.add(job)
            write_record(job, region, source_uri)
            log.info(
                "submitted %s\n  console:     %s\n  checkpoints: %s\n  output:      %s\n  overrides:   %s",
                job.name,
                console_url(region, job.name),
                job.checkpoint_s3_uri,
                job.output_s3_uri,
                " ".join(job.container_overrides) or "(none)",
            )

        if shared.wait:
            tracker.poll_until_all_end()
            failed = [job for job in jobs if job.final.get("TrainingJobStatus") != "Completed"]
            if failed:
                reasons = "\n".join(
                    f"  {job.name}: {job.final.get('TrainingJobStatus')}: "
                    f"{job.final.get('FailureReason', 'no reason given')}"
                    for job in failed
                )
                raise JobsFailed(f"{len(failed)} of {len(jobs)} SageMaker job(s) did not complete:\n{reasons}")
        return jobs


class JobTracker:
    """Polls submitted jobs, logs their status changes and records their final state.

    `on_answer(job, described)` is called with each answer that shows a new status, and with the final one."""

    def __init__(
        self,
        sagemaker_client,
        poll_interval_s: float,
        sleep: Callable[[float], None],
        on_answer: Callable[[SubmittedJob, dict[str, Any]], None] | None = None,
    ):
        self.client = sagemaker_client
        self.poll_interval_s = poll_interval_s
        self.sleep = sleep
        self.on_answer = on_answer
        self.active: list[SubmittedJob] = []
        self.last_status: dict[str, str] = {}

    def add(self, job: SubmittedJob) -> None:
        self.active.append(job)

    def running_count(self) -> int:
        return len(self.active)

    def poll(self) -> None:
        """Describe every active job once; retire those in a terminal status."""
        still_active = []
        for job in self.active:
            described = self.client.describe_training_job(TrainingJobName=job.name)
            status = described["TrainingJobStatus"]
            shown = f"{status}/{described.get('SecondaryStatus', '')}"
            changed = self.last_status.get(job.name) != shown
            if changed:
                log.info("%s: %s", job.name, shown)
                self.last_status[job.name] = shown
            if self.on_answer is not None and (changed or status in TERMINAL_STATUSES):
                self.on_answer(job, described)
            if status in TERMINAL_STATUSES:
                job.final = described
            else:
                still_active.append(job)
        self.active = still_active

    def poll_until_one_ends(self) -> None:
        count = len(self.active)
        self.poll()
        while len(self.active) >= count:
            self.sleep(self.poll_interval_s)
            self.poll()

    def poll_until_all_end(self) -> None:
        self.poll()
        while self.active:
            self.sleep(self.poll_interval_s)
            self.poll()


def main(argv: Sequence[str] | None = None) -> int:
    """`records FOLDER`: bring the job records under FOLDER up to date (timeline, billable time, the run's files)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    records = commands.add_parser("records", help="update the sagemaker_job.json records under a folder")
    records.add_argument("folder", type=Path, help="a sweep's output folder (outputs/multirun/<time>) or one point")
    records.add_argument("--profile", help="named AWS profile (default: the default credential chain)")
    args = parser.parse_args(argv)
    found = update_records(args.folder, args.profile)
    if not found:
        print(f"no {SAGEMAKER_RECORD} under {args.folder}")
    return 0 if found else 1


if __name__ == "__main__":
    raise SystemExit(main())
