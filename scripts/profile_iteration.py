"""Where one training iteration spends its time: collection (policy, each stage of the env step) and learning.

    python scripts/profile_iteration.py task=h1_rough device=cuda task.num_envs=4096 --iterations 5
    python scripts/profile_iteration.py task=h1_flat task.num_envs=32 --iterations 2 --out prof.json   # CPU

Arguments that contain ``=`` are Hydra overrides of ``conf/train.yaml``; the rest are this script's options.
It builds the environment and trainer as ``train.py`` does, runs one warm-up iteration, then three passes over
the same number of iterations:

1. plain: the loop as it trains, timed only per iteration (the reference figure);
2. stages: every stage wrapped in a timer that synchronizes the device before and after, so each stage's figure
   is its own work (with host-device overlap removed, their sum exceeds the plain figure);
3. device activity (CUDA only): one iteration under ``torch.profiler``; the union of the GPU's kernel intervals
   against the wall time says whether the iteration is bound by the device or by the host launching work.

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

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class StageTimer:
    """Wraps methods so that each call's duration is added to a named stage, synchronizing the device around it."""

    def __init__(self, synchronize: Callable[[], None]) -> None:
        self.synchronize = synchronize
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.enabled = False
        self._depth = 0

    def wrap(self, owner: Any, attribute: str, stage: str) -> None:
        """Replace ``owner.attribute`` (a bound method) with a timed call; nested timed calls count in the outer."""
        setattr(owner, attribute, self.timed(getattr(owner, attribute), stage))

    def timed(self, inner: Callable, stage: str) -> Callable:
        """``inner``, timed into ``stage``."""

        def timed(*args, **kwargs):
            if not self.enabled or self._depth:
                return inner(*args, **kwargs)
            self._depth += 1
            self.synchronize()
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.synchronize()
                self.seconds[stage] += time.perf_counter() - start
                self.calls[stage] += 1
                self._depth -= 1

        return timed


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=3, help="iterations per pass (after one warm-up)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--no-device-trace", action="store_true", help="skip the torch.profiler pass")
    parser.add_argument("--python-profile", action="store_true", help="also one iteration under cProfile")
    options = [a for a in argv if "=" not in a or a.startswith("--")]
    overrides = [a for a in argv if "=" in a and not a.startswith("--")]
    return parser.parse_args(options), overrides


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from runner.setup import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def build(cfg):
    """The environment and trainer of ``train.py`` for ``cfg`` (no run directory, no logger output)."""
    import tempfile

    import torch

    from algos.ppo import build_trainer
    from core.distributed import dist_info, resolve_device
    from tasks import build_env

    info = dist_info()
    device = resolve_device(cfg.device, info)
    torch.manual_seed(int(cfg.seed))
    handle = build_env(cfg.task, device, int(cfg.seed))
    scratch = Path(tempfile.mkdtemp(prefix="rlforge-profile-"))
    trainer = build_trainer(
        handle.env, cfg, device=device, dist=info, run_dir=scratch, seed=int(cfg.seed), logger={"kind": "tensorboard"}
    )
    return handle, trainer, device


def instrument(timer: StageTimer, trainer) -> list[StageTimer]:
    """Timers on the trainer's and (for Isaac Lab) the environment's stages; returns every timer it set up."""
    policy_step = trainer._policy_step
    trainer._policy_step = lambda obs: timer.timed(policy_step(obs), "policy: act")
    timer.wrap(trainer.alg, "process_env_step", "storage: process_env_step")
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
    stages.seconds = timer.seconds  # same table
    stages.calls = timer.calls
    for owner, attribute, stage in (
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
    ):
        stages.wrap(owner, attribute, stage)
    return [timer, stages]


def one_iteration(trainer, obs):
    """One training iteration, as ``PPOTrainer.train`` runs it (without checkpoints and logging)."""
    import torch

    from algos import speed

    with torch.inference_mode():
        obs = trainer.collect(obs, speed.NanWatch() if trainer.cfg.get("check_for_nan", True) else None)
    trainer.learn(obs)
    trainer.logger.ep_extras.clear()
    return obs


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


def device_activity(trainer, obs) -> tuple[dict[str, Any], Any]:
    """One iteration under torch.profiler: wall time, GPU-busy time (union of kernel intervals), top kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        obs = one_iteration(trainer, obs)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    intervals = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start
    )
    busy_us, current = 0.0, None
    for begin, end in intervals:
        if current is None or begin > current[1]:
            if current is not None:
                busy_us += current[1] - current[0]
            current = [begin, end]
        else:
            current[1] = max(current[1], end)
    if current is not None:
        busy_us += current[1] - current[0]
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25)
    return {
        "wall_s": wall,
        "gpu_busy_s": busy_us / 1e6,
        "gpu_busy_fraction": busy_us / 1e6 / wall,
        "kernels": len(intervals),
    }, (obs, table)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = compose(overrides)
    import torch

    handle, trainer, device = build(cfg)
    cuda = device.startswith("cuda")
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    steps = trainer.cfg["num_steps_per_env"] * trainer.env.num_envs
    try:
        trainer.alg.train_mode()
        obs = trainer.env.get_observations().to(trainer.device)
        obs = one_iteration(trainer, obs)  # warm-up: first-call compilation, allocator growth

        plain = []
        for _ in range(args.iterations):
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
        for _ in range(args.iterations):
            obs = one_iteration(trainer, obs)
        synchronize()
        staged_wall = (time.perf_counter() - start) / args.iterations
        for each in timers:
            each.enabled = False

        python_top = python_profile(trainer, obs) if args.python_profile else None
        if python_top:
            obs = python_top[0]

        activity, table = None, None
        if cuda and not args.no_device_trace:
            activity, (obs, table) = device_activity(trainer, obs)
    finally:
        handle.close()

    per_iteration = {k: v / args.iterations for k, v in sorted(timer.seconds.items())}
    result = {
        "overrides": overrides,
        "device": device,
        "num_envs": trainer.env.num_envs,
        "steps_per_iteration": steps,
        "plain_iteration_s": plain,
        "plain_median_s": statistics.median(plain),
        "plain_env_steps_per_s": steps / statistics.median(plain),
        "staged_iteration_s": staged_wall,
        "stages_s_per_iteration": per_iteration,
        "stage_calls_per_iteration": {k: v / args.iterations for k, v in sorted(timer.calls.items())},
        "device_activity": activity,
    }
    print(
        f"\nplain iteration: median {result['plain_median_s']:.3f} s ({result['plain_env_steps_per_s']:,.0f} env-steps/s)"
    )
    print(f"with a synchronizing timer around each stage: {staged_wall:.3f} s per iteration")
    print(f"{'stage':<34} {'s / iteration':>14} {'share':>7} {'calls':>7}")
    for stage, seconds in per_iteration.items():
        calls = result["stage_calls_per_iteration"][stage]
        print(f"{stage:<34} {seconds:>14.4f} {seconds / staged_wall:>7.1%} {calls:>7.0f}")
    if activity:
        print(
            f"device activity over one iteration: wall {activity['wall_s']:.3f} s, GPU busy {activity['gpu_busy_s']:.3f} s"
            f" ({activity['gpu_busy_fraction']:.0%}), {activity['kernels']} kernels"
        )
        print(table)
        result["top_kernels_table"] = table
    if python_top:
        print(python_top[1])
        result["python_profile"] = python_top[1]
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
