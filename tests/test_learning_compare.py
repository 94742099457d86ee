"""The learning comparison: reward, episode length and terrain level read from rsl-rl's real console block, judged
against the band of Isaac Lab's seeds, and learning reports of one trainer each merged into one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import bench.learning as learning
from bench.benchmark import main, merge_report_files
from bench.learning import (
    LEARNING_SCHEMA,
    build_learning_report,
    format_learning,
    merge_learning_reports,
    run_learning,
)
from bench.logparse import parse_iterations, summarize_run
from bench.report import build_report
from bench.trainers import Settings
from rlforge_testing import rsl_rl_logger

SETTINGS = {"device": "cuda", "num_envs": 4096, "iterations": 4, "seed": 42, "task": "h1_rough"}
MACHINE = {"host": "h"}


def printed_lines(tmp_path: Path, capsys, extras: list[dict[str, Any] | None]) -> list[tuple[float, str]]:
    """What rsl-rl's logger prints for one iteration per entry of ``extras`` (the episode extras the environment
    logged during it; None: no episode ended), as ``(seconds, line)`` pairs."""
    logger = rsl_rl_logger(tmp_path, num_envs=8)
    lines = []
    for it, logged in enumerate(extras):
        if logged is not None:
            logger.rewbuffer.extend([1.0 + it, 3.0 + it])
            logger.lenbuffer.extend([10.0 * it, 20.0 * it])
            logger.ep_extras.append(logged)
        logger.log(
            it=it,
            start_it=0,
            total_it=len(extras),
            collect_time=0.5,
            learn_time=0.125,
            loss_dict={"value": 0.1},
            learning_rate=1e-3,
            action_std=torch.ones(3),
            rnd_weight=None,
        )
        logger.ep_extras.clear()
        lines += [(float(it), line) for line in capsys.readouterr().out.splitlines()]
    logger.stop_logging_writer()
    return lines


def test_terrain_level_is_read_from_rsl_rl_block(tmp_path, capsys):
    rough = printed_lines(
        tmp_path / "rough",
        capsys,
        [
            None,
            {"Episode_Reward/track": torch.tensor(0.25), "Curriculum/terrain_levels": torch.tensor(2.5)},
            {"Curriculum/terrain_levels": torch.tensor([1.0, 2.0])},
        ],
    )
    assert any(line.endswith("Curriculum/terrain_levels: 2.5000") for _, line in rough)  # the format parsed
    assert any(line.endswith("Mean episode length: 15.00") for _, line in rough)
    blocks = parse_iterations(rough)
    assert [b.get("terrain_level") for b in blocks] == [None, 2.5, 1.5]
    figures = summarize_run(blocks, launched=0.0, env_steps_per_iteration=192)
    assert figures["terrain_level"] == [None, 2.5, 1.5]
    assert figures["mean_reward"] == [None, 3.0, 3.5]  # rsl-rl's buffers keep every finished episode so far
    assert figures["mean_episode_length"] == [None, 15.0, 22.5]

    flat = printed_lines(tmp_path / "flat", capsys, [None, {"Episode_Reward/track": torch.tensor(0.25)}])
    figures = summarize_run(parse_iterations(flat), launched=0.0, env_steps_per_iteration=192)
    assert figures["terrain_level"] == [None, None] and figures["mean_reward"] == [None, 3.0]


def test_parser_reads_only_the_terrain_level_term():
    lines = [
        (0.0, "Learning iteration 0/1"),
        (0.0, "              Curriculum/terrain_levels/other: 7.0000"),
        (0.0, "                    Curriculum/terrain_levels: 0.7500"),
    ]
    assert parse_iterations(lines)[0]["terrain_level"] == 0.75


def run(reward: list, length: list, terrain: list | None = None) -> dict[str, Any]:
    """One run's figures as a learning report keeps them; ``terrain`` None: a task without a terrain curriculum."""
    return {
        "command": ["train"],
        "iterations": len(reward),
        "mean_reward": reward,
        "mean_episode_length": length,
        "terrain_level": terrain if terrain is not None else [None] * len(reward),
    }


def rough_runs() -> dict[str, dict[int, dict[str, Any]]]:
    return {
        "ours": {
            0: run([None, 1.0, 2.0, 9.0], [None, 10.0, 30.0, 50.0], [None, 0.5, 1.0, 4.0]),
            1: run([None, 3.0, 2.0, 9.0], [None, 20.0, 30.0, 50.0], [None, 1.5, 1.0, 4.0]),
        },
        "isaaclab": {
            0: run([None, 1.0, 1.0, 1.0], [None, 10.0, 20.0, 60.0], [None, 1.0, 1.0, 1.0]),
            1: run([0.5, 3.0, 2.5, 2.0], [5.0, 30.0, 25.0, 40.0], [0.0, 1.0, 2.0, 2.0]),
            2: run([0.0, 2.0, 3.0, 1.5], [6.0, 20.0, 28.0, 45.0], [0.0, 1.0, 1.5, 3.0]),
        },
    }


