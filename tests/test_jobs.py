"""`scripts/jobs.py` over local runs (real processes and signals) and the cost estimate of a submission."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.accounting import estimate_cost, load_prices
from rlforge_testing import ROOT, start_train, wait_for


def jobs(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "jobs.py"), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_local_run_is_listed_followed_and_stopped_with_a_checkpoint(toy_args, tmp_path):
    root = tmp_path / "outputs"
    proc = start_train([*toy_args, "algo.max_iterations=100000", "algo.save_interval=100000"], cwd=tmp_path)
    try:
        metrics = wait_for(
            lambda: next(iter(root.glob("toy/*/metrics.jsonl")), None), "training to start", interval=0.1
        )
        wait_for(lambda: len(metrics.read_text().splitlines()) >= 3, "three iterations", interval=0.1)
        run_dir = metrics.parent
        listed = jobs(root, "list")
        assert listed.returncode == 0, listed.stderr
        (line,) = [row for row in listed.stdout.splitlines() if row.startswith(f"local:{run_dir.name}")]
        assert line.split()[1] == "running" and "/100000" in line

        status = jobs(root, "status", run_dir.name)
        assert "state       running" in status.stdout and f"pid {proc.pid}" in status.stdout

        log = jobs(root, "logs", str(run_dir))
        assert log.returncode == 0 and "[rlforge] building toy" in log.stdout

        stopped = jobs(root, "stop", f"local:{run_dir.name}")
        assert stopped.returncode == 0 and f"SIGTERM to pid {proc.pid}" in stopped.stdout, stopped.stderr
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    events = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    end = events[-1]
    assert end["event"] == "end" and end["how"] == "interrupted" and "SIGTERM" in end["reason"]
    assert (run_dir / "checkpoints" / f"model_{end['iteration']}.pt").is_file()
    after = jobs(root, "list").stdout
    assert f"local:{run_dir.name}  interrupted" in after
    assert "total" in jobs(root, "cost").stdout


def test_unknown_names_are_refused_with_the_known_ones(tmp_path):
    (tmp_path / "exp" / "run-a").mkdir(parents=True)
    (tmp_path / "exp" / "run-a" / "manifest.json").write_text("{}")
    refused = jobs(tmp_path, "status", "run-b")
    assert refused.returncode == 2 and "no run or job 'run-b'" in refused.stderr and "local:run-a" in refused.stderr
    assert jobs(tmp_path, "stop", "run-a").returncode == 2  # not running: nothing to stop, said so


@pytest.mark.parametrize(("table", "spot"), [("training_job", False), ("training_job", True), ("hyperpod", False)])
def test_the_estimate_is_runs_times_instances_times_hours_times_the_price(table, spot):
    prices = load_prices()
    estimate = estimate_cost(
        table=table, instance_type="ml.g5.2xlarge", instances_per_run=2, hours_per_run=1.5, runs=3, spot=spot
    )
    rate = prices[table]["ml.g5.2xlarge"] * (prices["spot_price_fraction"] if spot else 1.0)
    assert estimate.cost == pytest.approx(3 * 2 * 1.5 * rate)
    assert f"= {estimate.cost:,.2f} USD" in estimate.line() and ("Spot" in estimate.line()) == spot
    unknown = estimate_cost(table=table, instance_type="ml.z9.huge", instances_per_run=1, hours_per_run=1, runs=1)
    assert unknown.cost is None and "no price for ml.z9.huge" in unknown.line()
