"""The benchmark's output parser (on rsl-rl's real console blocks), its report schema and its learning comparison."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from bench.benchmark import parse_args
from bench.learning import learning_comparison
from bench.logparse import parse_iterations, summarize_run
from bench.report import build_report, format_table, merge_reports, validate_report
from bench.trainers import ISAACLAB_TASK, OURS_ON_ISAACLABS_ROBOT, Settings, command_for
from rlforge_testing import rsl_rl_logger


def printed_blocks(tmp_path, capsys, iterations: int) -> list[str]:
    """The console text rsl-rl's logger prints for ``iterations`` iterations, one string per print."""
    logger = rsl_rl_logger(tmp_path, num_envs=8)
    logger.rewbuffer.extend([1.5, 2.5])
    logger.lenbuffer.extend([10.0, 20.0])
    texts = []
    for it in range(iterations):
        logger.ep_extras.append({"Episode_Reward/track": torch.tensor(0.25)})
        logger.log(
            it=it,
            start_it=0,
            total_it=iterations,
            collect_time=0.5 + it,
            learn_time=0.125,
            loss_dict={"value": 0.1},
            learning_rate=1e-3,
            action_std=torch.ones(3),
            rnd_weight=None,
        )
        texts.append(capsys.readouterr().out)
    logger.stop_logging_writer()
    return texts


def test_parser_reads_rsl_rl_console_blocks(tmp_path, capsys):
    texts = printed_blocks(tmp_path, capsys, iterations=3)
    lines = [(10.0 + i, line) for i, text in enumerate(texts) for line in text.splitlines()]
    lines.insert(0, (9.0, "[INFO] something printed before training"))
    blocks = parse_iterations(lines)
    assert [b["iteration"] for b in blocks] == [0, 1, 2]
    assert [b["time"] for b in blocks] == [10.0, 11.0, 12.0]
    assert all(b["total"] == 3 for b in blocks)
    assert [b["collect_s"] for b in blocks] == [0.5, 1.5, 2.5]
    assert all(b["learn_s"] == 0.125 for b in blocks)
    assert blocks[0]["steps_per_s"] == int(24 * 8 / 0.625)
    assert blocks[0]["mean_reward"] == 2.0 and blocks[0]["mean_episode_length"] == 15.0


def test_parser_keeps_the_first_value_of_a_field_in_a_block():
    lines = [
        (1.0, "\x1b[1m Learning iteration 0/2 \x1b[0m"),
        (1.0, "Steps per second: 100"),
        (1.0, "Steps per second: 5"),
        (2.0, "Learning iteration 1/2"),
        (2.0, "Mean reward: -3.5e-01"),
    ]
    blocks = parse_iterations(lines)
    assert blocks[0]["steps_per_s"] == 100 and blocks[1]["mean_reward"] == -0.35


def test_summary_uses_iterations_after_the_first():
    blocks = [
        {"iteration": 0, "time": 50.0, "steps_per_s": 10.0, "collect_s": 9.0, "learn_s": 1.0},
        {"iteration": 1, "time": 52.0, "steps_per_s": 100.0, "collect_s": 1.0, "learn_s": 0.5},
        {"iteration": 2, "time": 53.0, "steps_per_s": 120.0, "collect_s": 0.8, "learn_s": 0.4},
        {"iteration": 3, "time": 54.0, "steps_per_s": 110.0, "collect_s": 0.9, "learn_s": 0.3},
    ]
    figures = summarize_run(blocks, launched=10.0, env_steps_per_iteration=200)
    assert figures["start_to_first_iteration_s"] == 40.0
    assert figures["first_iteration_s"] == 10.0
    assert figures["steady_env_steps_per_s"] == 110.0
    assert figures["steady_wall_env_steps_per_s"] == 200.0  # intervals 2, 1, 1 s: median 1 s
    assert figures["collect_s"] == 0.9 and figures["learn_s"] == 0.4
    assert summarize_run([], launched=0.0, env_steps_per_iteration=1) == {"iterations": 0}


def phase(start: float, steps: float, host: float, gpu: float | None) -> dict:
    return {
        "iterations": 3,
        "start_to_first_iteration_s": start,
        "first_iteration_s": start / 10,
        "steady_env_steps_per_s": steps,
        "steady_wall_env_steps_per_s": steps * 0.9,
        "collect_s": 1.0,
        "learn_s": 0.25,
        "mean_reward": [None, 1.0, 2.0],
        "returncode": 0,
        "wall_s": 99.0,
        "peak_host_mib": host,
        "peak_gpu_mib": gpu,
        "log": "x.log",
    }


