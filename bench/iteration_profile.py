"""Where one training iteration spends its time: collection (policy, each stage of the env step) and learning.

    python scripts/profile_iteration.py task=h1_rough device=cuda task.num_envs=4096 --iterations 5
    python scripts/profile_iteration.py task=h1_flat task.num_envs=32 --iterations 2 --out prof.json   # CPU

Arguments that contain ``=`` are Hydra overrides of ``conf/train.yaml``; the rest are this command's options.
It builds the environment and trainer as ``train.py`` does, runs one warm-up iteration, then three passes over
the same number of iterations:

1. plain: the loop as it trains, timed only per iteration (the reference figure);
2. stages: every stage wrapped in a timer that synchronizes the device before and after, so each stage's figure
   is its own work (with host-device overlap removed, their sum exceeds the plain figure);
3. device activity (CUDA only): one iteration under ``torch.profiler``; the union of the GPU's kernel intervals
   against the wall time says whether the iteration is bound by the device or by the host launching work. The
   stages are labelled in the trace and not synchronized: per stage, the host's time, its waits for the device
   and the device's idle time from there; ``--trace FILE`` keeps the trace (Chrome's format).

It prints a table and writes the figures as JSON (``--out``). Nothing is written to a run directory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.compose import compose_config
from runner.loop import build, one_iteration


class StageTimer:
    """Wraps methods so that each call's duration is added to a named stage, synchronizing the device around it."""

    def __init__(self, synchronize: Callable[[], None]) -> None:
        self.synchronize = synchronize
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.enabled = False
        self.label: Callable[[str], Any] | None = None
        """When set (``torch.profiler.record_function``), each stage is labelled in the trace by this context and
        timed on the host into ``host_seconds`` without synchronizing, so the work overlaps as it does in training."""
        self.host_seconds: dict[str, float] = defaultdict(float)
        self._depth = 0

    def wrap(self, owner: Any, attribute: str, stage: str) -> None:
        """Replace ``owner.attribute`` (a bound method) with a timed call; nested timed calls count in the outer."""
        setattr(owner, attribute, self.timed(getattr(owner, attribute), stage))

    def timed(self, inner: Callable, stage: str | Callable[[dict], str]) -> Callable:
        """``inner``, timed into ``stage`` (or into the stage named by ``stage(kwargs)`` for each call)."""

        def timed(*args, **kwargs):
            if not self.enabled or self._depth:
                return inner(*args, **kwargs)
            name = stage(kwargs) if callable(stage) else stage
            self._depth += 1
            if self.label is not None:
                start = time.perf_counter()
                try:
                    with self.label(name):
                        return inner(*args, **kwargs)
                finally:
                    self.host_seconds[name] += time.perf_counter() - start
                    self._depth -= 1
            self.synchronize()
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.synchronize()
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1
                self._depth -= 1

        return timed


def instrument(timer: StageTimer, trainer) -> list[StageTimer]:
    """Timers on the trainer's and (for Isaac Lab) the environment's stages; returns every timer it set up."""
    policy_step = trainer._policy_step
    trainer._policy_step = lambda obs: timer.timed(policy_step(obs), "policy: act")
    timer.wrap(trainer.alg, "process_env_step", "storage: process_env_step")
    records = getattr(trainer, "episode_records", None)  # algo.speed.deferred_episode_stats
    if records is not None:
        timer.wrap(records, "add", "logger: process_env_step")
        timer.wrap(records, "flush", "logger: episodes handed over")
    else:
        timer.wrap(trainer.logger, "process_env_step", "logger: process_env_step")
    timer.wrap(trainer.alg, "compute_returns", "learn: compute_returns")
    timer.wrap(trainer, "_update", "learn: update")
    env = trainer.env
    timer.wrap(env, "step", "env: step (whole)")
    inner = getattr(env, "unwrapped", None)
    if inner is None or not hasattr(inner, "action_manager"):
        return [timer]
    # The env step's stages; these run inside "env: step (whole)", so they get their own timer (depth 0 each).
    stages = StageTimer(timer.synchronize)
    stages.seconds = timer.seconds  # same tables
    stages.calls = timer.calls
    stages.host_seconds = timer.host_seconds
    switch = getattr(inner, "_manager_call_switch", None)
    if switch is not None:
        # Isaac Lab's Warp frontend runs each manager stage through its call switch, which replays a CUDA graph
        # captured at the stage's first call: a wrapped manager method would not be called again. The switch's
        # call is timed instead, named by its stage; the manager methods it reaches are left unwrapped.
        stages.wrap(switch, "call_stage", lambda kwargs: WARP_STAGES.get(kwargs["stage"], f"env/{kwargs['stage']}"))
        managed = (
            (inner.sim, "step", "env/sim: step (physics)"),
            (inner.scene, "update", "env/scene: update (sensors)"),
            (inner, "_reset_idx", "env/reset"),
            (inner.command_manager, "compute", "env/commands"),
        )
    else:
        managed = (
            (inner.action_manager, "process_action", "env/action: process"),
            (inner.action_manager, "apply_action", "env/action: apply"),
            (inner.scene, "write_data_to_sim", "env/scene: write_data_to_sim"),
            (inner.sim, "step", "env/sim: step (physics)"),
            (inner.scene, "update", "env/scene: update (sensors)"),
            (inner.termination_manager, "compute", "env/terminations"),
            (inner.reward_manager, "compute", "env/rewards"),
            (inner, "_reset_idx", "env/reset"),
            (inner.command_manager, "compute", "env/commands"),
            (inner.event_manager, "apply", "env/events"),
            (inner.observation_manager, "compute", "env/observations"),
        )
    for owner, attribute, stage in managed:
        stages.wrap(owner, attribute, stage)
    return [timer, stages]


