"""The container side run for real: a job's captured request and uploaded source, laid out as SageMaker does.

Each job is played the way SageMaker plays it: its input channels are downloaded from the
emulator's S3 into an `/opt/ml`-style folder, its checkpoint URI is restored into the
checkpoint folder, its command runs with the job's environment, and the checkpoint folder is
synced back to S3 afterwards. The SDK's scripts name `/opt/ml` literally; they are run with
that prefix pointed at a temporary folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sagemaker_emulator import run_train, sagemaker_args

pytestmark = pytest.mark.sagemaker

PYTHON_BIN = Path(sys.executable).parent


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


def play_job(aws, request: dict, work: Path) -> subprocess.CompletedProcess:
    """Run one Training Job's container command on this machine, as SageMaker would."""
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
        **request.get("Environment", {}),
    }
    result = subprocess.run(command, cwd=work, env=environment, capture_output=True, text=True, timeout=420)
    # SageMaker keeps the checkpoint URI in sync with the checkpoint folder.
    upload_folder(aws, root / "checkpoints", request["CheckpointConfig"]["S3Uri"])
    return result


def ledger_events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def test_job_trains_in_the_container_layout_and_a_second_job_resumes(aws, monkeypatch, tmp_path):
    submit_dir = tmp_path / "submit"
    submit_dir.mkdir()
    common = ("algo.save_interval=1", "device=cpu", "task.num_envs=16")
    assert run_train(sagemaker_args("algo.max_iterations=2", *common), monkeypatch, submit_dir) == 0
    first = aws.created_jobs[-1]
    checkpoint_uri = first["CheckpointConfig"]["S3Uri"]

    played = play_job(aws, first, tmp_path / "job1")
    assert played.returncode == 0, played.stdout[-3000:] + played.stderr[-3000:]
    root = tmp_path / "job1/opt_ml"
    run_dir = root / "checkpoints/run"
    assert (run_dir / "checkpoints/model_2.pt").is_file()
    assert (root / "model/policy.pt").is_file() and (root / "model/model_2.pt").is_file()
    summary = json.loads((root / "model/summary.json").read_text())
    assert summary["iterations"] == 2
    overrides = (root / "model/overrides.yaml").read_text()
    assert "algo.max_iterations=2" in overrides and "launcher" not in overrides
    assert any(key.startswith("robot-rl/") and key.endswith("run/checkpoints/model_2.pt") for key in aws.keys())

    # Reusing that checkpoint URI without resume is refused before anything is uploaded ...
    keys_before = set(aws.keys())
    refused = run_train(
        sagemaker_args("algo.max_iterations=4", f"launcher.checkpoint_s3_uri={checkpoint_uri}", *common),
        monkeypatch,
        submit_dir,
    )
    assert refused != 0 and len(aws.created_jobs) == 1 and set(aws.keys()) == keys_before

    # ... and with resume=true a second job continues the run from iteration 2.
    assert (
        run_train(
            sagemaker_args(
                "algo.max_iterations=4", f"launcher.checkpoint_s3_uri={checkpoint_uri}", "resume=true", *common
            ),
            monkeypatch,
            submit_dir,
        )
        == 0
    )
    second = aws.created_jobs[-1]
    assert second["TrainingJobName"] != first["TrainingJobName"]
    assert second["CheckpointConfig"]["S3Uri"] == checkpoint_uri

    played = play_job(aws, second, tmp_path / "job2")
    assert played.returncode == 0, played.stdout[-3000:] + played.stderr[-3000:]
    assert "at iteration 2" in played.stdout
    run_dir = tmp_path / "job2/opt_ml/checkpoints/run"
    resumed = [event for event in ledger_events(run_dir) if event.get("event") == "resume"]
    assert resumed and resumed[-1]["iteration"] == 2
    assert (run_dir / "checkpoints/model_4.pt").is_file()
    assert json.loads((tmp_path / "job2/opt_ml/model/summary.json").read_text())["iterations"] == 4


def test_failing_training_reports_its_reason_through_the_failure_file(aws, monkeypatch, tmp_path):
    submit_dir = tmp_path / "submit"
    submit_dir.mkdir()
    assert (
        run_train(
            sagemaker_args("algo.max_iterations=2", "device=cpu", "task.kind=no_such_kind"), monkeypatch, submit_dir
        )
        == 0
    )
    played = play_job(aws, aws.created_jobs[-1], tmp_path / "job")
    assert played.returncode != 0
    failure = (tmp_path / "job/opt_ml/output/failure").read_text()
    assert failure.startswith("train.py exited with status")
    assert len(failure) <= 1024
    assert "no_such_kind" in failure
