"""The container side run for real: a job's captured request and uploaded source, laid out as SageMaker does
(`sagemaker_emulator.play_job`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sagemaker_emulator import lay_out_job, play_job, run_train, sagemaker_args, sync_checkpoints

from rlforge_testing import SMALL_TOY

pytestmark = pytest.mark.sagemaker


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
    assert any(key.startswith("rlforge/") and key.endswith("run/checkpoints/model_2.pt") for key in aws.keys())

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
            sagemaker_args("algo.max_iterations=2", "device=cpu", "+task.env_overrides.no_such_setting=1"),
            monkeypatch,
            submit_dir,
        )
        == 0
    )
    played = play_job(aws, aws.created_jobs[-1], tmp_path / "job")
    assert played.returncode != 0
    failure = (tmp_path / "job/opt_ml/output/failure").read_text()
    assert failure.startswith("train.py exited with status")
    assert len(failure) <= 1024
    assert "no_such_setting" in failure


# The toy task at its smallest, as the Slurm tier trains it: an iteration takes milliseconds on the CPU.
TOY = ("device=cpu", *SMALL_TOY)


def require_pid_namespace() -> str:
    """The unshare command, or skip: a fresh PID namespace needs root and util-linux's unshare."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("playing a container's PID 1 needs root and unshare (util-linux)")
    probe = subprocess.run([unshare, "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine refuses a new PID namespace: {probe.stderr.strip()}")
    return unshare


def start_job_as_pid_1(aws, request: dict, work: Path, unshare: str) -> tuple[subprocess.Popen, int]:
    """Start the job's container command as PID 1 of a fresh PID namespace, as docker starts a container.

    Returns the unshare process and the host's pid of the namespace's PID 1, the process `docker stop` signals.
    """
    command, environment = lay_out_job(aws, request, work)
    log = open(work / "container.log", "w")
    container = subprocess.Popen(
        [unshare, "--pid", "--fork", "--mount-proc", *command],
        cwd=work,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    init = None
    deadline = time.monotonic() + 60
    while init is None:
        children = [
            int(pid) for task in Path(f"/proc/{container.pid}/task").glob("*") for pid in task_children(task).split()
        ]
        init = children[0] if children else None
        assert init is not None or container.poll() is None, container_output(work)
        assert init is not None or time.monotonic() < deadline, "unshare started no process"
        time.sleep(0.01)
    return container, init


def task_children(task: Path) -> str:
    try:
        return (task / "children").read_text()
    except OSError:
        return ""


def container_output(work: Path) -> str:
    return (work / "container.log").read_text()[-4000:]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.parametrize("processes", [1, 2])
def test_a_stopped_job_checkpoints_where_it_stood_and_its_restart_finishes_the_run(
    aws, monkeypatch, tmp_path, processes
):
    """SIGTERM to the container's PID 1 (`docker stop`, a Spot interruption) loses no iteration."""
    unshare = require_pid_namespace()
    submit_dir = tmp_path / "submit"
    submit_dir.mkdir()
    max_iterations = 1500
    args = [f"algo.max_iterations={max_iterations}", "algo.save_interval=1000", *TOY]
    if processes > 1:
        args.append(f"launcher.processes_per_instance={processes}")
    assert run_train(sagemaker_args(*args), monkeypatch, submit_dir) == 0
    request = aws.created_jobs[-1]

    first = tmp_path / "job1"
    run_dir = first / "opt_ml/checkpoints/run"
    container, init = start_job_as_pid_1(aws, request, first, unshare)
    try:
        deadline = time.monotonic() + 300
        while len(jsonl(run_dir / "metrics.jsonl")) < 2:
            assert container.poll() is None, container_output(first)
            assert time.monotonic() < deadline, "no training iteration within 300 s\n" + container_output(first)
            time.sleep(0.05)
        # sm_train.sh's shell exec'd the entry: the process SageMaker signals is the one that handles it.
        assert "launchers.sagemaker_entry" in Path(f"/proc/{init}/cmdline").read_text()
        os.kill(init, signal.SIGTERM)
        try:
            status = container.wait(timeout=110)
        except subprocess.TimeoutExpired:
            pytest.fail("the container did not exit within SageMaker's 120 s\n" + container_output(first))
    finally:
        if container.poll() is None:
            os.kill(init, signal.SIGKILL)
            container.wait()
    output = (first / "container.log").read_text()
    sync_checkpoints(aws, request, first)

    assert status == 128 + signal.SIGTERM, output
    assert "sagemaker_entry: pid 1," in output
    ends = [event for event in ledger_events(run_dir) if event["event"] == "end"]
    assert len(ends) == 1 and ends[0]["how"] == "interrupted" and ends[0]["reason"] == "SIGTERM", ends
    stopped_at = ends[0]["iteration"]
    assert ends[0]["world_size"] == processes
    assert 2 <= stopped_at < max_iterations
    # The only checkpoint is the one the stop wrote, at the iteration it interrupted; every iteration logged
    # before the stop is in it.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [f"model_{stopped_at}.pt"]
    assert [m["iteration"] for m in jsonl(run_dir / "metrics.jsonl")] == list(range(1, stopped_at + 1))
    if processes > 1:
        # Each process received the signal itself, not only word of it from rank 0.
        for rank in range(processes):
            assert f"[{rank}] " in output and f"run stopped at iteration {stopped_at}: SIGTERM" in output
        assert output.count(f"run stopped at iteration {stopped_at}: SIGTERM") >= processes, output
    # SageMaker is told the run did not complete, and from where it resumes; nothing is exported.
    failure = (first / "opt_ml/output/failure").read_text()
    assert "interrupted by SIGTERM" in failure and f"resume from iteration {stopped_at}" in failure, failure
    assert list((first / "opt_ml/model").iterdir()) == []
    # Warp's kernel cache stays out of what SageMaker uploads.
    assert (first / ".cache/warp").is_dir()
    assert sorted(p.name for p in (first / "opt_ml/checkpoints").iterdir()) == ["run"]

    # SageMaker restarts the interrupted job: the same request over the synced checkpoint folder.
    played = play_job(aws, request, tmp_path / "job2")
    assert played.returncode == 0, played.stdout[-3000:] + played.stderr[-3000:]
    assert "Training Container Execution Completed" in played.stdout
    run_dir = tmp_path / "job2/opt_ml/checkpoints/run"
    resumed = [event for event in ledger_events(run_dir) if event["event"] == "resume"]
    assert [event["iteration"] for event in resumed] == [stopped_at]
    assert [m["iteration"] for m in jsonl(run_dir / "metrics.jsonl")] == list(range(1, max_iterations + 1))
    summary = json.loads((tmp_path / "job2/opt_ml/model/summary.json").read_text())
    assert summary["iterations"] == max_iterations
    assert (tmp_path / "job2/opt_ml/model/policy.pt").is_file()