def test_report_schema_ratios_table_and_merge(tmp_path):
    settings = {"device": "cuda", "num_envs": 4096, "iterations": 3, "seed": 42}
    ours = {
        "command": ["train.py"],
        "phases": {"cold": phase(200.0, 90.0, 3000.0, 9000.0), "warm": phase(40.0, 100.0, 2900.0, 8000.0)},
    }
    theirs = {
        "command": ["isaaclab"],
        "phases": {"cold": phase(250.0, 70.0, 4000.0, 10000.0), "warm": phase(50.0, 80.0, 3900.0, 10000.0)},
    }
    report = build_report({"ours": ours, "isaaclab": theirs}, settings, {"host": "h"})
    report = json.loads(json.dumps(report))  # what --out writes must survive JSON
    validate_report(report)
    figures = report["trainers"]["ours"]["figures"]
    assert figures["start_to_first_iteration_cold_s"] == 200.0 and figures["start_to_first_iteration_warm_s"] == 40.0
    assert figures["steady_env_steps_per_s"] == 100.0  # steady figures come from the warm run
    assert figures["peak_host_mib"] == 3000.0 and figures["peak_gpu_mib"] == 9000.0  # peaks over both runs
    assert report["ratios"]["steady_env_steps_per_s"] == pytest.approx(100.0 / 80.0)
    assert report["ratios"]["start_to_first_iteration_cold_s"] == pytest.approx(200.0 / 250.0)
    table = format_table(report)
    assert "ours/isaaclab" in table and "1.250" in table

    halves = [
        build_report({"ours": ours}, settings, {"host": "h"}),
        build_report({"isaaclab": theirs}, settings, {"host": "h"}),
    ]
    assert halves[0]["ratios"] is None
    merged = merge_reports(json.loads(json.dumps(halves)))
    assert merged["ratios"] == report["ratios"]
    with pytest.raises(ValueError, match="different settings.*seed: 42 vs 1"):
        merge_reports([halves[0], build_report({"isaaclab": theirs}, {**settings, "seed": 1}, {})])
    # Each trainer run in its own call, each call with its own trainer's settings: ours' frontend and extra
    # overrides say nothing about Isaac Lab's run, so the two still merge, keeping ours' settings from its report.
    ours_only = build_report({"ours": ours}, {**settings, "ours_frontend": "warp", "extra_ours": ["a=1"]}, {})
    theirs_only = build_report({"isaaclab": theirs}, {**settings, "ours_frontend": "torch", "extra_ours": []}, {})
    for pair in ([ours_only, theirs_only], [theirs_only, ours_only]):
        joined = merge_reports(json.loads(json.dumps(pair)))
        assert joined["ratios"] == report["ratios"]
        assert joined["settings"]["ours_frontend"] == "warp" and joined["settings"]["extra_ours"] == ["a=1"]
    with pytest.raises(ValueError, match="ours_frontend: 'warp' vs 'torch'"):
        merge_reports([ours_only, build_report({"ours": ours, "isaaclab": theirs}, theirs_only["settings"], {})])
    broken = copy.deepcopy(report)
    del broken["trainers"]["ours"]["figures"]["learn_s"]
    with pytest.raises(ValueError, match="learn_s"):
        validate_report(broken)


def test_both_trainers_get_the_same_task_robot_envs_seed_and_iterations(tmp_path):
    settings = Settings(
        device="cuda", num_envs=4096, iterations=20, seed=7, usd_path="/r/h1.usda", terrain_rows=4, terrain_cols=5
    )
    ours = command_for("ours", settings, tmp_path)
    theirs = command_for("isaaclab", settings, tmp_path)
    assert {
        "task=h1_rough",
        "task.num_envs=4096",
        "seed=7",
        "algo.max_iterations=20",
        "device=cuda",
        "task.terrain.num_rows=4",
        "task.terrain.num_cols=5",
    } <= set(ours)
    assert theirs[theirs.index("--task") + 1] == ISAACLAB_TASK
    assert theirs[theirs.index("--num_envs") + 1] == "4096" and theirs[theirs.index("--seed") + 1] == "7"
    assert theirs[theirs.index("--max_iterations") + 1] == "20"
    assert {
        "env.scene.robot.spawn.usd_path=/r/h1.usda",
        "agent.device=cuda:0",
        "env.scene.terrain.terrain_generator.num_rows=4",
        "env.scene.terrain.terrain_generator.num_cols=5",
    } <= set(theirs)


