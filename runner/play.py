"""Evaluate a checkpoint headless: mean return, episode length and velocity-tracking errors over N episodes.

python scripts/play.py outputs/h1_rough/<run> --episodes 20
python scripts/play.py outputs/h1_rough/<run>/checkpoints/model_40.pt --num-envs 8 --device cpu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from runner.checkpoint_target import resolve_checkpoint, run_dir_of


def evaluate(run_dir: Path, checkpoint: Path, *, episodes: int, num_envs: int | None, device: str, seed: int) -> dict:
    """Run the deterministic policy until ``episodes`` episodes have ended; return the figures."""
    import torch
    from omegaconf import OmegaConf

    from algos.policy import load_actor
    from core.distributed import DistInfo, resolve_device
    from tasks import build_env

    cfg = OmegaConf.load(run_dir / "config.yaml")
    if num_envs is not None:
        cfg.task.num_envs = num_envs
    device = resolve_device(device, DistInfo())
    actor, _ = load_actor(checkpoint, device=device)
    handle = build_env(cfg.task, device, seed)
    env = handle.env
    returns, lengths, errors = [], [], {}
    try:
        running_return = torch.zeros(env.num_envs, device=device)
        running_length = torch.zeros(env.num_envs, device=device)
        obs = env.get_observations().to(device)
        max_steps = int(env.max_episode_length) * (episodes // env.num_envs + 2)
        for _ in range(max_steps):
            with torch.inference_mode():
                actions = actor(obs)
                obs, rewards, dones, extras = env.step(actions.to(env.device))
            obs = obs.to(device)
            running_return += rewards.to(device)
            running_length += 1
            done_ids = dones.to(device).nonzero(as_tuple=False).flatten()
            for i in done_ids.tolist():
                returns.append(float(running_return[i]))
                lengths.append(float(running_length[i]))
            running_return[done_ids] = 0.0
            running_length[done_ids] = 0.0
            for key, value in extras.get("log", {}).items():
                if key.startswith("Metrics/") and "error" in key and len(done_ids):
                    errors.setdefault(key.removeprefix("Metrics/"), []).append(float(torch.as_tensor(value).mean()))
            if len(returns) >= episodes:
                break
    finally:
        handle.close()
    if not returns:
        raise SystemExit("error: no episode ended; raise --episodes' step budget or check the environment")
    return {
        "checkpoint": str(checkpoint),
        "episodes": len(returns),
        "mean_return": _mean(returns),
        "mean_episode_length_steps": _mean(lengths),
        "tracking_errors": {k: _mean(v) for k, v in errors.items()},
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main(argv: list[str] | None = None) -> int:
    """The command line: evaluate, print the figures, optionally write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=Path, help="a run directory or a checkpoint file inside one")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to finish (default 10)")
    parser.add_argument("--num-envs", type=int, default=None, help="parallel environments (default: the run's)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--seed", type=int, default=1234, help="environment seed (default 1234)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    checkpoint = resolve_checkpoint(args.target)
    run_dir = run_dir_of(checkpoint)
    if not (run_dir / "config.yaml").is_file():
        raise SystemExit(f"error: {run_dir} has no config.yaml; give a run directory made by train.py")
    result = evaluate(
        run_dir, checkpoint, episodes=args.episodes, num_envs=args.num_envs, device=args.device, seed=args.seed
    )
    print(f"checkpoint            {result['checkpoint']}")
    print(f"episodes              {result['episodes']}")
    print(f"mean return           {result['mean_return']:.3f}")
    print(f"mean episode length   {result['mean_episode_length_steps']:.1f} steps")
    for key, value in result["tracking_errors"].items():
        print(f"{key:<22}{value:.4f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0
