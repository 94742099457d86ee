"""The emulated AWS side of the SageMaker launcher tests: constants, captured requests, running train.py, and
playing a job's container the way SageMaker runs it.

A job is played as SageMaker plays it: its input channels are downloaded from the emulator's S3 into an
`/opt/ml`-style folder, its checkpoint URI is restored into the checkpoint folder, its command runs with the job's
environment, and the checkpoint folder is synced back to S3 afterwards. The SDK's scripts name `/opt/ml` literally;
they are run with that prefix pointed at a temporary folder.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = "launcher-tests"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerTraining"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/rlforge:test"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Aws:
    """The emulated AWS account of one test, and what the launcher sent to it."""

    endpoint: str
    created_jobs: list[dict] = field(default_factory=list)
    """Full CreateTrainingJob requests as the SDK sent them (moto keeps only some fields)."""
    on_create: list[Any] = field(default_factory=list)
    """Callables run with the job name right after each job is created."""

    def client(self, service: str):
        import boto3

        return boto3.Session(region_name=REGION).client(service)

    def keys(self, prefix: str = "") -> list[str]:
        s3 = self.client("s3")
        try:
            answer = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        except s3.exceptions.NoSuchBucket:
            return []
        return [item["Key"] for item in answer.get("Contents", [])]

    def read(self, key: str) -> bytes:
        return self.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def backend_job(self, name: str):
        """moto's own record of a training job, to move it to a status real jobs reach."""
        return self.all_backend_jobs_by_name()[name]

    def all_backend_jobs_by_name(self) -> dict:
        from moto.backends import get_backend

        return get_backend("sagemaker")[ACCOUNT][REGION].training_jobs

    def all_backend_jobs(self) -> list:
        return list(self.all_backend_jobs_by_name().values())


def run_train(args: list[str], monkeypatch, cwd: Path) -> int:
    """Run `python train.py <args>` in this process (so the moto server and capture hooks apply).

    Returns the exit status Hydra would give the shell.
    """
    import runpy

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [str(REPO_ROOT / "train.py"), *args])
    try:
        runpy.run_path(str(REPO_ROOT / "train.py"), run_name="__main__")
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0


def sagemaker_args(*extra: str, task: str = "toy") -> list[str]:
    """The command line of a run of `task` (the toy task by default) sent to the emulator, plus `extra`."""
    return [
        "launcher=sagemaker",
        f"task={task}",
        f"launcher.role={ROLE}",
        f"launcher.image_uri={IMAGE}",
        f"launcher.output_path=s3://{BUCKET}/rlforge",
        "launcher.poll_interval_s=0.01",
        *extra,
    ]


def command_of(aws, request) -> list[str]:
    """The command line the job's sm_train.sh runs, read back from the uploaded drivers."""
    channel = next(c for c in request["InputDataConfig"] if c["ChannelName"] == "sm_drivers")
    key = channel["DataSource"]["S3DataSource"]["S3Uri"].split(f"s3://{BUCKET}/", 1)[1]
    script = aws.read(f"{key}/sm_train.sh").decode()
    body = script.split("<<'SAGEMAKER_BASE_COMMAND_EOF'\n", 1)[1].split("\nSAGEMAKER_BASE_COMMAND_EOF", 1)[0]
    return shlex.split(body)


PYTHON_BIN = Path(sys.executable).parent
CONTAINER_AWS_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_EC2_METADATA_DISABLED",
)


def s3_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def download_prefix(aws, uri: str, destination: Path) -> int:
    """Copy every object under an S3 prefix (S3Prefix semantics) into `destination`."""
    bucket, prefix = s3_key(uri)
    s3 = aws.client("s3")
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix) :].lstrip("/") or Path(item["Key"]).name
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(target))
            count += 1
    return count


def upload_folder(aws, folder: Path, uri: str) -> None:
    bucket, prefix = s3_key(uri)
    s3 = aws.client("s3")
    for path in folder.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(folder)}")


def lay_out_job(aws, request: dict, work: Path) -> tuple[list[str], dict[str, str]]:
    """Lay out `<work>/opt_ml` from the emulated S3 as SageMaker does; return the container's command and environment."""
    root = work / "opt_ml"
    for name in ("model", "output", "checkpoints", "input/config"):
        (root / name).mkdir(parents=True, exist_ok=True)
    channels = {}
    for channel in request["InputDataConfig"]:
        name = channel["ChannelName"]
        assert download_prefix(aws, channel["DataSource"]["S3DataSource"]["S3Uri"], root / "input/data" / name) > 0
        channels[name] = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
    # SageMaker restores the checkpoint URI into the checkpoint folder before the job starts.
    download_prefix(aws, request["CheckpointConfig"]["S3Uri"], root / "checkpoints")
    resources = {
        "current_host": "algo-1",
        "current_instance_type": request["ResourceConfig"]["InstanceType"],
        "hosts": ["algo-1"],
        "network_interface_name": "eth0",
    }
    (root / "input/config/resourceconfig.json").write_text(json.dumps(resources))
    (root / "input/config/inputdataconfig.json").write_text(json.dumps(channels))
    (root / "input/config/hyperparameters.json").write_text(json.dumps(request.get("HyperParameters", {})))
    for path in (root / "input/data/sm_drivers").rglob("*"):
        if path.is_file() and path.suffix in (".sh", ".py"):
            path.write_text(path.read_text().replace("/opt/ml", str(root)))

    command = [*request["AlgorithmSpecification"]["ContainerEntrypoint"]]
    command += [arg.replace("/opt/ml", str(root)) for arg in request["AlgorithmSpecification"]["ContainerArguments"]]
    environment = {
        "PATH": f"{PYTHON_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work),
        "TRAINING_JOB_NAME": request["TrainingJobName"],
        # SageMaker hands the container the job role's credentials and its region; here, the emulator's.
        **{name: os.environ[name] for name in CONTAINER_AWS_VARIABLES if name in os.environ},
        **request.get("Environment", {}),
    }
    return command, environment


def sync_checkpoints(aws, request: dict, work: Path) -> None:
    """SageMaker keeps the checkpoint URI in sync with the checkpoint folder."""
    upload_folder(aws, work / "opt_ml/checkpoints", request["CheckpointConfig"]["S3Uri"])


def play_job(aws, request: dict, work: Path) -> subprocess.CompletedProcess:
    """Run one Training Job's container command on this machine, as SageMaker would."""
    command, environment = lay_out_job(aws, request, work)
    result = subprocess.run(command, cwd=work, env=environment, capture_output=True, text=True, timeout=420)
    sync_checkpoints(aws, request, work)
    return result
