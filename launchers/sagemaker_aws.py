"""The AWS side of launching SageMaker Training Jobs: sessions, checks against S3 and SageMaker, the source upload, and
creating a job from its planned request with the SageMaker Python SDK v3 (`sagemaker-train`'s `ModelTrainer`).

boto3 and the SDK are imported inside the functions that use them, so composing a config stays fast.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from launchers.sagemaker_plan import LaunchError, SubmittedJob, parse_s3_uri, sanitize_name
from launchers.sagemaker_source import SourcePackage
from launchers.settings import SageMakerSettings

log = logging.getLogger(__name__)


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


def open_sdk_session(boto_session, output_path: str):
    """A SageMaker SDK session storing under the S3 URI `output_path` (its bucket created if missing), telemetry
    off."""
    from sagemaker.core.helper.session_helper import Session

    bucket, prefix = parse_s3_uri(output_path)
    sdk_session = Session(
        boto_session=boto_session,
        default_bucket=bucket,
        default_bucket_prefix=prefix or None,
        sagemaker_config=sdk_config_without_telemetry(),
    )
    sdk_session.default_bucket()
    return sdk_session


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


def check_checkpoint_uris(boto_session, jobs: Sequence[SubmittedJob]) -> None:
    """Refuse a named checkpoint URI that already holds another run the job does not resume, or that a running job
    is writing."""
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


def create_training_job(sdk_session, request: dict[str, Any]) -> str:
    """Create a Training Job with the SDK from its planned request (`launchers.sagemaker_plan.trainer_request`), the
    nested dicts turned into the SDK's config classes of the same names; returns the job's name."""
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

    config_classes = {
        "source_code": SourceCode,
        "compute": Compute,
        "stopping_condition": StoppingCondition,
        "checkpoint_config": CheckpointConfig,
        "output_data_config": OutputDataConfig,
        "networking": Networking,
    }
    arguments = {
        key: config_classes[key](**value) if key in config_classes and value is not None else value
        for key, value in request.items()
    }
    arguments["tags"] = [Tag(**tag) for tag in request["tags"]]
    arguments["environment"] = dict(request["environment"])
    trainer = ModelTrainer(sagemaker_session=sdk_session, **arguments)
    trainer.train(wait=False, logs=False)
    return trainer._latest_training_job.training_job_name