WARP_STAGES = {
    "ActionManager_process_action": "env/action: process",
    "ActionManager_apply_action": "env/action: apply",
    "Scene_write_data_to_sim": "env/scene: write_data_to_sim",
    "TerminationManager_compute": "env/terminations",
    "RewardManager_compute": "env/rewards",
    "EventManager_apply_interval": "env/events",
    "ObservationManager_compute_no_history": "env/observations",
    "ObservationManager_compute_update_history": "env/observations",
}
"""Stages of Isaac Lab's Warp frontend, by its call switch's names, under the names the torch frontend's have here
(so the two tables compare row by row); a stage not listed keeps its own name."""


def python_profile(trainer, obs) -> tuple[Any, str]:
    """One iteration under cProfile: the Python functions with the most time of their own."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    obs = one_iteration(trainer, obs)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).sort_stats("tottime")
    stats.print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    return obs, text.getvalue()


def device_activity(trainer, obs, timers: list[StageTimer], trace: Path | None = None) -> tuple[dict[str, Any], Any]:
    """One iteration under torch.profiler: wall time, GPU-busy time (union of kernel intervals), top kernels, and
    each stage's host time without synchronizing (``timers`` label the stages in the trace). ``trace``: write the
    trace there (Chrome's format, gzip-compressed when the name ends in ``.gz``)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    for each in timers:
        each.label = record_function
        each.enabled = True
    torch.cuda.synchronize()
    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            obs = one_iteration(trainer, obs)
            torch.cuda.synchronize()
            wall = time.perf_counter() - start
    finally:
        for each in timers:
            each.enabled = False
            each.label = None
    if trace is not None:
        export_trace(prof, trace)
    labels = set(timers[0].host_seconds)  # a stage's label spans its kernels and the gaps between them
    intervals = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
        and not (e.is_user_annotation or e.name in labels)
        and e.time_range.end > e.time_range.start
    )
    gaps = gaps_between(intervals)
    # busy: the span from the first kernel's start to the last one's end, less the idle spans between kernels
    busy_us = max(end for _, end in intervals) - intervals[0][0] - sum(e - b for b, e in gaps) if intervals else 0.0
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25)
    host = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU]
    stages = Stages([(e.time_range.start, e.time_range.end, e.name) for e in host if e.name in labels])
    waits = [(e.time_range.start, e.time_range.end) for e in host if e.name in WAITS]
    return {
        "wall_s": wall,
        "gpu_busy_s": busy_us / 1e6,
        "gpu_busy_fraction": busy_us / 1e6 / wall,
        "kernels": len(intervals),
        "host_s_per_stage": dict(sorted(timers[0].host_seconds.items())),
        "idle_gaps": idle_gaps(gaps),
        "idle_s_by_stage": stages.total(gaps),
        "host_waits_s_by_stage": stages.total(waits),
    }, (obs, table)


WAITS = frozenset({"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"})
"""CUDA runtime calls in which the host waits for the device (a read of a result, a copy to the host)."""


