"""Accounting of real toy runs: the report's figures, its PNG and HTML, sweeps ranked, and exact relaunches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import accounting
from rlforge_testing import ROOT, only_run, run_train, train_until_then_signal


def ledger_events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def metric_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def seconds_in(lines: list[dict]) -> float:
    return sum(line["collect_s"] + line["learn_s"] for line in lines)


def report(target: Path, *args: str, cwd: Path, out: Path | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """Run scripts/report.py as a user would; its printed output and its report.json."""
    extra = ["--out", str(out)] if out else []
    result = run_train([str(target), *args, *extra], cwd=cwd, script="scripts/report.py", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(((out or target) / "report.json").read_text())


def assert_png_has_content(path: Path) -> None:
    """A real figure: not tiny, and plenty of pixels that are neither background nor one flat colour."""
    import numpy as np
    from matplotlib import image

    assert path.stat().st_size > 20_000, f"{path} is only {path.stat().st_size} bytes"
    pixels = image.imread(path)[..., :3]
    height, width = pixels.shape[:2]
    assert height >= 300 and width >= 600
    ink = (pixels < 0.9).any(axis=-1).mean()  # share of pixels that are not white
    assert ink > 0.02, f"figure is nearly blank ({ink:.2%} ink)"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, "figure has almost no distinct colours"


def test_report_of_a_local_run_counts_the_queue_and_prices_it(toy_args, tmp_path):
    queued_s = 30.0
    submitted = time.time() - queued_s
    result = run_train(
        [*toy_args, "algo.max_iterations=4"],
        cwd=tmp_path,
        env={"RLFORGE_SUBMITTED_AT": str(submitted), "RLFORGE_INSTANCE_TYPE": "ml.g5.2xlarge"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run(tmp_path / "outputs" / "toy")
    events = ledger_events(run_dir)
    lines = metric_lines(run_dir)

    acc = accounting.account(run_dir)
    start = next(e for e in events if e["event"] == "process_start")["at"]
    end = events[-1]["time"]
    assert acc.launcher == "local" and acc.status == "completed" and acc.instance_type == "ml.g5.2xlarge"
    assert acc.submitted_at == pytest.approx(submitted, abs=1e-3)
    assert acc.wall_clock_s == pytest.approx(end - submitted, abs=1e-3)
    first_iteration = next(e for e in events if e["event"] == "first_iteration")["time"]
    assert acc.time_to_first_iteration_s == pytest.approx(first_iteration - submitted, abs=1e-3)
    assert acc.time_to_first_iteration_s > queued_s
    assert (acc.iterations_completed, acc.iterations_redone, acc.interruptions, acc.attempts) == (4, 0, 0, 1)
    # A local machine is billed like a persistent cluster: from submission to the end, so the queue is idle time.
    assert acc.billing == "span" and acc.billed_s == pytest.approx(end - submitted, abs=1e-3)
    assert acc.idle_s == pytest.approx(start - submitted, abs=1e-3)
    assert acc.useful_s == pytest.approx(seconds_in(lines), abs=1e-9)
    assert acc.useful_fraction == pytest.approx(seconds_in(lines) / (end - submitted), rel=1e-6)
    parts = acc.useful_s + acc.startup_s + acc.redone_s + acc.idle_s + acc.other_s
    assert parts == pytest.approx(acc.billed_s, abs=1e-6) and acc.other_s >= 0
    assert acc.cost == 0.0  # the local table's default rate

    # The same run priced as a Training Job of its recorded instance type: billed only while it ran.
    out = tmp_path / "as_job"
    printed, data = report(run_dir, "--table", "training_job", cwd=tmp_path, out=out)
    figures = data["runs"][0]
    price = accounting.load_prices()["training_job"]["ml.g5.2xlarge"]
    assert figures["billing"] == "attempts" and figures["idle_s"] == 0
    assert figures["billed_s"] == pytest.approx(end - start, abs=1e-3)
    assert figures["cost"] == pytest.approx(price * (end - start) / 3600, rel=1e-6)
    assert figures["cost_per_useful_hour"] == pytest.approx(figures["cost"] / (seconds_in(lines) / 3600), rel=1e-6)
    assert "iterations done twice" in printed.stdout and "ml.g5.2xlarge" in printed.stdout

    printed, data = report(run_dir, cwd=tmp_path)
    assert data["runs"][0]["iterations_completed"] == 4
    assert f"{100 * acc.useful_fraction:.1f}%" in printed.stdout
    assert_png_has_content(run_dir / "report.png")
    page = (run_dir / "report.html").read_text()
    import base64

    assert base64.b64encode((run_dir / "report.png").read_bytes()).decode() in page
    for label in (
        "wall-clock, submission to end",
        "time to first iteration",
        "useful-training fraction",
        "cost per useful training hour",
        f"{100 * acc.useful_fraction:.1f}%",
    ):
        assert label in page and label in printed.stdout


def test_interrupted_and_resumed_run_counts_redone_iterations_and_lost_time(toy_args, tmp_path):
    args = [*toy_args, "algo.max_iterations=400", "algo.save_interval=2", "algo.keep_checkpoints=0"]
    run_dir, _ = train_until_then_signal(args, tmp_path, tmp_path / "outputs" / "toy", iterations=5)
    first_events = ledger_events(run_dir)
    stopped = next(e for e in first_events if e["event"] == "end")
    assert stopped["how"] == "interrupted"
    k = stopped["iteration"]
    assert 5 <= k < 400
    signal_event = next(e for e in first_events if e["event"] == "signal")
    assert signal_event["reason"] == "SIGTERM" and signal_event["time"] <= stopped["time"]

    # The newest checkpoints never reached storage: only model_2 is left, so iterations 3..k are done again.
    for path in (run_dir / "checkpoints").glob("model_*.pt"):
        if path.name != "model_2.pt":
            path.unlink()
    gap_s = 1.5
    time.sleep(gap_s)
    result = run_train([*toy_args, f"algo.max_iterations={k + 2}", "resume=true"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "from model_2.pt at iteration 2" in result.stdout

    assert [m["iteration"] for m in metric_lines(run_dir)] == list(range(1, k + 3)), "each iteration once"
    lines = accounting.read_metrics(run_dir)  # and the lost ones, in the order they were done
    assert [m["iteration"] for m in lines] == [*range(1, k + 1), *range(3, k + 3)]
    events = ledger_events(run_dir)
    starts = [e["at"] for e in events if e["event"] == "process_start"]
    end = events[-1]["time"]
    first_attempt_end = first_events[-1]["time"]
    # By construction: the first attempt's iterations 1-2 and all of the second attempt's count; the first
    # attempt's 3..k were lost with their checkpoints.
    useful = seconds_in(lines[:2]) + seconds_in(lines[k:])
    redone = seconds_in(lines[2:k])

    acc = accounting.account(run_dir)
    assert (acc.attempts, acc.interruptions, acc.signals, acc.status) == (2, 1, 1, "completed")
    assert acc.iterations_completed == k + 2 and acc.iterations_run == 2 * k and acc.iterations_redone == k - 2
    assert acc.useful_s == pytest.approx(useful, rel=1e-9)
    assert acc.redone_s == pytest.approx(redone, rel=1e-9)
    assert acc.billed_s == pytest.approx(end - starts[0], abs=1e-3)
    assert acc.useful_fraction == pytest.approx(useful / (end - starts[0]), rel=1e-6)
    assert acc.idle_s == pytest.approx(starts[1] - first_attempt_end, abs=1e-3) and acc.idle_s >= gap_s
    assert [a.resumed_from for a in acc.attempt_list] == [None, 2]
    assert [a.how for a in acc.attempt_list] == ["interrupted", "completed"]
    assert [a.iterations for a in acc.attempt_list] == [k, k]

    printed, data = report(run_dir, cwd=tmp_path)
    assert data["runs"][0]["iterations_redone"] == k - 2
    assert "interrupted" in printed.stdout and "SIGTERM" in printed.stdout
    assert_png_has_content(run_dir / "report.png")


def test_optuna_sweep_report_ranks_points_by_the_objective_with_their_overrides(toy_args, tmp_path):
    # One-second episodes, so every iteration logs finished episodes and their reward terms.
    result = run_train(
        [
            "-m",
            *toy_args,
            "algo.max_iterations=3",
            "task.episode_length_s=1.0",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.direction=maximize",
            "hydra.sweeper.sampler.seed=3",
            "task.rewards.track_velocity.weight=interval(0.2,3.0)",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = only_run(tmp_path / "outputs" / "multirun")
    from omegaconf import OmegaConf

    best = OmegaConf.load(sweep / "optimization_results.yaml")

    printed, data = report(sweep, cwd=tmp_path)
    runs = data["runs"]
    assert [r["point"] for r in runs] != [] and sorted(r["point"] for r in runs) == ["0", "1", "2"]
    values = [r["rank_value"] for r in runs]
    assert values == sorted(values, reverse=True) and [r["rank"] for r in runs] == [1, 2, 3]
    for entry in runs:
        point = sweep / entry["point"]
        counted = accounting.counted_metrics(metric_lines(point))
        expected = accounting.final_value(counted, "Episode_Reward/track_velocity")
        assert entry["rank_value"] == pytest.approx(expected)
        # What sets the point apart is its sampled weight, the same one its config ran with.
        (override,) = entry["overrides"]
        assert override.startswith("task.rewards.track_velocity.weight=")
        weight = float(override.split("=")[1])
        config = (point / "config.yaml").read_text()
        assert f"weight: {weight}" in config
    # The trials ran one after another in one process; each is accounted from its own start, not the process's.
    spans = sorted((r["attempt_list"][0]["start"], r["attempt_list"][0]["end"]) for r in runs)
    for (_, earlier_end), (later_start, _) in zip(spans, spans[1:], strict=False):
        assert later_start >= earlier_end
    # train.py returned the same objective to the sweeper that the report ranks by.
    assert float(best.best_value) == pytest.approx(runs[0]["rank_value"], rel=1e-9)
    assert "sweep report" in printed.stdout and "ranked by" in printed.stdout
    assert_png_has_content(sweep / "report.png")
    page = (sweep / "report.html").read_text()
    assert "Points, ranked" in page and runs[0]["overrides"][0] in page

    lowest, _ = report(sweep, "--rank-by", "Metrics/velocity_error", "--lowest", cwd=tmp_path)
    ranked = json.loads((sweep / "report.json").read_text())["runs"]
    errors = [r["rank_value"] for r in ranked]
    assert errors == sorted(errors)


# ---------------------------------------------------------------------------------------------- relaunch
def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """This project's files in a fresh git repository with one commit: a checkout whose state the test controls."""
    copy = tmp_path / "project"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    git(copy, "init", "-q")
    git(copy, "add", "-A")
    git(copy, "commit", "-q", "-m", "snapshot")
    return copy