@pytest.mark.parametrize("task", ["h1_rough", "h1_flat"])
def test_ours_runs_the_robot_isaac_labs_trainer_runs(compose_cfg, task):
    """Both trainers load one robot USD; the joint settings on top of it (armature, passive damping, effort and
    velocity limits) must be the same too: our environment config, composed with what the benchmark gives ours,
    holds the robot Isaac Lab's own config for the task holds (its USD path aside, which the benchmark gives it)."""
    from isaaclab_tasks.utils.parse_cfg import parse_env_cfg

    from tasks.isaaclab_env import build_env_cfg

    def robot(env_cfg) -> dict:
        cfg = env_cfg.scene.robot.to_dict()
        cfg["spawn"].pop("usd_path")
        return cfg

    ours_default = compose_cfg([f"task={task}"]).task
    ours = compose_cfg([f"task={task}", *OURS_ON_ISAACLABS_ROBOT]).task
    theirs = robot(parse_env_cfg(str(ours.isaaclab_id), device="cpu", num_envs=ours.num_envs))
    assert robot(build_env_cfg(ours, "cpu", 0)) == theirs
    assert robot(build_env_cfg(ours_default, "cpu", 0)) != theirs, "ours by default: Unitree's armature and damping"
    assert set(OURS_ON_ISAACLABS_ROBOT) <= set(command_for("ours", Settings("cpu", 8, 2, 0, "/r/h1.usda"), Path(".")))


def test_quick_and_learning_defaults_are_cpu_sized():
    quick = parse_args(["--quick"])
    assert (quick.device, quick.num_envs, quick.terrain_rows) == ("cpu", 16, 4)
    learning = parse_args(["--learning"])
    assert learning.device == "cpu" and learning.seeds == [0, 1, 2]
    assert (learning.num_envs, learning.terrain_rows, learning.iterations) == (16, 4, 25)


def test_learning_on_a_gpu_is_at_scale_unless_told_otherwise():
    at_scale = parse_args(["--learning", "--device", "cuda"])
    assert (at_scale.num_envs, at_scale.terrain_rows, at_scale.terrain_cols, at_scale.iterations) == (
        4096,
        None,
        None,
        300,
    )
    told = parse_args(
        ["--learning", "--device", "cuda", "--num-envs", "2048", "--terrain-rows", "5", "--iterations", "9"]
    )
    assert (told.num_envs, told.terrain_rows, told.iterations) == (2048, 5, 9)


def test_learning_comparison_against_the_spread_of_seeds():
    curves = {
        "ours": {0: [None, 1.0, 2.0, 9.0], 1: [None, 3.0, 2.0, 9.0]},
        "isaaclab": {0: [None, 1.0, 1.0, 1.0], 1: [0.5, 3.0, 2.5, 2.0], 2: [0.0, 2.0, 3.0, 1.5]},
    }
    comparison = learning_comparison(curves)
    assert [r["iteration"] for r in comparison["rows"]] == [1, 2, 3]  # iteration 0: an episode had not ended
    assert [r["within"] for r in comparison["rows"]] == [True, True, False]
    assert comparison["iterations_within"] == 2 and comparison["fraction_within"] == pytest.approx(2 / 3)


def test_import_timing_runs_each_group_in_a_new_process_and_sums_them():
    from bench.first_iteration import format_imports, measure_imports

    groups = {"standard library": ["json", "os.path:join"], "NumPy": ["numpy"]}
    rows = measure_imports(2, "cpu", groups)
    assert [list(row) for row in rows] == [[*groups, "device start (PyTorch and Warp)"]] * 2
    assert all(seconds >= 0 for row in rows for seconds in row.values())
    table = format_imports([{"a": 1.0, "b": 0.5}, {"a": 3.0, "b": 0.5}], "cpu")
    lines = table.splitlines()
    assert lines[-3].split()[:3] == ["a", "2.00s", "1.00-3.00s"]
    assert lines[-1].split()[-2:] == ["2.50s", "1.50-3.50s"]


def test_import_timing_of_a_module_that_is_not_there_says_which(capsys):
    from bench.first_iteration import measure_imports

    with pytest.raises(SystemExit, match="No module named 'not_a_module_here'"):
        measure_imports(1, "cpu", {"missing": ["not_a_module_here"]})


def test_import_timing_refuses_the_options_of_a_training_run(capsys):
    from bench.first_iteration import main

    with pytest.raises(SystemExit):
        main(["--imports", "1", "--runs", "3", "task.num_envs=8"])
    assert "drop --runs, train.py overrides" in capsys.readouterr().err
