"""The scaling figures from per-iteration metrics, the folders of a warm-up run, and the CPU path with two gloo
processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import scaling
from bench.scaling import add_efficiency, summarize
from rlforge_testing import ROOT


def test_summary_skips_the_first_iteration_and_takes_medians():
    metrics = [
        {"env_steps": 100, "collect_s": 50.0, "learn_s": 50.0, "allreduce_s": 9.0},  # compilation
        {"env_steps": 100, "collect_s": 0.5, "learn_s": 0.5, "allreduce_s": 0.1},
        {"env_steps": 100, "collect_s": 0.3, "learn_s": 0.2, "allreduce_s": 0.2},
        {"env_steps": 100, "collect_s": 0.8, "learn_s": 0.2, "allreduce_s": 0.3},
    ]
    summary = summarize(metrics)
    assert summary["env_steps_per_s"] == pytest.approx(100.0)
    assert summary["collect_s"] == pytest.approx(0.5)
    assert summary["allreduce_s"] == pytest.approx(0.2)


def test_efficiency_is_relative_to_one_process():
    points = [{"procs": 1, "env_steps_per_s": 1000.0}, {"procs": 2, "env_steps_per_s": 1800.0}]
    add_efficiency(points)
    assert [p["efficiency"] for p in points] == [pytest.approx(1.0), pytest.approx(0.9)]


def test_warm_up_runs_in_its_own_folder_of_the_given_work_folder(tmp_path, monkeypatch):
    """``--warm-up`` with ``--work``: the warm-up point trains one iteration in ``work/warm-up``, then every point
    trains in ``work``; each run is a stand-in for torchrun that writes the metrics a real run would."""
    launched = []

    def stand_in(procs, settings, run_dir, warp_cache):
        launched.append((procs, settings.iterations, run_dir))
        line = json.dumps({"env_steps": 16 * procs, "collect_s": 0.5, "learn_s": 0.5, "allreduce_s": 0.0})
        script = (
            "import pathlib, sys; run = pathlib.Path(sys.argv[1]); run.mkdir(parents=True);"
            " (run / 'metrics.jsonl').write_text('\\n'.join([sys.argv[2]] * int(sys.argv[3])))"
        )
        return [sys.executable, "-c", script, str(run_dir), line, str(settings.iterations)]

    monkeypatch.setattr(scaling, "point_command", stand_in)
    work = tmp_path / "work"
    out = tmp_path / "scaling.json"
    argv = ["--device", "cpu", "--task", "toy", "--procs", "1", "2", "--iterations", "3", "--warm-up"]
    assert scaling.main([*argv, "--work", str(work), "--out", str(out)]) == 0
    assert launched == [
        (1, 1, work / "warm-up" / "procs-1"),
        (1, 3, work / "procs-1"),
        (2, 3, work / "procs-2"),
    ]
    points = json.loads(out.read_text())["points"]
    assert [(p["procs"], p["iterations"]) for p in points] == [(1, 3), (2, 3)]
    assert [p["efficiency"] for p in points] == [pytest.approx(1.0), pytest.approx(1.0)]


def test_two_cpu_processes_run_and_report(tmp_path):
    out = tmp_path / "scaling.json"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "scaling.py"),
        "--device",
        "cpu",
        "--task",
        "toy",
        "--procs",
        "1",
        "2",
        "--num-envs",
        "16",
        "--iterations",
        "3",
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
        "algo.num_steps_per_env=8",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    points = json.loads(out.read_text())["points"]
    assert [p["procs"] for p in points] == [1, 2]
    # Two processes simulate twice the environments per iteration.
    assert points[1]["env_steps_per_iteration"] == 2 * points[0]["env_steps_per_iteration"] == 2 * 8 * 16
    assert points[1]["allreduce_s"] > 0.0, "the two-process point spends time in the gradient all-reduce"
    assert "efficiency" in result.stdout