def run_script(project: Path, script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(project / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_relaunch_is_identical_and_refuses_drift(project_copy, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    outputs = tmp_path / "outputs"
    args = [
        "task=toy",
        f"output_root={outputs}",
        "task.num_envs=8",
        "algo.num_steps_per_env=4",
        "algo.max_iterations=2",
        "seed=7",
        "task.rewards.track_velocity.weight=1.5",
    ]
    first = run_script(project_copy, "train.py", args, cwd=work)
    assert first.returncode == 0, first.stderr[-3000:]
    original = only_run(outputs / "toy")
    manifest = json.loads((original / "manifest.json").read_text())
    assert manifest["git"]["dirty"] is False

    def runs() -> set[Path]:
        return {p for p in (outputs / "toy").iterdir() if p.is_dir()}

    time.sleep(1.1)  # run directories are named by the second
    again = run_script(project_copy, "scripts/relaunch.py", [str(original)], cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "no drift" in again.stdout
    (relaunched,) = runs() - {original}
    assert (relaunched / "config.yaml").read_text() == (original / "config.yaml").read_text()
    assert json.loads((relaunched / "manifest.json").read_text())["cwd"] == str(work)
    note = next(e for e in ledger_events(relaunched) if e["event"] == "relaunch")
    assert note["source"] == str(original) and note["drift"] == [] and note["allowed_drift"] is False

    # An uncommitted change to the code: refused, nothing started.
    toy = project_copy / "tasks" / "toy.py"
    toy.write_text(toy.read_text() + "\n# a local experiment\n")
    before = runs()
    refused = run_script(project_copy, "scripts/relaunch.py", [str(original)], cwd=tmp_path)
    assert refused.returncode == 3
    assert "uncommitted changes" in refused.stderr and "tasks/toy.py" in refused.stderr
    assert "refusing to relaunch" in refused.stderr
    assert runs() == before

    # Told to go ahead: the new run says in its ledger what differed.
    time.sleep(1.1)
    allowed = run_script(project_copy, "scripts/relaunch.py", [str(original), "--allow-drift"], cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    (drifted,) = runs() - before
    note = next(e for e in ledger_events(drifted) if e["event"] == "relaunch")
    assert note["allowed_drift"] is True
    assert [d["what"] for d in note["drift"]] == ["uncommitted changes"]
    assert note["drift"][0]["now"] == ["tasks/toy.py"]
    git(project_copy, "checkout", "--", "tasks/toy.py")

    # A package version that differs from the one the run recorded: refused.
    manifest["packages"]["torch"] = "1.0.0"
    (original / "manifest.json").write_text(json.dumps(manifest))
    before = runs()
    refused = run_script(project_copy, "scripts/relaunch.py", [str(original)], cwd=tmp_path)
    assert refused.returncode == 3 and "package torch: 1.0.0 ->" in refused.stderr
    assert runs() == before


def test_relaunch_takes_new_overrides_and_drops_resume(tmp_path):
    from runner import relaunch

    saved = ["task=toy", "algo.max_iterations=2", "resume=true", "launcher=local"]
    assert relaunch.merge_overrides(saved, ["launcher=hyperpod", "launcher.nodes=2"]) == [
        "task=toy",
        "algo.max_iterations=2",
        "launcher=hyperpod",
        "launcher.nodes=2",
    ]
    # The extra launcher override composes with the saved ones (composition fails on a bad one before any start).
    config = relaunch.compose(relaunch.merge_overrides(saved, ["launcher=hyperpod", "launcher.nodes=2"]))
    assert config["launcher"]["name"] == "hyperpod" and config["launcher"]["nodes"] == 2
    assert config["algo"]["max_iterations"] == 2
    assert relaunch.config_differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 0}) == [
        "a.c: 2 -> 3",
        "d: (absent) -> 0",
    ]
