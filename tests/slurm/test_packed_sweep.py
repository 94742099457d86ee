"""`launcher.runs_per_gpu` on a real Slurm cluster: the points of a sweep packed into the tasks of one job array, each
point trained by a process of its own with its own run directory, and every point of a requeued task resumed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlforge_testing import SMALL_TOY, wait_for

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
# The cluster has no GPUs: gpus_per_node=0 trains on the CPU, and a packed task's points share its CPUs.
BASE = ["launcher=hyperpod", "launcher.gpus_per_node=0", "device=cpu", "logger=tensorboard", "task=toy", *SMALL_TOY]
# The points' lengths, in iterations (milliseconds each): the first task's two points train long enough to be
# preempted together, the second task's are short.
ITERATIONS = (1000, 1001, 20, 21)


def ledger(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def events_named(events: list[dict], name: str) -> list[dict]:
    return [event for event in events if event["event"] == name]


def iterations_logged(run_dir: str | Path) -> list[int]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines()] if path.exists() else []


def test_four_points_two_per_task_are_two_array_tasks_and_a_requeued_task_resumes_both(slurm_cluster, tmp_path):
    command = [
        sys.executable,
        "train.py",
        "-m",
        *BASE,
        f"launcher.output_root={tmp_path}",
        "launcher.runs_per_gpu=2",
        "algo.save_interval=100000",
        f"algo.max_iterations={','.join(map(str, ITERATIONS))}",
    ]
    result = subprocess.run(command, cwd=REPO, env=slurm_cluster.env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = tmp_path.glob("multirun/*/slurm_jobs.json")
    runs = json.loads(record.read_text())
    assert len(runs) == 4 and len({run["run_dir"] for run in runs}) == 4
    # Two tasks of one job array, two points each, in the order of the sweep.
    array_id = runs[0]["job_id"].split("_")[0]
    assert [run["job_id"] for run in runs] == [f"{array_id}_0", f"{array_id}_0", f"{array_id}_1", f"{array_id}_1"]
    assert "Submitted 4 run(s) to Slurm as 2 array task(s)" in result.stdout
    first_task = [run for run in runs if run["job_id"] == f"{array_id}_0"]

    # Slurm's preemption notice to the first task, once both its points train: each must checkpoint and come back.
    wait_for(
        lambda: all(len(iterations_logged(run["run_dir"])) >= 3 for run in first_task),
        "both points of the first task to train",
        interval=0.05,
    )
    slurm_cluster.run("scancel", "--signal=USR2", f"{array_id}_0")
    states = slurm_cluster.wait_until_done(array_id, timeout=400)
    logs = "\n".join(Path(run["log"]).read_text()[-2000:] for run in runs if Path(run["log"]).exists())
    assert states == {f"{array_id}_0": "COMPLETED", f"{array_id}_1": "COMPLETED"}, logs
    assert slurm_cluster.job_history(f"{array_id}_0") == ["REQUEUED", "COMPLETED"]
    assert slurm_cluster.job_history(f"{array_id}_1") == ["COMPLETED"]

    for run, iterations in zip(runs, ITERATIONS, strict=True):
        run_dir = Path(run["run_dir"])
        assert run["overrides"][-1] == f"algo.max_iterations={iterations}"
        assert json.loads((run_dir / "summary.json").read_text())["iterations"] == iterations
        # Every iteration is logged once, however often the run was stopped.
        assert sorted(iterations_logged(run_dir)) == list(range(1, iterations + 1))
        assert run["log"] == str(run_dir / "process.log") and "run finished" in Path(run["log"]).read_text()
        events = ledger(run_dir)
        assert events[-1]["event"] == "end" and events[-1]["how"] == "completed"

    # Both points of the first task took the signal, checkpointed, were requeued once and resumed where they stopped.
    for run, iterations in zip(first_task, ITERATIONS, strict=False):
        events = ledger(run["run_dir"])
        (stopped,) = [event for event in events if event["event"] == "end" and event["how"] == "interrupted"]
        assert "SIGUSR2" in stopped["reason"] and 3 <= stopped["iteration"] < iterations
        (requeued,) = events_named(events, "requeued")
        assert requeued["by"] == "run"
        (resumed,) = events_named(events, "resume")
        assert resumed["iteration"] == stopped["iteration"]
        assert resumed["checkpoint"] == f"model_{stopped['iteration']}.pt"
        assert len(events_named(events, "process_start")) == 2
    # The points of a task trained at the same time, each in a process of its own.
    for task in ("0", "1"):
        starts = [
            events_named(ledger(run["run_dir"]), "process_start")[-1]
            for run in runs
            if run["job_id"].endswith(f"_{task}")
        ]
        ends = [ledger(run["run_dir"])[-1] for run in runs if run["job_id"].endswith(f"_{task}")]
        assert starts[0]["pid"] != starts[1]["pid"]
        assert max(start["at"] for start in starts) < min(end["time"] for end in ends)
    second_task = [run for run in runs if run["job_id"] == f"{array_id}_1"]
    assert all(not events_named(ledger(run["run_dir"]), "requeued") for run in second_task)
