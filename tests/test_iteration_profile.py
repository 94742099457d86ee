"""scripts/profile_iteration.py times the env step's stages under both frontends, by the same stage names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.iteration_profile import StageTimer, instrument
from rlforge_testing import run_train

ENV_STAGES = (
    "env/action: process",
    "env/action: apply",
    "env/scene: write_data_to_sim",
    "env/sim: step (physics)",
    "env/scene: update (sensors)",
    "env/terminations",
    "env/rewards",
    "env/commands",
    "env/events",
    "env/observations",
)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("frontend", "device"),
    [("torch", "cpu"), ("warp", "cpu"), pytest.param("warp", "cuda", marks=CUDA)],
)
def test_each_env_stage_is_timed_once_per_step_or_physics_step(frontend, device, tmp_path):
    """On a GPU the Warp frontend replays its stages as captured CUDA graphs; each is still timed at every call."""
    out = tmp_path / "profile.json"
    result = run_train(
        [
            "task=h1_flat",
            f"device={device}",
            "task.num_envs=4",
            f"task.frontend={frontend}",
            "algo.num_steps_per_env=4",
            "--iterations",
            "1",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        script="scripts/profile_iteration.py",
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    profile = json.loads(out.read_text())
    calls = profile["stage_calls_per_iteration"]
    assert set(ENV_STAGES) <= set(calls), f"missing: {set(ENV_STAGES) - set(calls)}"
    # h1_flat steps physics 4 times an env step (decimation 4): 4 env steps, 16 physics steps per iteration.
    per_physics_step = {
        "env/action: apply",
        "env/scene: write_data_to_sim",
        "env/sim: step (physics)",
        "env/scene: update (sensors)",
    }
    for stage in ENV_STAGES:
        assert calls[stage] == (16 if stage in per_physics_step else 4), (stage, calls[stage])
    assert not [name for name in calls if name.startswith("env/") and name not in (*ENV_STAGES, "env/reset")]
    seconds = profile["stages_s_per_iteration"]
    assert seconds["env/sim: step (physics)"] > 0 and seconds["env: step (whole)"] >= seconds["env/sim: step (physics)"]


class ReplayingSwitch:
    """Stands in for Isaac Lab's manager call switch in its captured mode, which needs a CUDA device: the first
    call of a stage runs its function (the capture), later calls replay without calling it."""

    def __init__(self) -> None:
        self.captured: set[str] = set()

    def call_stage(self, *, stage: str, warp_call: dict):
        if stage not in self.captured:
            self.captured.add(stage)
            return warp_call["fn"]()
        return None  # replayed: the Python function is not called


def test_warp_stages_are_timed_at_the_switch_where_replays_skip_the_manager_methods():
    from types import SimpleNamespace

    def method():
        return None

    inner = SimpleNamespace(
        _manager_call_switch=ReplayingSwitch(),
        action_manager=SimpleNamespace(process_action=method),
        reward_manager=SimpleNamespace(compute=method),
        sim=SimpleNamespace(step=method),
        scene=SimpleNamespace(update=method),
        command_manager=SimpleNamespace(compute=method),
        _reset_idx=method,
    )
    env = SimpleNamespace(step=method, unwrapped=inner)
    trainer = SimpleNamespace(
        _policy_step=lambda obs: method,
        alg=SimpleNamespace(process_env_step=method, compute_returns=method),
        logger=SimpleNamespace(process_env_step=method),
        _update=method,
        env=env,
    )
    timer = StageTimer(lambda: None)
    timers = instrument(timer, trainer)
    for each in timers:
        each.enabled = True
    switch = inner._manager_call_switch
    for _ in range(3):
        switch.call_stage(stage="RewardManager_compute", warp_call={"fn": inner.reward_manager.compute})
        switch.call_stage(stage="Custom_stage", warp_call={"fn": inner.action_manager.process_action})
    assert timer.calls["env/rewards"] == 3, "replayed calls are timed too"
    assert timer.calls["env/Custom_stage"] == 3, "an unknown stage keeps its own name"


def test_stages_are_labelled_without_synchronizing_when_a_trace_is_recorded():
    """In the traced pass the stages carry the profiler's labels and are timed on the host with no device waits."""
    from contextlib import contextmanager
    from types import SimpleNamespace

    waits, labels = [], []

    @contextmanager
    def label(name):
        labels.append(name)
        yield

    def step(action):
        return action + 1

    trainer = SimpleNamespace(
        _policy_step=lambda obs: step,
        alg=SimpleNamespace(process_env_step=step, compute_returns=step),
        logger=SimpleNamespace(process_env_step=step),
        _update=step,
        env=SimpleNamespace(step=step),
    )
    timer = StageTimer(lambda: waits.append(1))
    (only,) = instrument(timer, trainer)
    only.enabled = True
    only.label = label
    assert trainer.env.step(1) == 2 and trainer._update(2) == 3
    assert labels == ["env: step (whole)", "learn: update"] and not waits
    assert set(only.host_seconds) == {"env: step (whole)", "learn: update"} and not only.seconds
    only.label = None
    trainer.env.step(1)
    assert len(waits) == 2 and only.calls["env: step (whole)"] == 1, "without a label the stage synchronizes"


def test_idle_gaps_sort_the_device_idle_time_by_length():
    from bench.iteration_profile import gaps_between, idle_gaps

    # kernels (µs): two overlapping, then gaps of 5 µs, 50 µs, 500 µs and 5 ms
    intervals = [(0, 10), (5, 20), (25, 30), (80, 90), (590, 600), (5600, 5610)]
    gaps = idle_gaps(gaps_between(intervals))
    assert gaps["gaps"] == 4
    assert gaps["idle_s_under_10us"] == pytest.approx(5e-6)
    assert gaps["idle_s_10us_to_100us"] == pytest.approx(50e-6)
    assert gaps["idle_s_100us_to_1ms"] == pytest.approx(500e-6)
    assert gaps["idle_s_over_1ms"] == pytest.approx(5e-3)


def test_a_trace_without_a_gpu_is_refused_before_anything_is_built():
    from bench.iteration_profile import profile_iteration

    with pytest.raises(ValueError, match="run on a GPU or leave out the trace"):
        profile_iteration(["task=toy", "device=cpu"], 1, trace=Path("t.json.gz"))


def test_idle_spans_and_waits_are_put_on_the_innermost_stage_open_when_they_began():
    from bench.iteration_profile import Stages, gaps_between

    stages = Stages(
        [
            (0, 100, "env: step (whole)"),
            (10, 20, "env/sim: step (physics)"),
            (30, 60, "env/reset"),
            (120, 150, "policy: act"),
        ]
    )
    assert stages.at(15) == "env/sim: step (physics)"
    assert stages.at(25) == "env: step (whole)", "between two inner stages: the outer one"
    assert stages.at(70) == "env: step (whole)"
    assert stages.at(110) == "outside the stages"
    kernels = [(0, 12), (11, 31), (40, 41), (125, 200)]
    assert gaps_between(kernels) == [(31, 40), (41, 125)]
    totals = stages.total(gaps_between(kernels))
    assert totals == {"env/reset": pytest.approx(93e-6)}, "each span counts where it began"
    assert list(stages.total([(121, 122), (35, 45)])) == ["env/reset", "policy: act"], "largest first"
