"""`scripts/jobs.py` over a job on the suite's real Slurm cluster: list, status, logs, and stop ending in a
checkpoint (scancel: SIGTERM to the training step, no requeue)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_hyperpod_cluster import REPO, checkpoint_iterations, submitted, train

from rlforge_testing import wait_for

pytestmark = pytest.mark.slurm


def jobs(cluster, root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "jobs.py"), "--root", str(root), *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_jobs_lists_shows_logs_and_stops_a_slurm_job_with_a_checkpoint(slurm_cluster, tmp_path):
    result = train(slurm_cluster, tmp_path, "algo.max_iterations=5000", "algo.save_interval=1000")
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    metrics = Path(run["run_dir"]) / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, "training", interval=0.05)

    listed = jobs(slurm_cluster, tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(f"hyperpod:{run['job_id']} ")]
    assert row.split()[1] == "running" and row.split()[2].endswith("/5000")

    status = jobs(slurm_cluster, tmp_path, "status", run["job_id"])
    assert "state       running" in status.stdout and f"log         {run['log']}" in status.stdout

    log = jobs(slurm_cluster, tmp_path, "logs", run["job_id"])
    assert log.returncode == 0 and "[rlforge] building toy" in log.stdout, log.stderr

    stopped = jobs(slurm_cluster, tmp_path, "stop", f"hyperpod:{run['job_id']}")
    assert stopped.returncode == 0 and f"scancel {run['job_id']}" in stopped.stdout, stopped.stderr
    assert slurm_cluster.wait_until_done(run["job_id"]) == {run["job_id"]: "CANCELLED"}
    events = [json.loads(line) for line in (Path(run["run_dir"]) / "ledger.jsonl").read_text().splitlines()]
    (end,) = [e for e in events if e["event"] == "end"]
    assert end["how"] == "interrupted" and "SIGTERM" in end["reason"]
    assert end["iteration"] in checkpoint_iterations(run["run_dir"])
    after = jobs(slurm_cluster, tmp_path, "list").stdout
    assert f"hyperpod:{run['job_id']}  cancelled" in after
