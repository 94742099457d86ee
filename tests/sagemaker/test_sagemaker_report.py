"""A followed job's record: SageMaker's timeline and billable time next to the run's ledger, and the report of both.

The emulator creates jobs as completed at once, without the status transitions or billable time of a real job.
Here the job is put in progress, its container is played for real when the launcher first polls it, and then the
test writes, into the emulator's own record of the job (moto's backend state, not the launcher's code), the
transitions and times SageMaker would have reported for that container: provisioning, downloading, training and
uploading around the container's real start and end, and a billable time cut by managed Spot."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sagemaker_emulator import REPO_ROOT, play_job, run_train, sagemaker_args

from core import accounting

pytestmark = pytest.mark.sagemaker

SPOT_BILLED_FRACTION = 0.3
"""Billable over training time in the emulated answer: managed Spot saving about 70% (rounded to whole seconds)."""


def utc(seconds: float) -> datetime:
    """A time as moto keeps it: a naive UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def seconds(moment: datetime) -> float:
    return moment.replace(tzinfo=UTC).timestamp()


def complete_like_sagemaker(aws, name: str, run_dir: Path) -> dict:
    """Give the emulated job the timeline SageMaker would report for the container that just ran in `run_dir`."""
    events = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    container_start = next(e["at"] for e in events if e["event"] == "container_start")
    container_end = events[-1]["time"]
    job = aws.backend_job(name)
    created = seconds(job.creation_time)
    provisioned = created + 0.6 * (container_start - created)
    training = container_start - 0.05
    uploaded = container_end + 1.5
    phases = [
        ("Starting", created, provisioned, "Preparing the instances for training"),
        ("Downloading", provisioned, training, "Downloading the training image"),
        ("Training", training, container_end, "Training image download completed. Training in progress."),
        ("Uploading", container_end, uploaded, "Uploading generated training model"),
        ("Completed", uploaded, uploaded, "Training job completed"),
    ]
    job.secondary_status_transitions = [
        {"Status": status, "StartTime": utc(start), "EndTime": utc(end), "StatusMessage": message}
        for status, start, end, message in phases
    ]
    job.training_start_time, job.training_end_time = utc(provisioned), utc(uploaded)
    job.training_time_in_seconds = round(uploaded - provisioned) + 1
    job.billable_time_in_seconds = max(1, round(job.training_time_in_seconds * SPOT_BILLED_FRACTION))
    job.training_job_status = job.secondary_status = "Completed"
    return {"phases": phases, "training_s": job.training_time_in_seconds, "billable_s": job.billable_time_in_seconds}


