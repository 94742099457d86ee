"""Following jobs with launcher.wait=true, and settings refused before anything is uploaded."""

from __future__ import annotations

import os

import pytest
from sagemaker_emulator import BUCKET, run_train, sagemaker_args

pytestmark = pytest.mark.sagemaker


def set_status(aws, name: str, status: str, reason: str | None = None) -> None:
    """Put a job in a status the emulator would not reach by itself (it completes jobs at once)."""
    job = aws.backend_job(name)
    job.training_job_status = status
    job.secondary_status = {"InProgress": "Training", "Failed": "Failed", "Completed": "Completed"}[status]
    if reason is not None:
        job.failure_reason = reason


def test_wait_exits_non_zero_with_the_failure_reason(aws, monkeypatch, tmp_path, capfd):
    reason = "AlgorithmError: train.py exited with status 1; CUDA out of memory"
    aws.on_create.append(lambda name: set_status(aws, name, "Failed", reason))
    status = run_train(sagemaker_args("launcher.wait=true"), monkeypatch, tmp_path)
    output = capfd.readouterr()
    assert status != 0
    assert reason in output.err + output.out
    assert aws.created_jobs[0]["TrainingJobName"] in output.err + output.out


def test_wait_follows_running_jobs_until_they_complete(aws, monkeypatch, tmp_path, capfd):
    polls = {"count": 0}
    sagemaker_client_calls = []

    def start_in_progress(name):
        set_status(aws, name, "InProgress")

    aws.on_create.append(start_in_progress)
    from launchers import sagemaker_follow

    real_poll = sagemaker_follow.JobTracker.poll

    def poll_and_finish_after_three(tracker):
        polls["count"] += 1
        sagemaker_client_calls.append([job.name for job in tracker.active])
        if polls["count"] == 3:
            for job in tracker.active:
                set_status(aws, job.name, "Completed")
        real_poll(tracker)

    monkeypatch.setattr(sagemaker_follow.JobTracker, "poll", poll_and_finish_after_three)
    status = run_train(sagemaker_args("launcher.wait=true", "seed=1,2"), monkeypatch, tmp_path)
    output = capfd.readouterr()
    assert status == 0, output.err
    assert polls["count"] == 3
    assert "InProgress/Training" in output.out + output.err
    assert "Completed/Completed" in output.out + output.err


def test_max_parallel_jobs_holds_back_further_sweep_points(aws, monkeypatch, tmp_path):
    in_progress_at_creation = []

    def start_in_progress(name):
        running = [job.training_job_name for job in aws.all_backend_jobs() if job.training_job_status == "InProgress"]
        in_progress_at_creation.append(running)
        set_status(aws, name, "InProgress")

    aws.on_create.append(start_in_progress)
    from launchers import sagemaker_follow

    real_poll = sagemaker_follow.JobTracker.poll

    def poll_and_finish(tracker):
        for job in tracker.active:
            set_status(aws, job.name, "Completed")
        real_poll(tracker)

    monkeypatch.setattr(sagemaker_follow.JobTracker, "poll", poll_and_finish)
    status = run_train(sagemaker_args("launcher.max_parallel_jobs=1", "seed=1,2,3"), monkeypatch, tmp_path)
    assert status == 0
    assert len(aws.created_jobs) == 3
    # When each point was created, no earlier point was still running.
    assert in_progress_at_creation == [[], [], []]


@pytest.mark.parametrize(
    ("extra", "unset", "message"),
    [
        (["launcher.role=null"], [], "launcher.role is required"),
        (["launcher.image_uri=null"], [], "launcher.image_uri is required"),
        (["launcher.instance_count=0"], [], "launcher.instance_count must be at least 1"),
        (["launcher.spot=true", "launcher.max_wait_s=60", "launcher.max_runtime_s=3600"], [], "max_wait_s"),
        (["launcher.keep_alive_s=600", "launcher.spot=true"], [], "warm pools"),
        (["launcher.secret_env=[NOT_SET_ANYWHERE]"], [], "NOT_SET_ANYWHERE"),
        ([], ["AWS_DEFAULT_REGION"], "no AWS region"),
        ([], ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"], "no AWS credentials"),
        (["launcher.max_source_mb=0.001"], [], "over the"),
    ],
)
def test_bad_settings_fail_before_any_upload(aws, monkeypatch, tmp_path, capfd, extra, unset, message):
    saved = {name: os.environ[name] for name in unset}
    for name in unset:
        monkeypatch.delenv(name)
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    status = run_train(sagemaker_args(*extra), monkeypatch, tmp_path)
    output = capfd.readouterr()
    for name, value in saved.items():  # to look into the emulator afterwards
        monkeypatch.setenv(name, value)
    assert status != 0
    assert message in output.err + output.out
    assert aws.created_jobs == []
    assert aws.keys() == []


def test_a_checkpoint_uri_holding_another_run_is_refused(aws, monkeypatch, tmp_path, capfd):
    used = f"s3://{BUCKET}/elsewhere/earlier-run/checkpoints"
    aws.client("s3").put_object(Bucket=BUCKET, Key="elsewhere/earlier-run/checkpoints/run/manifest.json", Body=b"{}")
    status = run_train(sagemaker_args(f"launcher.checkpoint_s3_uri={used}"), monkeypatch, tmp_path)
    output = capfd.readouterr()
    assert status != 0
    assert "already holds another run" in output.err + output.out
    assert aws.created_jobs == []
    assert aws.keys() == ["elsewhere/earlier-run/checkpoints/run/manifest.json"]

    # A sweep cannot share one named checkpoint URI either.
    status = run_train(
        sagemaker_args(f"launcher.checkpoint_s3_uri=s3://{BUCKET}/fresh", "seed=1,2"), monkeypatch, tmp_path
    )
    assert status != 0
    assert "would share the checkpoint URI" in capfd.readouterr().err
    assert aws.created_jobs == []


def test_the_network_guard_refuses_other_hosts(no_remote_network):
    import socket

    with pytest.raises(OSError):
        socket.getaddrinfo("telemetry.example.com", 443)
    assert no_remote_network == ["telemetry.example.com"]
    no_remote_network.clear()


def test_submission_turns_the_sdk_telemetry_off():
    from launchers.sagemaker_aws import sdk_config_without_telemetry

    assert sdk_config_without_telemetry()["SageMaker"]["PythonSDK"]["Modules"]["TelemetryOptOut"] is True
