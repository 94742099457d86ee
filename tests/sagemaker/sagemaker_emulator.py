"""The emulated AWS side of the SageMaker launcher tests: constants, captured requests, running train.py."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = "launcher-tests"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerTraining"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/robot-rl:test"
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


def sagemaker_args(*extra: str) -> list[str]:
    """The command line of a toy run sent to the emulator, plus `extra`."""
    return [
        "launcher=sagemaker",
        "task=toy",
        f"launcher.role={ROLE}",
        f"launcher.image_uri={IMAGE}",
        f"launcher.output_path=s3://{BUCKET}/robot-rl",
        "launcher.poll_interval_s=0.01",
        *extra,
    ]