def gaps_between(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The device's idle spans ``(start, end)`` between sorted kernel intervals."""
    gaps, reach = [], None
    for begin, end in intervals:
        if reach is not None and begin > reach:
            gaps.append((reach, begin))
        reach = end if reach is None else max(reach, end)
    return gaps


class Stages:
    """The stages' labelled host intervals ``(start, end, name)`` of a trace (nested: a stage inside the env
    step's); :meth:`total` adds spans up by the innermost stage open on the host when each began."""

    def __init__(self, labelled: list[tuple[float, float, str]]) -> None:
        self.labelled = sorted(labelled)
        self.starts = [start for start, _, _ in self.labelled]

    def at(self, time_us: float) -> str:
        """The innermost stage open at ``time_us`` (the latest-starting one that contains it), or "outside"."""
        import bisect

        index = bisect.bisect_right(self.starts, time_us) - 1
        while index >= 0:
            start, end, name = self.labelled[index]
            if start <= time_us <= end:
                return name
            index -= 1
        return "outside the stages"

    def total(self, spans: list[tuple[float, float]]) -> dict[str, float]:
        """Seconds of ``spans`` (µs intervals) by the stage open when each began, largest first."""
        sums: dict[str, float] = defaultdict(float)
        for begin, end in spans:
            sums[self.at(begin)] += (end - begin) / 1e6
        return dict(sorted(sums.items(), key=lambda item: -item[1]))


def idle_gaps(spans: list[tuple[float, float]]) -> dict[str, float]:
    """How the device's idle time between kernels (its idle ``spans``, :func:`gaps_between`, in µs) is made up: many
    short gaps (launch overhead between small kernels) or a few long ones (the host busy elsewhere, or waiting)."""
    gaps = [end - begin for begin, end in spans]
    buckets = {"under_10us": 0.0, "10us_to_100us": 0.0, "100us_to_1ms": 0.0, "over_1ms": 0.0}
    for gap in gaps:
        key = (
            "under_10us" if gap < 10 else "10us_to_100us" if gap < 100 else "100us_to_1ms" if gap < 1000 else "over_1ms"
        )
        buckets[key] += gap / 1e6
    return {"gaps": len(gaps), **{f"idle_s_{k}": v for k, v in buckets.items()}}


def export_trace(prof, path: Path) -> None:
    """The profiler's trace in Chrome's format at ``path`` (compressed with gzip when it ends in ``.gz``)."""
    import gzip
    import shutil
    import tempfile

    if path.suffix != ".gz":
        prof.export_chrome_trace(str(path))
        return
    with tempfile.TemporaryDirectory() as scratch:
        plain = Path(scratch) / "trace.json"
        prof.export_chrome_trace(str(plain))
        with plain.open("rb") as source, gzip.open(path, "wb", compresslevel=6) as target:
            shutil.copyfileobj(source, target)


def profile_iteration(
    overrides: list[str],
    iterations: int,
    *,
    device_trace: bool = True,
    cprofile: bool = False,
    trace: Path | None = None,
) -> dict[str, Any]:
    """Build the trainer of ``overrides``, time ``iterations`` iterations plain and staged, optionally trace one
    on the device (written to ``trace`` when given) and one under cProfile; the figures (``top_kernels_table`` and
    ``python_profile`` as text)."""
    import torch

    cfg = compose_config(overrides)
    if trace is not None and not (device_trace and cuda_device(str(cfg.device))):
        raise ValueError(
            f"a trace comes from the torch.profiler pass, which runs on a CUDA device with the device trace on; "
            f"device={cfg.device} (device_trace={device_trace}): run on a GPU or leave out the trace"
        )
    handle, trainer, device = build(cfg)
    cuda = device.startswith("cuda")
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    steps = trainer.cfg["num_steps_per_env"] * trainer.env.num_envs
    try:
        trainer.alg.train_mode()
        obs = trainer.env.get_observations().to(trainer.device)
        obs = one_iteration(trainer, obs)  # warm-up: first-call compilation, allocator growth

        plain = []
        for _ in range(iterations):
            synchronize()
            start = time.perf_counter()
            obs = one_iteration(trainer, obs)
            synchronize()
            plain.append(time.perf_counter() - start)

        timer = StageTimer(synchronize)
        timers = instrument(timer, trainer)
        for each in timers:
            each.enabled = True
        synchronize()
        start = time.perf_counter()
        for _ in range(iterations):
            obs = one_iteration(trainer, obs)
        synchronize()
        staged_wall = (time.perf_counter() - start) / iterations
        for each in timers:
            each.enabled = False

        python_top = python_profile(trainer, obs) if cprofile else None
        if python_top:
            obs = python_top[0]

        activity, table = None, None
        if cuda and device_trace:
            activity, (obs, table) = device_activity(trainer, obs, timers, trace)
    finally:
        handle.close()

    result = {
        "overrides": overrides,
        "device": device,
        "num_envs": trainer.env.num_envs,
        "steps_per_iteration": steps,
        "plain_iteration_s": plain,
        "plain_median_s": statistics.median(plain),
        "plain_env_steps_per_s": steps / statistics.median(plain),
        "staged_iteration_s": staged_wall,
        "stages_s_per_iteration": {k: v / iterations for k, v in sorted(timer.seconds.items())},
        "stage_calls_per_iteration": {k: v / iterations for k, v in sorted(timer.calls.items())},
        "device_activity": activity,
    }
    if activity:
        result["top_kernels_table"] = table
    if python_top:
        result["python_profile"] = python_top[1]
    return result


def cuda_device(device: str) -> bool:
    """Whether the config's ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) puts the run on a GPU."""
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def format_profile(result: dict[str, Any]) -> str:
    """The printed figures: plain and staged iteration time, the stage table, then device and Python profiles."""
    staged_wall = result["staged_iteration_s"]
    lines = [
        f"\nplain iteration: median {result['plain_median_s']:.3f} s ({result['plain_env_steps_per_s']:,.0f} env-steps/s)",
        f"with a synchronizing timer around each stage: {staged_wall:.3f} s per iteration",
        f"{'stage':<34} {'s / iteration':>14} {'share':>7} {'calls':>7}",
    ]
    for stage, seconds in result["stages_s_per_iteration"].items():
        calls = result["stage_calls_per_iteration"][stage]
        lines.append(f"{stage:<34} {seconds:>14.4f} {seconds / staged_wall:>7.1%} {calls:>7.0f}")
    activity = result["device_activity"]
    if activity:
        lines.append(
            f"device activity over one iteration: wall {activity['wall_s']:.3f} s, GPU busy {activity['gpu_busy_s']:.3f} s"
            f" ({activity['gpu_busy_fraction']:.0%}), {activity['kernels']} kernels"
        )
        gaps = activity["idle_gaps"]
        lines.append(
            f"device idle between kernels: {gaps['gaps']} gaps; "
            + ", ".join(f"{k.removeprefix('idle_s_')} {v:.3f} s" for k, v in gaps.items() if k != "gaps")
        )
        lines.append(
            f"{'stage (traced, no synchronizing)':<40} {'host s':>8} {'host waits s':>13} {'device idle s':>14}"
        )
        waits, idle = activity["host_waits_s_by_stage"], activity["idle_s_by_stage"]
        for stage in sorted({*activity["host_s_per_stage"], *waits, *idle}):
            host = activity["host_s_per_stage"].get(stage)
            lines.append(
                f"{stage:<40} {'' if host is None else f'{host:.4f}':>8} {waits.get(stage, 0.0):>13.4f}"
                f" {idle.get(stage, 0.0):>14.4f}"
            )
        lines.append(result["top_kernels_table"])
    if "python_profile" in result:
        lines.append(result["python_profile"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line: options and Hydra overrides apart, profile, print, write the JSON."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=3, help="iterations per pass (after one warm-up)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--no-device-trace", action="store_true", help="skip the torch.profiler pass")
    parser.add_argument("--python-profile", action="store_true", help="also one iteration under cProfile")
    parser.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="write the torch.profiler pass's trace here (Chrome's format; gzip-compressed if it ends in .gz)",
    )
    args = parser.parse_args([a for a in argv if "=" not in a or a.startswith("--")])
    overrides = [a for a in argv if "=" in a and not a.startswith("--")]
    if args.trace is not None and args.no_device_trace:
        parser.error("--trace writes the torch.profiler pass's trace: leave out --no-device-trace")
    result = profile_iteration(
        overrides,
        args.iterations,
        device_trace=not args.no_device_trace,
        cprofile=args.python_profile,
        trace=args.trace,
    )
    print(format_profile(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0