def test_every_metric_is_judged_against_the_spread_of_isaaclab_seeds():
    report = json.loads(json.dumps(build_learning_report(rough_runs(), SETTINGS, MACHINE)))
    assert report["schema"] == LEARNING_SCHEMA and report["settings"]["seeds"] == [0, 1, 2]
    comparisons = report["comparisons"]
    assert set(comparisons) == {"mean_reward", "mean_episode_length", "terrain_level"}
    for metric in comparisons:  # iteration 0: no episode of ours had ended
        assert [r["iteration"] for r in comparisons[metric]["rows"]] == [1, 2, 3]
    assert [r["within"] for r in comparisons["mean_reward"]["rows"]] == [True, True, False]
    # episode length: ours 15, 30, 50 against 10..30, 20..28, 40..60
    assert [r["within"] for r in comparisons["mean_episode_length"]["rows"]] == [True, False, True]
    # terrain level: ours 1, 1, 4 against 1..1, 1..2, 1..3
    assert [r["within"] for r in comparisons["terrain_level"]["rows"]] == [True, True, False]
    assert comparisons["mean_episode_length"]["iterations_within"] == 2
    assert comparisons["mean_episode_length"]["rows"][0]["ours_mean"] == 15.0
    assert report["comparison"] == comparisons["mean_reward"]
    assert report["curves"] == report["metric_curves"]["mean_reward"]
    assert report["curves"]["ours"]["1"] == [None, 3.0, 2.0, 9.0]

    text = format_learning(report)
    assert "our mean reward lies within Isaac Lab's spread of 3 seeds at 2 of 3 iterations" in text
    assert "our mean episode length lies within Isaac Lab's spread of 3 seeds at 2 of 3 iterations" in text
    assert "our terrain level lies within Isaac Lab's spread of 3 seeds at 2 of 3 iterations" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("2 |"))
    assert row.split("|")[2].split() == ["30.0", "20.0", "28.0", "no"]


def test_a_task_without_terrain_curriculum_compares_reward_and_episode_length_only():
    runs = rough_runs()
    for by_seed in runs.values():
        for figures in by_seed.values():
            figures["terrain_level"] = [None] * 4
    report = build_learning_report(runs, SETTINGS, MACHINE)
    assert set(report["comparisons"]) == {"mean_reward", "mean_episode_length"}
    assert "terrain_level" not in report["metric_curves"]
    text = format_learning(report)
    assert "terrain level" not in text and "our mean episode length lies within" in text

    del runs["isaaclab"][0]["terrain_level"]  # a run that died before its first block has no curves at all
    assert set(build_learning_report(runs, SETTINGS, MACHINE)["comparisons"]) == {"mean_reward", "mean_episode_length"}


def test_terrain_level_of_one_trainer_only_is_not_compared():
    runs = rough_runs()
    for figures in runs["isaaclab"].values():
        figures["terrain_level"] = [None] * 4
    report = build_learning_report(runs, SETTINGS, MACHINE)
    assert "terrain_level" not in report["comparisons"] and list(report["metric_curves"]["terrain_level"]) == ["ours"]
    assert "terrain level: printed by ours only; not compared" in format_learning(report)


def test_single_trainer_reports_merge_into_the_comparison_of_both():
    runs = rough_runs()
    whole = json.loads(json.dumps(build_learning_report(runs, SETTINGS, MACHINE)))
    ours = json.loads(json.dumps(build_learning_report({"ours": runs["ours"]}, SETTINGS, MACHINE)))
    theirs = json.loads(json.dumps(build_learning_report({"isaaclab": runs["isaaclab"]}, SETTINGS, MACHINE)))

    assert ours["comparison"] is None and ours["comparisons"] == {} and ours["settings"]["seeds"] == [0, 1]
    assert list(ours["curves"]) == ["ours"] and set(ours["metric_curves"]["terrain_level"]) == {"ours"}
    text = format_learning(ours)
    assert "needs both trainers" in text and "merge it with a report of the other trainer" in text
    assert "ours: 2 seeds (0, 1), 4 iterations" in text and "lies within" not in text

    merged = json.loads(json.dumps(merge_learning_reports([theirs, ours])))
    assert merged["comparisons"] == whole["comparisons"]
    assert merged["metric_curves"] == whole["metric_curves"]
    assert merged["settings"] == whole["settings"] and merged["trainers"] == ["ours", "isaaclab"]
    assert format_learning(merged) == format_learning(whole)

    # one trainer's seeds split over two processes join as well
    halves = [
        build_learning_report({"isaaclab": {s: runs["isaaclab"][s]}}, {**SETTINGS, "seed": s}, MACHINE)
        for s in runs["isaaclab"]
    ]
    assert merge_learning_reports([ours, *json.loads(json.dumps(halves))])["comparisons"] == whole["comparisons"]


