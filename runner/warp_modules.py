"""List the Warp modules a task's training loads, for ``task.kernels.modules`` (built ahead, in worker processes).

    python scripts/warp_modules.py task=h1_rough task.num_envs=16 --iterations 2          # CPU
    python scripts/warp_modules.py task=h1_rough device=cuda task.num_envs=4096            # GPU
    python scripts/warp_modules.py task=h1_rough task.num_envs=16 --check                  # compare with the config
    python scripts/warp_modules.py task=h1_rough task.frontend=warp task.num_envs=16       # the Warp frontend's
    WARP_CACHE_PATH=$(mktemp -d) python scripts/warp_modules.py task=h1_rough --check --timings   # what a cold start builds

Arguments that contain ``=`` are Hydra overrides of ``conf/train.yaml``. It builds the environment and trainer as
``train.py`` does, with nothing compiled ahead, runs a few iterations, then prints the modules that were loaded and
that can be named ahead (those of importable Python modules) as a YAML list to paste under ``kernels.modules`` in
the task's config (with ``task.frontend=warp``: those beyond ``kernels.modules``, for ``kernels.warp_frontend_modules``).
``--check`` instead builds the listed modules ahead, as ``train.py`` does, and checks that each
build is the one the simulator ran (by module hash); it exits with 1 if one was built again, failed to build ahead or
was not found, and also names the loaded modules the list lacks.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict

from runner.compose import compose_config
from runner.loop import build, one_iteration


class LoadTimes:
    """Every Warp module load that takes longer than ``threshold_s`` (a build, or a binary read from the cache), with
    the phase of the run it fell in: what a start pays for each module, and which modules are built more than once
    (a generic kernel specialised anew changes its module, which is then built again)."""

    def __init__(self, threshold_s: float = 0.05) -> None:
        self.threshold_s = threshold_s
        self.phase = "start-up"
        self.rows: list[tuple[str, str, float]] = []
        self._original = None

    def install(self) -> None:
        """Time ``warp``'s ``Module.load`` from now on (every launch passes through it; a loaded module returns at
        once)."""
        from warp._src.context import Module

        original = self._original = Module.load
        times = self

        def load(module, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(module, *args, **kwargs)
            finally:
                seconds = time.perf_counter() - start
                if seconds >= times.threshold_s:
                    times.rows.append((times.phase, module.name, seconds))

        Module.load = load

    def uninstall(self) -> None:
        if self._original is not None:
            from warp._src.context import Module

            Module.load = self._original
            self._original = None

    def table(self) -> str:
        """The loads, longest first, and each phase's total."""
        counts = Counter(name for _, name, _ in self.rows)
        lines = [f"{'phase':<12} {'s':>7}  module"]
        for phase, name, seconds in sorted(self.rows, key=lambda row: -row[2]):
            again = f"  (one of {counts[name]} slow loads of it)" if counts[name] > 1 else ""
            lines.append(f"{phase:<12} {seconds:>7.2f}  {name}{again}")
        totals: dict[str, float] = defaultdict(float)
        for phase, _, seconds in self.rows:
            totals[phase] += seconds
        lines.append("total: " + (", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in totals.items()) or "none"))
        return "\n".join(lines)


def run_training(overrides: list[str], iterations: int, ahead: bool, times: LoadTimes | None = None):
    """Build as ``train.py`` does (compiling ``task.kernels.modules`` ahead or not), train ``iterations``
    iterations (timing Warp's module loads into ``times`` if given); returns (composed config, device, what was
    compiled ahead or None)."""
    # With --check every listed module is built by a worker, to show that it can be built ahead.
    if ahead:
        kernels = ["task.kernels.precompile=true", "task.kernels.wait_for_workers=true"]
    else:
        kernels = ["task.kernels.precompile=false"]
    cfg = compose_config([*overrides, *kernels])
    if times is not None:
        times.install()
    try:
        handle, trainer, device = build(cfg)
        try:
            trainer.alg.train_mode()
            obs = trainer.env.get_observations().to(trainer.device)
            for iteration in range(iterations):
                if times is not None:
                    times.phase = f"iteration {iteration}"
                obs = one_iteration(trainer, obs)
            precompiler = handle.info.get("precompiler")
            done = precompiler.result() if precompiler is not None else None  # every worker's outcome
        finally:
            handle.close()
    finally:
        if times is not None:
            times.uninstall()
    return cfg, device, done


def main(argv: list[str] | None = None) -> int:
    """The command line: list the loaded modules, or with ``--check`` check the task's list; the exit code."""
    from tasks.isaaclab_env import modules_built_ahead
    from tasks.kernels import loaded_modules, rebuilt_since

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=2, help="training iterations to run (default 2)")
    parser.add_argument("--check", action="store_true", help="compile the listed modules ahead and check them")
    parser.add_argument(
        "--timings", action="store_true", help="also print each slow Warp module load (a build) and when it came"
    )
    args = parser.parse_args([a for a in argv if "=" not in a or a.startswith("--")])
    overrides = [a for a in argv if "=" in a and not a.startswith("--")]
    times = LoadTimes() if args.timings else None
    cfg, device, done = run_training(overrides, args.iterations, ahead=args.check, times=times)
    if times is not None:
        print(times.table())
    loaded, not_nameable = loaded_modules(device)
    if not args.check:
        if cfg.task.frontend == "warp":  # what the Warp frontend adds to the task's own list
            print("warp_frontend_modules:")
            loaded = [name for name in loaded if name not in cfg.task.kernels.modules]
        else:
            print("modules:")
        print("\n".join(f"  - {name}" for name in sorted(loaded)))
        if not_nameable:
            print(
                "# not listed, generic kernels specialised at first launch or kernels made at run time: "
                + ", ".join(sorted(not_nameable))
            )
        return 0
    listed = modules_built_ahead(cfg.task)
    bad = [f"built again after import, drop it: {name}" for name in rebuilt_since(done, device)]
    bad += [f"did not build ahead, drop it: {error}" for error in done.failed]
    bad += [f"not found: {name}" for name in done.missing]
    print(f"{len(done.modules)} of {len(listed)} listed modules built ahead in {done.seconds:.1f} s")
    for line in bad:
        print(f"  {line}")
    for name in sorted(set(loaded) - set(listed)):
        print(f"  loaded, not listed (it compiles when first used): {name}")
    return 1 if bad else 0