def test_report_of_a_followed_job_shows_sagemaker_phases_and_prices_billable_time(aws, monkeypatch, tmp_path):
    def start_in_progress(name):
        job = aws.backend_job(name)
        job.training_job_status, job.secondary_status = "InProgress", "Starting"

    aws.on_create.append(start_in_progress)
    from launchers import sagemaker_follow

    real_poll = sagemaker_follow.JobTracker.poll
    emulated: dict[str, dict] = {}

    def poll_after_playing(tracker):
        for job in tracker.active:
            if job.name not in emulated:
                request = next(r for r in aws.created_jobs if r["TrainingJobName"] == job.name)
                played = play_job(aws, request, tmp_path / "container")
                assert played.returncode == 0, played.stdout[-3000:] + played.stderr[-3000:]
                run_dir = tmp_path / "container/opt_ml/checkpoints/run"
                emulated[job.name] = complete_like_sagemaker(aws, job.name, run_dir)
        real_poll(tracker)

    monkeypatch.setattr(sagemaker_follow.JobTracker, "poll", poll_after_playing)
    submit = tmp_path / "submit"
    submit.mkdir()
    toy = ("device=cpu", "task.num_envs=16", "algo.max_iterations=3")
    assert run_train(sagemaker_args("launcher.wait=true", "launcher.spot=true", *toy), monkeypatch, submit) == 0
    (expected,) = emulated.values()

    # The submit host's record now holds SageMaker's timeline and, beside it, the run's own records.
    (record_path,) = submit.glob("outputs/multirun/*/0/sagemaker_job.json")
    record_dir = record_path.parent
    timeline = json.loads(record_path.read_text())["sagemaker"]
    assert [t["status"] for t in timeline["transitions"]] == [p[0] for p in expected["phases"]]
    for recorded, (_, start, end, _) in zip(timeline["transitions"], expected["phases"], strict=True):
        assert recorded["start"] == pytest.approx(start, abs=1e-3) and recorded["end"] == pytest.approx(end, abs=1e-3)
    assert (timeline["billable_time_s"], timeline["training_time_s"]) == (
        expected["billable_s"],
        expected["training_s"],
    )
    assert timeline["spot"] is True and timeline["instance_type"] == "ml.g5.2xlarge"
    for name in ("ledger.jsonl", "metrics.jsonl", "manifest.json", "summary.json"):
        assert (record_dir / name).read_bytes() == (tmp_path / "container/opt_ml/checkpoints/run" / name).read_bytes()

    report = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/report.py"), str(record_dir), "--out", str(tmp_path / "report")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    (run,) = json.loads((tmp_path / "report/report.json").read_text())["runs"]
    assert run["launcher"] == "sagemaker" and run["price_table"] == "training_job"
    assert run["objective_key"] == "Episode_Reward/track_velocity" and "${" not in report.stdout

    # Time to first iteration, split: the parts follow one another and add up to it.
    _, created, provisioned, _ = expected["phases"][0]
    training = expected["phases"][2][1]
    parts = dict(run["first_iteration_parts"])
    assert list(parts) == [
        "submission to job created",
        "provisioning instances (SageMaker Starting)",
        "image pull and input download (SageMaker Downloading)",
        "container start",
        "container start to train.py start (kernel cache fetch)",
        "train.py start-up: imports, simulator, kernels",
        "first iteration",
    ]
    assert parts["provisioning instances (SageMaker Starting)"] == pytest.approx(provisioned - created, abs=1e-3)
    assert parts["image pull and input download (SageMaker Downloading)"] == pytest.approx(
        training - provisioned, abs=1e-3
    )
    assert sum(parts.values()) == pytest.approx(run["time_to_first_iteration_s"], abs=1e-6)
    assert parts["first iteration"] > 0 and parts["train.py start-up: imports, simulator, kernels"] > 0

    # The cost is SageMaker's billable time at the on-demand rate: Spot's saving is in it, not applied again.
    assert run["billable_s"] == expected["billable_s"]
    assert run["spot_savings"] == pytest.approx(1 - expected["billable_s"] / expected["training_s"])
    on_demand = accounting.load_prices()["training_job"]["ml.g5.2xlarge"]
    assert run["cost"] == pytest.approx(on_demand * expected["billable_s"] / 3600)
    saved = 100 * (1 - expected["billable_s"] / expected["training_s"])
    assert "SageMaker billable time" in report.stdout and f"Spot saved {saved:.0f}%" in report.stdout
    assert "provisioning instances (SageMaker Starting)" in report.stdout
    for status, *_ in expected["phases"]:
        assert f"\n{status} " in report.stdout


def test_records_of_jobs_not_followed_are_brought_up_to_date_afterwards(aws, monkeypatch, tmp_path, capsys):
    submit = tmp_path / "submit"
    submit.mkdir()
    assert (
        run_train(sagemaker_args("device=cpu", "task.num_envs=16", "algo.max_iterations=2"), monkeypatch, submit) == 0
    )
    (record_path,) = submit.glob("outputs/multirun/*/0/sagemaker_job.json")
    assert "sagemaker" not in json.loads(record_path.read_text())
    assert not (record_path.parent / "ledger.jsonl").exists()
    request = aws.created_jobs[-1]
    played = play_job(aws, request, tmp_path / "container")
    assert played.returncode == 0, played.stdout[-3000:] + played.stderr[-3000:]
    expected = complete_like_sagemaker(aws, request["TrainingJobName"], tmp_path / "container/opt_ml/checkpoints/run")

    from launchers import sagemaker

    assert sagemaker.main(["records", str(submit / "outputs/multirun")]) == 0
    assert f"{request['TrainingJobName']} Completed" in capsys.readouterr().out
    assert json.loads(record_path.read_text())["sagemaker"]["billable_time_s"] == expected["billable_s"]
    account = accounting.account(record_path.parent)
    assert account.billable_s == expected["billable_s"] and account.iterations_completed == 2
    assert account.first_iteration_parts[1][0] == "provisioning instances (SageMaker Starting)"
