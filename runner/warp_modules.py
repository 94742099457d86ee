"""List the Warp modules a task's training loads, for ``task.kernels.modules`` (built ahead, in worker processes).

    python scripts/warp_modules.py task=h1_rough task.num_envs=16 --iterations 2          # CPU
    python scripts/warp_modules.py task=h1_rough device=cuda task.num_envs=4096            # GPU
    python scripts/warp_modules.py task=h1_rough task.num_envs=16 --check                  # compare with the config
    python scripts/warp_modules.py task=h1_rough task.frontend=warp task.num_envs=16       # the Warp frontend's

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

from runner.compose import compose_config
from runner.loop import build, one_iteration


def run_training(overrides: list[str], iterations: int, ahead: bool):
    """Build as ``train.py`` does (compiling ``task.kernels.modules`` ahead or not), train ``iterations``
    iterations; returns (composed config, device, what was compiled ahead or None)."""
    cfg = compose_config([*overrides, f"task.kernels.precompile={str(ahead).lower()}"])
    handle, trainer, device = build(cfg)
    try:
        trainer.alg.train_mode()
        obs = trainer.env.get_observations().to(trainer.device)
        for _ in range(iterations):
            obs = one_iteration(trainer, obs)
    finally:
        handle.close()
    return cfg, device, handle.info.get("precompiled")


def main(argv: list[str] | None = None) -> int:
    """The command line: list the loaded modules, or with ``--check`` check the task's list; the exit code."""
    from tasks.isaaclab_env import modules_built_ahead
    from tasks.kernels import loaded_modules, rebuilt_since

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=2, help="training iterations to run (default 2)")
    parser.add_argument("--check", action="store_true", help="compile the listed modules ahead and check them")
    args = parser.parse_args([a for a in argv if "=" not in a or a.startswith("--")])
    overrides = [a for a in argv if "=" in a and not a.startswith("--")]
    cfg, device, done = run_training(overrides, args.iterations, ahead=args.check)
    loaded, generic = loaded_modules(device)
    if not args.check:
        if cfg.task.frontend == "warp":  # what the Warp frontend adds to the task's own list
            print("warp_frontend_modules:")
            loaded = [name for name in loaded if name not in cfg.task.kernels.modules]
        else:
            print("modules:")
        print("\n".join(f"  - {name}" for name in sorted(loaded)))
        if generic:
            print(
                "# not listed, generic kernels specialised at first launch or kernels made at run time: "
                + ", ".join(sorted(generic))
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