def test_merge_refuses_different_settings_repeated_seeds_and_timing_reports(tmp_path):
    runs = rough_runs()
    ours = build_learning_report({"ours": runs["ours"]}, SETTINGS, MACHINE)
    theirs = build_learning_report({"isaaclab": runs["isaaclab"]}, {**SETTINGS, "num_envs": 16}, MACHINE)
    with pytest.raises(ValueError, match="different settings.*num_envs: 4096 vs 16"):
        merge_learning_reports([ours, theirs])
    with pytest.raises(ValueError, match="seed 0 of trainer 'ours' is in more than one report"):
        merge_learning_reports([ours, ours])

    timing = build_report({"ours": {"command": ["train.py"], "phases": {}}}, SETTINGS, MACHINE)
    with pytest.raises(ValueError, match="not a learning report"):
        merge_learning_reports([ours, timing])
    paths = []
    for name, report in (("learn.json", ours), ("timing.json", timing)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(report))
    with pytest.raises(ValueError, match="cannot merge timing reports with learning reports.*learn.json"):
        merge_report_files(paths)
    with pytest.raises(SystemExit, match="cannot merge timing reports with learning reports"):
        main(["--merge", *map(str, paths)])


def test_merge_command_writes_the_learning_comparison(tmp_path, capsys):
    runs = rough_runs()
    paths = []
    for trainer in runs:
        paths.append(tmp_path / f"{trainer}.json")
        paths[-1].write_text(json.dumps(build_learning_report({trainer: runs[trainer]}, SETTINGS, MACHINE)))
    out = tmp_path / "merged.json"
    assert main(["--merge", *map(str, paths), "--out", str(out)]) == 0
    assert "our terrain level lies within Isaac Lab's spread of 3 seeds" in capsys.readouterr().out
    merged = json.loads(out.read_text())
    assert merged["schema"] == LEARNING_SCHEMA and set(merged["comparisons"]) == set(learning.METRICS)


def test_learning_runs_only_the_trainers_and_seeds_asked_for(tmp_path, monkeypatch):
    calls = []

    caches = []

    def fake_run_trainer(trainer, settings, **kwargs):
        calls.append((trainer, settings.seed))
        caches.append(kwargs["cache_dir"])
        figures = run([None, 1.0], [None, 20.0], [None, 0.5])
        del figures["command"]
        return {"command": [trainer], "phases": {"warm": figures}}

    monkeypatch.setattr(learning, "run_trainer", fake_run_trainer)
    monkeypatch.setattr(learning, "machine_info", lambda device: MACHINE)
    settings = Settings(device="cuda", num_envs=4096, iterations=2, seed=42, usd_path="/r/h1.usda")
    report = run_learning(settings, tmp_path, seeds=[3, 5], timeout_s=10.0, trainers=["isaaclab"])
    assert calls == [("isaaclab", 3), ("isaaclab", 5)]
    assert list(report["curves"]) == ["isaaclab"] and list(report["curves"]["isaaclab"]) == [3, 5]
    assert report["comparison"] is None and report["settings"]["seeds"] == [3, 5]
    assert report["runs"]["isaaclab"][5]["command"] == ["isaaclab"]
    assert caches == [tmp_path / "warp-cache-isaaclab"] * 2, "one kernel cache per trainer by default"
    caches.clear()
    run_learning(settings, tmp_path, seeds=[3], timeout_s=10.0, trainers=["isaaclab"], cache_dir=tmp_path / "filled")
    assert caches == [tmp_path / "filled"], "--warp-cache is the cache every run reads"
    with pytest.raises(SystemExit, match="--trainers"):
        main(["--learning", "--trainers", "theirs"])
    with pytest.raises(SystemExit):
        main(["--learning", "--phases", "cold"])


def test_a_trainer_s_own_settings_bind_only_the_reports_that_ran_it():
    """One trainer per GPU: the report of Isaac Lab's runs records our default frontend, which it never used; it
    merges with our runs on the Warp frontend, and the merged settings name the frontend each trainer ran with.
    Two reports of our runs with different frontends stay apart."""
    runs = rough_runs()
    ours = {**SETTINGS, "ours_frontend": "warp", "isaaclab_frontend": "torch"}
    theirs = {**SETTINGS, "ours_frontend": "torch", "isaaclab_frontend": "torch"}
    merged = merge_learning_reports(
        [
            build_learning_report({"isaaclab": runs["isaaclab"]}, theirs, MACHINE),
            build_learning_report({"ours": runs["ours"]}, ours, MACHINE),
        ]
    )
    assert (merged["settings"]["ours_frontend"], merged["settings"]["isaaclab_frontend"]) == ("warp", "torch")
    assert merged["trainers"] == ["ours", "isaaclab"] and merged["comparisons"]

    halves = [
        build_learning_report({"ours": {0: runs["ours"][0]}}, ours, MACHINE),
        build_learning_report({"ours": {1: runs["ours"][1]}}, {**ours, "ours_frontend": "torch"}, MACHINE),
    ]
    with pytest.raises(ValueError, match="ours_frontend: 'warp' vs 'torch'"):
        merge_learning_reports(halves)


def test_one_seed_of_isaac_lab_is_called_no_band():
    runs = rough_runs()
    one = build_learning_report({"ours": runs["ours"], "isaaclab": {1: runs["isaaclab"][1]}}, SETTINGS, MACHINE)
    assert "one seed of Isaac Lab's trainer has no spread" in format_learning(one)
    assert "has no spread" not in format_learning(build_learning_report(runs, SETTINGS, MACHINE))
