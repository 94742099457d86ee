"""`launcher=local` with `launcher.runs_per_gpu`: sweep points trained at once, each a process of its own, in the run
directories Hydra's basic launcher gives them; on this machine's CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from launchers import packing
from rlforge_testing import SMALL_TOY, run_train

TOY = ["task=toy", "device=cpu", *SMALL_TOY, "algo.max_iterations=2"]


def sweep_dir(output_root: Path) -> Path:
    (found,) = (output_root / "multirun").iterdir()
    return found


def point_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: p.name)


def ledger(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans that overlap at one moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


def test_most_at_once_counts_overlapping_spans():
    assert most_at_once([(0, 2), (1, 3), (2.5, 4)]) == 2
    assert most_at_once([(0, 1), (1.5, 2), (3, 4)]) == 1
    assert most_at_once([(0, 10), (1, 9), (2, 8)]) == 3


def test_four_points_two_at_a_time_each_in_the_run_dir_the_basic_launcher_gives(tmp_path):
    output_root = tmp_path / "outputs"
    common = [*TOY, f"output_root={output_root}", "launcher.runs_per_gpu=2"]
    result = run_train(["-m", *common, "seed=11,12,13,14"], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    sweep = sweep_dir(output_root)
    # Nothing but the points' run directories is left in the sweep directory.
    assert [p.name for p in point_dirs(sweep)] == ["0", "1", "2", "3"]
    spans = []
    for number, run_dir in enumerate(point_dirs(sweep)):
        seed = 11 + number
        # Hydra's own record of the job, as its basic launcher writes it.
        assert yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) == [*common, f"seed={seed}"]
        hydra = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra
        assert (hydra.job.num, str(hydra.mode), hydra.runtime.output_dir) == (number, "MULTIRUN", str(run_dir))
        # The run's own record.
        assert yaml.safe_load((run_dir / "overrides.yaml").read_text()) == [*common, f"seed={seed}"]
        assert OmegaConf.load(run_dir / "config.yaml").seed == seed
        assert json.loads((run_dir / "summary.json").read_text())["iterations"] == 2
        assert (run_dir / "checkpoints" / "model_2.pt").is_file()
        assert "run finished: 2 iterations" in (run_dir / packing.POINT_LOG).read_text()
        events = ledger(run_dir)
        (start,) = [event for event in events if event["event"] == "process_start"]
        (end,) = [event for event in events if event["event"] == "end"]
        assert end["how"] == "completed"
        spans.append((start["at"], end["time"]))
    # Each point ran in a process of its own, and two of them at once, never more.
    assert len({event["pid"] for run_dir in point_dirs(sweep) for event in ledger(run_dir) if "pid" in event}) == 4
    assert most_at_once(spans) == 2
    for number in range(4):
        assert f"#{number} completed" in result.stdout + result.stderr


def test_a_failing_point_is_reported_with_its_overrides_and_log_while_the_others_finish(tmp_path):
    output_root = tmp_path / "outputs"
    result = run_train(
        ["-m", *TOY, f"output_root={output_root}", "launcher.runs_per_gpu=2", "task.kind=no_such_kind,toy,toy"],
        cwd=tmp_path,
        timeout=300,
    )
    printed = result.stdout + result.stderr
    assert result.returncode != 0
    failed, *finished = point_dirs(sweep_dir(output_root))
    log = failed / packing.POINT_LOG
    assert "sweep point #0 (task=toy " in printed
    assert "task.kind=no_such_kind) failed: ValueError: task.kind=no_such_kind is not a registered" in printed
    assert f"its output: {log}" in printed
    # The point's own log holds the whole traceback.
    assert "Traceback" in log.read_text() and "is not a registered task kind" in log.read_text()
    assert not (failed / "summary.json").exists()
    # The other points, the third started after the failure in the slot it left, completed.
    assert [p.name for p in finished] == ["1", "2"]
    for run_dir in finished:
        assert json.loads((run_dir / "summary.json").read_text())["iterations"] == 2
    assert "1 of 3 sweep points did not complete" in printed


def test_runs_per_gpu_below_one_is_refused_with_what_to_give(compose_cfg):
    from hydra_plugins.local_launcher.launcher import LocalLauncher

    cfg = compose_cfg(["task=toy", "launcher.runs_per_gpu=0"], return_hydra_config=True)
    with pytest.raises(ValueError, match=r"launcher.runs_per_gpu=0: give 1 .* or more"):
        LocalLauncher().setup(hydra_context=None, task_function=None, config=cfg)


def test_a_wrong_type_fails_at_composition(compose_cfg):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="runs_per_gpu"):
        compose_cfg(["launcher.runs_per_gpu=two"])


def test_one_run_per_gpu_is_hydras_basic_launcher(compose_cfg, monkeypatch):
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    from hydra_plugins.local_launcher.launcher import LocalLauncher

    cfg = compose_cfg(["task=toy"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.local_launcher.launcher.LocalLauncher"
    calls = []
    monkeypatch.setattr(BasicLauncher, "launch", lambda self, overrides, index: calls.append((overrides, index)) or [])
    launcher = LocalLauncher()
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    launcher.launch([["seed=1"], ["seed=2"]], 0)
    assert calls == [([["seed=1"], ["seed=2"]], 0)]


def test_a_point_asking_for_another_gpu_than_its_own_is_refused_before_anything_starts(tmp_path):
    output_root = tmp_path / "outputs"
    result = run_train(
        ["-m", *TOY, f"output_root={output_root}", "launcher.runs_per_gpu=2", "device=cuda:1", "seed=1,2"],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode != 0
    assert "asks for device=cuda:1" in result.stderr and "use device=auto or device=cuda" in result.stderr
    assert not list(output_root.glob("multirun/*/*/ledger.jsonl"))


def test_slots_go_round_robin_over_the_gpus_torch_sees():
    gpus = packing.visible_gpus(2, {"CUDA_VISIBLE_DEVICES": "3,5,7"})
    assert gpus == ["3", "5"]
    assert packing.visible_gpus(2, {}) == ["0", "1"]
    slots = packing.local_slots(2, gpus)
    assert [environment["CUDA_VISIBLE_DEVICES"] for _, environment in slots] == ["3", "5", "3", "5"]
    assert packing.local_slots(3, []) == [("CPU", {})] * 3


def test_a_points_process_trains_alone_on_its_share_of_the_cpus_and_imports_this_code():
    inherited = {"RANK": "3", "WORLD_SIZE": "8", "PYTHONPATH": "/elsewhere", "HOME": "/h"}
    environment = packing.point_environment({"CUDA_VISIBLE_DEVICES": "1"}, inherited, threads=4)
    assert "RANK" not in environment and "WORLD_SIZE" not in environment
    assert environment["PYTHONPATH"] == f"{packing.code_root()}:/elsewhere"
    assert environment["CUDA_VISIBLE_DEVICES"] == "1" and environment["HOME"] == "/h"
    assert environment["OMP_NUM_THREADS"] == "4"
    # A thread count the user chose is kept.
    assert packing.point_environment({}, {**inherited, "OMP_NUM_THREADS": "2"}, threads=4)["OMP_NUM_THREADS"] == "2"


def test_the_pool_reports_how_each_process_ended_and_starts_nothing_once_asked_to_stop(tmp_path):
    import functools
    import os
    import signal
    import time

    from hydra.core.utils import JobReturn, JobStatus

    completes = functools.partial(packing.PointResult, JobReturn(overrides=["b"], status=JobStatus.COMPLETED))
    points = [
        packing.Point(0, ["a"], tmp_path / "0", functools.partial(time.sleep, 60)),
        packing.Point(1, ["b"], tmp_path / "1", completes),
        packing.Point(2, ["c"], tmp_path / "2", functools.partial(int, "not a number")),
        packing.Point(3, ["d"], tmp_path / "3", completes),
    ]
    pool = packing.PointPool([("CPU", {})], tmp_path / "sweep" / packing.PACKED_DIR)

    def on_start(point, slot, pid):
        assert slot == "CPU"
        if point.number == 0:
            os.kill(pid, signal.SIGKILL)  # as a lost process, or the kernel's OOM killer, would end it

    def on_end(outcome):
        if outcome.point.number == 2:
            pool.stop_starting()

    killed, completed, raised, never = pool.run(points, on_start=on_start, on_end=on_end)
    assert killed.killed_by == signal.SIGKILL and killed.result is None
    assert killed.failure() == "its process was killed by SIGKILL"
    assert completed.completed and completed.job_return().return_value is None
    assert raised.returncode == 1 and not raised.completed
    failure = raised.job_return()
    assert failure.status == JobStatus.FAILED
    assert str(failure._return_value) == (
        "sweep point #2 (c) failed: ValueError: invalid literal for int() with base 10: 'not a number'; "
        f"its output: {tmp_path / '2' / packing.POINT_LOG}"
    )
    assert "Traceback" in (tmp_path / "2" / packing.POINT_LOG).read_text()
    assert never is None and not (tmp_path / "3").exists()
    # The pickled calls and results are gone, and so is their folder.
    assert not (tmp_path / "sweep" / packing.PACKED_DIR).exists()


def test_sigterm_to_a_packed_sweep_stops_every_running_point_with_a_checkpoint_and_starts_no_other(tmp_path):
    import contextlib
    import os
    import signal

    from rlforge_testing import start_train, wait_for

    output_root = tmp_path / "outputs"
    args = [
        "-m",
        "task=toy",
        "device=cpu",
        *SMALL_TOY,
        "algo.max_iterations=100000",
        "algo.save_interval=100000",
        f"output_root={output_root}",
        "launcher.runs_per_gpu=2",
        "seed=1,2,3",
    ]
    sweep = start_train(args, tmp_path)
    try:

        def both_training() -> bool:
            found = list(output_root.glob("multirun/*/[01]/metrics.jsonl"))
            return len(found) == 2 and all(len(path.read_text().splitlines()) >= 2 for path in found)

        wait_for(both_training, "both packed points training", timeout=180)
        sweep.send_signal(signal.SIGTERM)
        output = sweep.communicate(timeout=120)[0]
    finally:
        if sweep.poll() is None:  # the stop did not end the sweep: leave none of its processes running
            sweep.kill()
            for run_dir in output_root.glob("multirun/*/[0-9]"):
                for event in ledger(run_dir):
                    if event["event"] == "process_start":
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(event["pid"], signal.SIGKILL)
    assert sweep.returncode != 0, output[-3000:]  # the sweep did not complete
    points = point_dirs(sweep_dir(output_root))
    assert [p.name for p in points] == ["0", "1"], "the third point must not start after the stop"
    for run_dir in points:
        (end,) = [event for event in ledger(run_dir) if event["event"] == "end"]
        assert end["how"] == "interrupted" and end["reason"] == "SIGTERM"
        assert (run_dir / "checkpoints" / f"model_{end['iteration']}.pt").is_file()
    assert "3 of 3 sweep points did not complete" in output, output[-3000:]
    assert "seed=3) was not started: the sweep was asked to stop" in output, output[-3000:]
