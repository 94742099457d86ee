"""Training runs for real: the toy task in seconds, the H1 task on the real simulator (marked slow)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlforge_testing import REFERENCE_H1, ROOT, only_run, run_train, train_until_then_signal


def adam_steps(checkpoint: Path) -> int:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return int(max(s["step"] for s in state["optimizer_state_dict"]["state"].values()))


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def test_toy_train_then_resume_restores_optimizer(toy_args, tmp_path):
    first = run_train([*toy_args, "algo.max_iterations=2", "algo.save_interval=1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = only_run(tmp_path / "outputs" / "toy")
    updates_per_iteration = 5 * 4  # learning epochs x minibatches
    assert adam_steps(run_dir / "checkpoints" / "model_2.pt") == 2 * updates_per_iteration

    second = run_train([*toy_args, "algo.max_iterations=4", "resume=true"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert only_run(tmp_path / "outputs" / "toy") == run_dir, "resume must continue the same run directory"
    assert "from model_2.pt at iteration 2" in second.stdout
    # Adam's step count continues from the restored state instead of starting again.
    assert adam_steps(run_dir / "checkpoints" / "model_4.pt") == 4 * updates_per_iteration
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2, 3, 4]
    kinds = [e["event"] for e in events(run_dir)]
    assert kinds.count("process_start") == 2 and "resume" in kinds
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] == 4 and summary["checkpoint"].endswith("model_4.pt")
    assert "run finished: 4 iterations" in second.stdout
    assert list(run_dir.glob("events.out.tfevents.*")), "TensorBoard logs are missing"


def test_resume_named_run_directory(toy_args, tmp_path):
    assert run_train([*toy_args, "algo.max_iterations=1"], cwd=tmp_path).returncode == 0
    run_dir = only_run(tmp_path / "outputs" / "toy")
    result = run_train([*toy_args, "algo.max_iterations=2", f"resume={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "checkpoints" / "model_2.pt").is_file()


def test_named_experiment_files_its_runs_and_resume_finds_them(toy_args, tmp_path):
    first = run_train([*toy_args, "experiment=myname", "algo.max_iterations=1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = only_run(tmp_path / "outputs" / "myname")
    assert not (tmp_path / "outputs" / "toy").exists()
    second = run_train([*toy_args, "experiment=myname", "algo.max_iterations=2", "resume=true"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert only_run(tmp_path / "outputs" / "myname") == run_dir
    assert (run_dir / "checkpoints" / "model_2.pt").is_file()


def test_clip_actions_bounds_the_actions_the_env_applies(toy_args, tmp_path):
    # Short episodes end within each iteration, so the toy logs its action penalty: weight x mean of |a|^2 per step.
    weight, clip = -0.01, 0.05
    common = [
        *toy_args,
        "algo.max_iterations=2",
        "task.episode_length_s=0.3",
        f"task.rewards.action_magnitude.weight={weight}",
    ]
    penalties = {}
    for name, extra in (("clipped", [f"algo.clip_actions={clip}"]), ("free", [])):
        result = run_train([*common, *extra, f"experiment={name}"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = (only_run(tmp_path / "outputs" / name) / "metrics.jsonl").read_text().splitlines()
        penalties[name] = [json.loads(line)["Episode_Reward/action_magnitude"] for line in metrics]
    bound = abs(weight) * 2 * clip**2  # two action dimensions, each within [-clip, clip]
    assert all(abs(p) <= bound * 1.0001 for p in penalties["clipped"]), penalties
    assert all(abs(p) > 10 * bound for p in penalties["free"]), penalties


def test_corrupt_latest_checkpoint_falls_back(toy_args, tmp_path):
    assert run_train([*toy_args, "algo.max_iterations=2", "algo.save_interval=1"], cwd=tmp_path).returncode == 0
    run_dir = only_run(tmp_path / "outputs" / "toy")
    (run_dir / "checkpoints" / "model_2.pt").write_bytes(b"torn write")
    result = run_train([*toy_args, "algo.max_iterations=3", "resume=true"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model_2.pt (iteration 2) is unreadable" in result.stdout
    assert "from model_1.pt at iteration 1" in result.stdout
    assert adam_steps(run_dir / "checkpoints" / "model_3.pt") == 3 * 20


def test_local_sweep_makes_one_run_dir_per_point(toy_args, tmp_path):
    result = run_train(
        ["-m", *toy_args, "algo.max_iterations=1", "task.rewards.track_velocity.weight=0.5,2.0"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = only_run(tmp_path / "outputs" / "multirun")
    points = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in points] == ["0", "1"]
    weights = [
        float(next(line for line in (p / "config.yaml").read_text().splitlines() if "weight" in line).split(":")[1])
        for p in points
    ]
    assert weights == [0.5, 2.0]
    assert all((p / "checkpoints" / "model_1.pt").is_file() for p in points)


def test_sigterm_checkpoints_then_resume_reaches_exact_count(toy_args, tmp_path):
    args = [*toy_args, "algo.max_iterations=400", "algo.save_interval=1000"]
    run_dir, code = train_until_then_signal(args, tmp_path, tmp_path / "outputs" / "toy", iterations=3)
    assert code != 0
    metrics = run_dir / "metrics.jsonl"
    stop = next(e for e in events(run_dir) if e["event"] == "end")
    assert stop["how"] == "interrupted" and stop["reason"] == "SIGTERM"
    stopped_at = stop["iteration"]
    assert 3 <= stopped_at < 400
    # The checkpoint was written at the stop, not at an earlier save_interval.
    assert (run_dir / "checkpoints" / f"model_{stopped_at}.pt").is_file()
    result = run_train([*toy_args, "algo.max_iterations=" + str(stopped_at + 3), "resume=true"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    iterations = [json.loads(line)["iteration"] for line in metrics.read_text().splitlines()]
    assert iterations == list(range(1, stopped_at + 4)), "no iteration may be lost or repeated"


@pytest.mark.slow
def test_h1_rough_trains_two_iterations_then_resumes_to_four(tmp_path):
    args = [
        "task=h1_rough",
        "device=cpu",
        f"output_root={tmp_path / 'outputs'}",
        "task.num_envs=8",
        "task.terrain.num_rows=2",
        "task.terrain.num_cols=2",
        "algo.num_steps_per_env=8",
    ]
    first = run_train([*args, "algo.max_iterations=2"], cwd=tmp_path, timeout=900)
    assert first.returncode == 0, first.stderr[-4000:]
    run_dir = only_run(tmp_path / "outputs" / "h1_rough")
    startup = (run_dir / "startup.log").read_text()  # the compact console's home for start-up output
    # All found in the kernel cache, or built by workers (with training started before the last was done).
    built_ahead = r"Warp kernels: (\d+ of )?[1-9]\d* modules built ahead"
    assert re.search(built_ahead, startup), "the task's kernels were not built ahead"
    assert "left to first use" not in startup and "not found" not in startup
    assert adam_steps(run_dir / "checkpoints" / "model_2.pt") == 2 * 20
    second = run_train([*args, "algo.max_iterations=4", "resume=true"], cwd=tmp_path, timeout=900)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "at iteration 2" in second.stdout
    assert adam_steps(run_dir / "checkpoints" / "model_4.pt") == 4 * 20
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2, 3, 4]
    # Per-reward-term curves reach the metrics and the TensorBoard files.
    assert any("Episode_Reward/track_lin_vel_xy_exp" in m for m in metrics)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["packages"]["isaaclab"] == "3.0.0" and manifest["device"] == "cpu"

    exported = run_train([str(run_dir)], cwd=tmp_path, script="scripts/export.py", timeout=300)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (run_dir / "exported" / "policy.onnx").is_file() and (run_dir / "exported" / "policy.pt").is_file()
    played = run_train(
        [str(run_dir), "--episodes", "2", "--num-envs", "4", "--device", "cpu"],
        cwd=tmp_path,
        script="scripts/play.py",
        timeout=900,
    )
    assert played.returncode == 0, played.stderr[-3000:]
    assert "mean return" in played.stdout and "error_vel_xy" in played.stdout


@pytest.mark.slow
@pytest.mark.skipif(not (REFERENCE_H1 / "mjcf" / "h1.xml").is_file(), reason="reference H1 MJCF not beside the project")
def test_user_mjcf_robot_loads_and_trains(tmp_path):
    args = [
        "task=h1_flat",
        "device=cpu",
        f"output_root={tmp_path / 'outputs'}",
        "task.num_envs=4",
        "task.robot.source=file",
        f"task.robot.file={REFERENCE_H1 / 'mjcf' / 'h1.xml'}",
        "algo.num_steps_per_env=4",
        "algo.max_iterations=1",
    ]
    result = run_train(args, cwd=tmp_path, timeout=900, env={"RLFORGE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-4000:]
    run_dir = only_run(tmp_path / "outputs" / "h1_flat")
    assert (run_dir / "checkpoints" / "model_1.pt").is_file()
    assert list((tmp_path / "cache" / "robots").glob("h1-*/h1.usda"))


def test_wandb_goes_offline_without_key_and_resume_keeps_the_run(toy_args, tmp_path):
    env = {"WANDB_API_KEY": None, "WANDB_MODE": None, "HOME": str(tmp_path)}
    args = [*toy_args, "logger=wandb", "logger.project=test", "logger.tags=[a,b]"]
    first = run_train([*args, "algo.max_iterations=1"], cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = only_run(tmp_path / "outputs" / "toy")
    run_id = json.loads((run_dir / "manifest.json").read_text())["wandb_run_id"]
    offline = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1, "an offline wandb run with the manifest's id is expected"
    second = run_train([*args, "algo.max_iterations=2", "resume=true"], cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    # The resumed attempt logs to the same wandb run id.
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))) == 2
    assert sorted((run_dir / "wandb").glob("offline-run-*")) == sorted(
        (run_dir / "wandb").glob(f"offline-run-*-{run_id}")
    )


def test_two_ranks_on_cpu_with_gloo_rank0_writes(toy_args, tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "train.py"),
        *toy_args,
        "algo.max_iterations=2",
        f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2], "only rank 0 writes metrics"
    assert metrics[0]["env_steps"] == 8 * 16 * 2, "each iteration counts both ranks' environments"
    assert json.loads((run_dir / "manifest.json").read_text())["world_size"] == 2
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["model_2.pt"]
    assert result.stdout.count("run finished") == 1


@pytest.mark.slow
@pytest.mark.parametrize("frontend", ["torch", "warp"])
def test_h1_rough_kernel_list_builds_ahead_and_is_used(frontend, tmp_path):
    """Every module the task lists for the frontend builds ahead, that build is the one the simulator runs, and no
    module the run loads is missing from the list."""
    args = ["task=h1_rough", "device=cpu", "task.num_envs=8", "task.terrain.num_rows=2", "task.terrain.num_cols=2"]
    args.append(f"task.frontend={frontend}")
    checked = run_train(
        [*args, "algo.num_steps_per_env=8", "--check", "--iterations", "1"],
        cwd=tmp_path,
        script="scripts/warp_modules.py",
        timeout=900,
    )
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    assert re.search(r"(\d+) of \1 listed modules built ahead", checked.stdout), checked.stdout[-3000:]
    assert "loaded, not listed" not in checked.stdout, "the list lacks a module the run compiled at first use"
