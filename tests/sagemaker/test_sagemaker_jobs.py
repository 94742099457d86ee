"""`scripts/jobs.py` over Training Jobs sent to the emulated SageMaker: list, status, logs from the CloudWatch
stream, stop. moto has no StopTrainingJob; the fixture below adds it to the emulator (the status change SageMaker
makes: Stopping, then Stopped), since that API cannot run here otherwise."""

from __future__ import annotations

import time

import pytest
from sagemaker_emulator import REGION, run_train, sagemaker_args

from launchers import jobs

pytestmark = pytest.mark.sagemaker


@pytest.fixture
def stop_api(monkeypatch):
    """StopTrainingJob on the emulator; the names it was called with."""
    from moto.core.responses import ActionResult
    from moto.sagemaker.responses import SageMakerResponse

    stopped: list[str] = []

    def stop_training_job(self):
        name = self._get_param("TrainingJobName")
        job = self.sagemaker_backend.training_jobs[name]
        job.training_job_status, job.secondary_status = "Stopping", "Stopping"
        stopped.append(name)
        return ActionResult({})

    monkeypatch.setattr(SageMakerResponse, "stop_training_job", stop_training_job, raising=False)
    return stopped


def rows_of(listed: str) -> dict[str, str]:
    """NAME -> STATE of the list table (Hydra's own log lines of the submission may share the output)."""
    return {line.split()[0]: line.split()[1] for line in listed.splitlines() if line.startswith("sagemaker:")}


def run_jobs(capsys, *argv: str) -> tuple[int, str, str]:
    code = jobs.main(["--root", "outputs", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_jobs_lists_follows_logs_and_stops_training_jobs(aws, stop_api, monkeypatch, tmp_path, capsys):
    def start_in_progress(name):
        job = aws.backend_job(name)
        job.training_job_status, job.secondary_status = "InProgress", "Training"

    aws.on_create.append(start_in_progress)
    assert run_train(sagemaker_args("seed=1,2"), monkeypatch, tmp_path) == 0
    names = [job["TrainingJobName"] for job in aws.created_jobs]
    capsys.readouterr()

    code, listed, _ = run_jobs(capsys, "list")
    assert code == 0
    rows = rows_of(listed)
    assert rows == {f"sagemaker:{name}": "inprogress/training" for name in names}

    # What the container printed, as SageMaker streams it to CloudWatch (one stream per instance).
    logs = aws.client("logs")
    logs.create_log_group(logGroupName=jobs.SAGEMAKER_LOG_GROUP)
    stream = f"{names[0]}/algo-1-1764540000"
    logs.create_log_stream(logGroupName=jobs.SAGEMAKER_LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)
    lines = ["[rlforge] building toy: 64 envs on cuda", "it 1/1500 | reward 0.01 | elapsed 2s | ETA 49:58"]
    logs.put_log_events(
        logGroupName=jobs.SAGEMAKER_LOG_GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)],
    )
    code, printed, _ = run_jobs(capsys, "logs", names[0])
    assert code == 0 and [line for line in printed.splitlines() if not line.startswith("[20")] == lines

    code, status, _ = run_jobs(capsys, "status", names[0])
    assert code == 0 and "state       inprogress/training" in status and f"region={REGION}" in status

    code, said, _ = run_jobs(capsys, "stop", f"sagemaker:{names[1]}")
    assert code == 0 and f"StopTrainingJob {names[1]}" in said and stop_api == [names[1]]
    code, listed, _ = run_jobs(capsys, "list")
    rows = rows_of(listed)
    assert rows[f"sagemaker:{names[1]}"] == "stopping" and rows[f"sagemaker:{names[0]}"] == "inprogress/training"
