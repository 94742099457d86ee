"""The scaling figures from per-iteration metrics, the folders of a warm-up run, and the CPU path with two gloo
processes; packed runs: their figures, folders and seeds, and the CPU path with two runs at once."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from bench import scaling
from bench.scaling import add_efficiency, pack_table, summarize, summarize_pack, table
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


def test_all_reduce_timed_inside_a_graph_reads_as_none_and_prints_as_a_dash():
    metrics = [{"env_steps": 100, "collect_s": 0.5, "learn_s": 0.5, "allreduce_s": None}] * 3
    summary = summarize(metrics)
    assert summary["allreduce_s"] is None
    point = {"procs": 2, "efficiency": 1.0, **summary}
    assert table([point]).splitlines()[1].split()[-1] == "-"


def _iteration(iteration: int, time: float, rate: float, reward: float | None = None) -> dict:
    """A metrics line whose iteration ran at ``rate`` env-steps/s and ended at ``time``."""
    line = {"iteration": iteration, "time": time, "env_steps": 100, "collect_s": 100 / rate, "learn_s": 0.0}
    if reward is not None:
        line["Train/mean_reward"] = reward
    return line


def test_packed_runs_are_measured_while_all_of_them_train():
    # Run b starts late: a's iterations before b's first one ended, and after b finished, ran alone and faster.
    a = [_iteration(1, 10.0, 1.0), _iteration(2, 11.0, 400.0), _iteration(3, 13.0, 100.0), _iteration(4, 14.0, 120.0)]
    a += [_iteration(5, 20.0, 400.0, reward=2.5)]
    b = [_iteration(1, 12.0, 1.0), _iteration(2, 13.5, 90.0), _iteration(3, 15.0, 110.0, reward=1.5)]
    first, second = summarize_pack([a, b])
    # The window opens at 12.0 (b's first iteration) and closes at 15.0 (b's last).
    assert first["overlapped_iterations"] == 2
    assert first["env_steps_per_s"] == pytest.approx(110.0)
    assert second["overlapped_iterations"] == 2
    assert second["env_steps_per_s"] == pytest.approx(100.0)
    assert (first["final_iteration"], first["final_mean_reward"]) == (5, 2.5)
    assert (second["final_iteration"], second["final_mean_reward"]) == (3, 1.5)


def test_packed_runs_that_never_overlap_fall_back_to_their_own_iterations():
    a = [_iteration(1, 1.0, 1.0), _iteration(2, 2.0, 100.0), _iteration(3, 3.0, 300.0)]
    b = [_iteration(1, 5.0, 1.0), _iteration(2, 6.0, 50.0)]
    first, second = summarize_pack([a, b])
    assert (first["overlapped_iterations"], second["overlapped_iterations"]) == (0, 0)
    assert first["env_steps_per_s"] == pytest.approx(200.0)
    assert second["env_steps_per_s"] == pytest.approx(50.0)
    assert first["final_mean_reward"] is None


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


def test_pack_warm_up_then_each_pack_in_its_folder_with_seeds_counting_up(tmp_path, monkeypatch):
    """``--pack`` with ``--warm-up`` and ``--work``: the warm-up trains one iteration in ``work/warm-up``, then each
    pack's runs train at once in ``work/pack-N/run-i`` with seeds seed, seed + 1, ...; each run is a stand-in that
    writes the metrics a real run would, with its seed as its final reward."""
    launched = []
    script = (
        "import json, pathlib, sys, time; run = pathlib.Path(sys.argv[1]); run.mkdir(parents=True); seed = int(sys.argv[2]);"
        " lines = [dict(iteration=i + 1, time=time.time(), env_steps=128, collect_s=0.5, learn_s=0.5) for i in range(3)];"
        " lines[-1]['Train/mean_reward'] = float(seed);"
        " (run / 'metrics.jsonl').write_text('\\n'.join(json.dumps(line) for line in lines))"
    )

    def warm_up_stand_in(procs, settings, run_dir, warp_cache):
        launched.append(("warm-up", settings.iterations, run_dir))
        return [sys.executable, "-c", script, str(run_dir), str(settings.seed)]

    def run_stand_in(settings, run_dir, warp_cache, seed):
        launched.append((seed, settings.iterations, run_dir))
        return [sys.executable, "-c", script, str(run_dir), str(seed)]

    monkeypatch.setattr(scaling, "point_command", warm_up_stand_in)
    monkeypatch.setattr(scaling, "pack_command", run_stand_in)
    work, out = tmp_path / "work", tmp_path / "pack.json"
    argv = ["--device", "cpu", "--task", "toy", "--pack", "2", "1", "--iterations", "3", "--seed", "7", "--warm-up"]
    assert scaling.main([*argv, "--work", str(work), "--out", str(out)]) == 0
    assert launched == [
        ("warm-up", 1, work / "warm-up" / "procs-1"),
        (7, 3, work / "pack-1" / "run-0"),
        (7, 3, work / "pack-2" / "run-0"),
        (8, 3, work / "pack-2" / "run-1"),
    ]
    packs = json.loads(out.read_text())["packs"]
    assert [p["runs"] for p in packs] == [1, 2]
    assert [[r["final_mean_reward"] for r in p["per_run"]] for p in packs] == [[7.0], [7.0, 8.0]]
    assert [p["total_env_steps_per_s"] for p in packs] == [pytest.approx(128.0), pytest.approx(256.0)]
    assert [p["total_vs_one_run"] for p in packs] == [pytest.approx(1.0), pytest.approx(2.0)]
    two_runs = pack_table(packs).splitlines()[2]
    assert two_runs.split()[:3] == ["2", "256", "2.00x"] and two_runs.endswith("7.00 / 8.00")


def test_pack_of_two_cpu_runs_trains_and_reports(tmp_path):
    out = tmp_path / "pack.json"
    command = [sys.executable, str(ROOT / "scripts" / "scaling.py"), "--device", "cpu", "--task", "toy"]
    command += ["--pack", "1", "2", "--num-envs", "16", "--iterations", "3", "--work", str(tmp_path / "work")]
    # Episodes of 5 steps end within every 8-step rollout, so each run has a mean reward at its last iteration.
    command += ["--out", str(out), "algo.num_steps_per_env=8", "task.episode_length_s=0.1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    packs = report["packs"]
    assert [p["runs"] for p in packs] == [1, 2]
    assert [len(p["per_run"]) for p in packs] == [1, 2]
    for pack in packs:
        assert pack["total_env_steps_per_s"] == pytest.approx(sum(r["env_steps_per_s"] for r in pack["per_run"]))
        for run in pack["per_run"]:
            assert run["env_steps_per_s"] > 0.0
            assert run["env_steps_per_iteration"] == 8 * 16
            assert run["final_iteration"] == 3
            assert isinstance(run["final_mean_reward"], float)
    single, (first, second) = packs[0]["per_run"][0], packs[1]["per_run"]
    assert (first["seed"], second["seed"]) == (42, 43)
    # The same seed learns the same alone and packed; another seed learns something else.
    assert first["final_mean_reward"] == pytest.approx(single["final_mean_reward"])
    assert second["final_mean_reward"] != pytest.approx(first["final_mean_reward"])
    assert "total env-steps/s" in result.stdout and "final mean reward" in result.stdout


def test_a_point_that_does_not_exit_is_stopped_with_its_processes_and_earlier_points_are_kept(tmp_path, monkeypatch):
    """A point still running after ``--timeout`` (here: one that logged every iteration and then hangs, as a rank
    stuck in its process group's teardown would) is stopped together with the processes it started; the error says
    how far it got and the 1-process point's figures are already in ``--out``."""
    script = (
        "import json, pathlib, subprocess, sys, time; run = pathlib.Path(sys.argv[1]); run.mkdir(parents=True);"
        " lines = [dict(iteration=i + 1, time=time.time() + i, env_steps=128, collect_s=0.5, learn_s=0.5)"
        " for i in range(3)];"
        " (run / 'metrics.jsonl').write_text('\\n'.join(json.dumps(line) for line in lines));"
        " hang = sys.argv[2] == '2';"
        " child = subprocess.Popen(['sleep', '600']) if hang else None;"
        " child and (run / 'child.pid').write_text(str(child.pid));"
        " hang and time.sleep(600)"
    )

    def stand_in(procs, settings, run_dir, warp_cache):
        return [sys.executable, "-c", script, str(run_dir), str(procs)]

    monkeypatch.setattr(scaling, "point_command", stand_in)
    work, out = tmp_path / "work", tmp_path / "scaling.json"
    argv = ["--device", "cpu", "--task", "toy", "--procs", "1", "2", "--iterations", "3", "--timeout", "5"]
    with pytest.raises(SystemExit) as stopped:
        scaling.main([*argv, "--work", str(work), "--out", str(out)])
    message = str(stopped.value)
    assert "2-process run was still running after 5 s" in message
    assert "3 of 3 iterations logged (it trained them all but did not exit)" in message
    assert [p["procs"] for p in json.loads(out.read_text())["points"]] == [1]
    child = int((work / "procs-2" / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child), "the stopped point's own child process is still running"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, stopped but not yet reaped by its new parent, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_pack_still_running_after_the_timeout_is_stopped(tmp_path, monkeypatch):
    script = "import os, pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text(str(os.getpid())); time.sleep(600)"

    def run_stand_in(settings, run_dir, warp_cache, seed):
        return [sys.executable, "-c", script, str(tmp_path / f"pid-{seed}")]

    monkeypatch.setattr(scaling, "pack_command", run_stand_in)
    argv = ["--device", "cpu", "--task", "toy", "--pack", "2", "--seed", "0", "--timeout", "3"]
    with pytest.raises(SystemExit, match="the 2-run pack was still running after 3 s"):
        scaling.main([*argv, "--work", str(tmp_path / "work")])
    for seed in (0, 1):
        assert not _alive(int((tmp_path / f"pid-{seed}").read_text())), f"run {seed} of the pack is still running"
