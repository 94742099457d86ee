"""Evaluate a checkpoint headless: mean return, episode length and velocity-tracking errors over N episodes; with
``--video``, also a clip of one robot (MP4, GIF and contact sheet) and the figures as JSON beside it.

python scripts/play.py outputs/h1_rough/<run> --episodes 20
python scripts/play.py outputs/h1_rough/<run>/checkpoints/model_40.pt --num-envs 8 --device cpu
python scripts/play.py outputs/h1_rough/<run> --video                      # <run>/videos/play_model_<N>.*
python scripts/play.py outputs/h1_rough/<run> --video --video-episodes 3 --size 1280x720
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from core.console import Progress
from runner.checkpoint_target import resolve_checkpoint, run_dir_of


@dataclass
class VideoRequest:
    """What clip to make while playing: env ``env_id`` followed for ``episodes`` of its episodes, at most
    ``max_seconds`` of simulated time, at ``width`` x ``height`` pixels, written under ``out_dir`` (default: the
    run's ``videos/``)."""

    episodes: int = 2
    max_seconds: float = 60.0
    width: int = 640
    height: int = 360
    env_id: int = 0
    out_dir: Path | None = None


def evaluate(
    run_dir: Path,
    checkpoint: Path,
    *,
    episodes: int,
    num_envs: int | None,
    device: str,
    seed: int,
    video: VideoRequest | None = None,
) -> dict:
    """Run the deterministic policy until ``episodes`` episodes have ended (and the clip, if asked, is made);
    return the figures (and where the clip is)."""
    import torch
    from omegaconf import OmegaConf

    from algos.policy import load_actor
    from core.distributed import DistInfo, resolve_device
    from tasks import build_env
    from video.probe import base_velocities, step_seconds

    cfg = OmegaConf.load(run_dir / "config.yaml")
    if num_envs is not None:
        cfg.task.num_envs = num_envs
    kind = cfg.task.kind
    device = resolve_device(device, DistInfo())
    actor, _ = load_actor(checkpoint, device=device)
    handle = build_env(cfg.task, device, seed, clip_actions=cfg.algo.get("clip_actions"))
    env = handle.env
    returns, lengths, errors = [], [], {}
    tracking = {"lin": 0.0, "yaw": 0.0, "count": 0}
    clip, recording = None, None
    try:
        dt = step_seconds(kind, env)
        if video is not None:
            recording = _Recording(cfg.task, env, checkpoint, run_dir, video, dt)
        running_return = torch.zeros(env.num_envs, device=device)
        running_length = torch.zeros(env.num_envs, device=device)
        obs = env.get_observations().to(device)
        max_steps = int(env.max_episode_length) * (episodes // env.num_envs + 2)
        if video is not None:
            max_steps += min(int(env.max_episode_length) * video.episodes, math.ceil(video.max_seconds / dt))
        progress = Progress(total=episodes, unit="episode", interval_s=15.0)
        shown = 0
        for step in range(max_steps):
            with torch.inference_mode():
                actions = actor(obs)
                obs, rewards, dones, extras = env.step(actions.to(env.device))
                command, actual = base_velocities(kind, env)
            obs = obs.to(device)
            running_return += rewards.to(device)
            running_length += 1
            done = dones.to(device).bool()
            _add_tracking(tracking, command.to(device)[~done], actual.to(device)[~done])
            done_ids = done.nonzero(as_tuple=False).flatten()
            for i in done_ids.tolist():
                returns.append(float(running_return[i]))
                lengths.append(float(running_length[i]))
            running_return[done_ids] = 0.0
            running_length[done_ids] = 0.0
            for key, value in extras.get("log", {}).items():
                if key.startswith("Metrics/") and "error" in key and len(done_ids):
                    errors.setdefault(key.removeprefix("Metrics/"), []).append(float(torch.as_tensor(value).mean()))
            if recording is not None:
                clip = recording.after_step(bool(done[recording.env_id]))
                if clip is not None:
                    recording = None
            if len(returns) > shown:
                shown = len(returns)
                figures = {"mean return": f"{_mean(returns):.2f}", "step": str(step + 1)}
                if recording is not None:
                    figures["frames"] = str(recording.writer.frames)
                progress.update(min(shown, episodes), figures)
            if len(returns) >= episodes and recording is None:
                break
        progress.close()
        if recording is not None:  # the step budget ran out first: keep what was drawn
            clip = recording.finish()
            recording = None
    finally:
        if recording is not None:
            recording.abort()
        handle.close()
    if not returns:
        raise SystemExit("error: no episode ended; raise --episodes' step budget or check the environment")
    count = max(tracking["count"], 1)
    yaw = tracking["yaw"] / count
    result = {
        "checkpoint": str(checkpoint),
        "task": str(cfg.task.name),
        "episodes": len(returns),
        "mean_return": _mean(returns),
        "mean_episode_length_steps": _mean(lengths),
        "mean_episode_length_s": _mean(lengths) * dt,
        "velocity_tracking": {
            "lin_vel_xy_mae": tracking["lin"] / count,
            "yaw_rate_mae": None if math.isnan(yaw) else yaw,
            "env_steps": tracking["count"],
        },
        "tracking_errors": {k: _mean(v) for k, v in errors.items()},
    }
    if clip is not None:
        result["video"] = clip.as_dict()
    return result


class _Recording:
    """The clip being made while playing: frames of one env until it has ended the asked episodes or the clip
    has its longest length."""

    def __init__(self, task, env, checkpoint: Path, run_dir: Path, request: VideoRequest, dt: float) -> None:
        from video.clip import ClipWriter
        from video.files import VIDEO_DIR, play_stem
        from video.views import open_view

        self.env_id = request.env_id
        self.episodes_left = request.episodes
        self.frames_left = max(1, math.ceil(request.max_seconds / dt))
        self.view = open_view(task, env, width=request.width, height=request.height, env_id=request.env_id)
        out_dir = Path(request.out_dir) if request.out_dir is not None else run_dir / VIDEO_DIR
        self.writer = ClipWriter(play_stem(out_dir, checkpoint), 1.0 / dt)
        self._add()  # the start of the first episode

    def _add(self) -> None:
        self.writer.add(self.view.frame())
        self.frames_left -= 1

    def after_step(self, followed_env_done: bool):
        """Draw the frame after one step; returns the finished clip when this step ended it, else None."""
        if followed_env_done:
            self.episodes_left -= 1
        if self.episodes_left <= 0 or self.frames_left <= 0:
            return self.finish()
        self._add()
        return None

    def finish(self):
        try:
            return self.writer.close()
        finally:
            self.view.close()

    def abort(self) -> None:
        self.writer.abort()
        self.view.close()


def _add_tracking(sums: dict, command, actual) -> None:
    """Add the absolute velocity errors of these env-steps: the horizontal one as the length of the difference of
    the (vx, vy) vectors [m/s], the yaw rate's as the absolute difference [rad/s]."""
    if len(command) == 0:
        return
    sums["lin"] += float((command[:, :2] - actual[:, :2]).norm(dim=-1).sum())
    sums["yaw"] += float((command[:, 2] - actual[:, 2]).abs().sum())
    sums["count"] += len(command)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def print_figures(result: dict) -> None:
    """The figures of an evaluation, one per line."""
    tracking = result["velocity_tracking"]
    yaw = tracking["yaw_rate_mae"]
    print(f"checkpoint            {result['checkpoint']}")
    print(f"episodes              {result['episodes']}")
    print(f"mean return           {result['mean_return']:.3f}")
    print(
        f"mean episode length   {result['mean_episode_length_steps']:.1f} steps "
        f"({result['mean_episode_length_s']:.2f} s)"
    )
    print(f"lin. vel. xy error    {tracking['lin_vel_xy_mae']:.4f} m/s (mean |commanded - actual| over env-steps)")
    print(f"yaw rate error        {'-' if yaw is None else f'{yaw:.4f} rad/s'}")
    for key, value in result["tracking_errors"].items():
        print(f"{key:<21} {value:.4f}")
    if "video" in result:
        clip = result["video"]
        print(f"video                 {clip['mp4'] or '(no MP4: PyAV missing)'}")
        print(f"                      {clip['frames']} frames, {clip['seconds']:.1f} s at {clip['fps']:g} fps")
        print(f"gif, contact sheet    {clip['gif']}, {clip['sheet']}")


def write_figures(result: dict) -> Path | None:
    """Write an evaluation's figures as JSON beside its clip (``play_model_<N>.json``); None without a clip."""
    if "video" not in result:
        return None
    from video.files import SUFFIXES

    path = Path(result["video"]["sheet"]).with_suffix(SUFFIXES["figures"])
    path.write_text(json.dumps(result, indent=2))
    return path


def clip_of_latest(run_dir: Path, *, seconds: float, num_envs: int = 4, device: str = "auto") -> dict | None:
    """Play the newest checkpoint of ``run_dir`` with ``num_envs`` envs until env 0 has ended one episode (at most
    ``seconds`` of it), writing the clip and its figures into the run's ``videos/``; returns the figures, or None
    when the run has no checkpoint."""
    from core.rundir import latest_checkpoint

    latest = latest_checkpoint(run_dir)
    if latest is None:
        return None
    result = evaluate(
        Path(run_dir),
        latest[1],
        episodes=1,
        num_envs=num_envs,
        device=device,
        seed=1234,
        video=VideoRequest(episodes=1, max_seconds=seconds),
    )
    write_figures(result)
    return result


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 640x360, not {text!r}") from error
    return width, height


def main(argv: list[str] | None = None) -> int:
    """The command line: evaluate, print the figures, optionally record a clip and write the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=Path, help="a run directory or a checkpoint file inside one")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to finish (default 10)")
    parser.add_argument("--num-envs", type=int, default=None, help="parallel environments (default: the run's)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--seed", type=int, default=1234, help="environment seed (default 1234)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    video = parser.add_argument_group("video")
    video.add_argument("--video", action="store_true", help="record a clip of one robot (MP4, GIF, contact sheet)")
    video.add_argument("--video-episodes", type=int, default=2, help="episodes of the followed robot (default 2)")
    video.add_argument("--video-seconds", type=float, default=60.0, help="longest clip [s] (default 60)")
    video.add_argument("--video-env", type=int, default=0, help="the env whose robot is followed (default 0)")
    video.add_argument("--size", type=_size, default=(640, 360), help="frame size WIDTHxHEIGHT (default 640x360)")
    video.add_argument("--out", type=Path, default=None, help="folder of the clip (default: the run's videos/)")
    args = parser.parse_args(argv)
    checkpoint = resolve_checkpoint(args.target)
    run_dir = run_dir_of(checkpoint)
    if not (run_dir / "config.yaml").is_file():
        raise SystemExit(f"error: {run_dir} has no config.yaml; give a run directory made by train.py")
    request = None
    if args.video:
        width, height = args.size
        request = VideoRequest(
            episodes=args.video_episodes,
            max_seconds=args.video_seconds,
            width=width,
            height=height,
            env_id=args.video_env,
            out_dir=args.out,
        )
    from video.gl import RenderingUnavailable

    try:
        result = evaluate(
            run_dir,
            checkpoint,
            episodes=args.episodes,
            num_envs=args.num_envs,
            device=args.device,
            seed=args.seed,
            video=request,
        )
    except RenderingUnavailable as error:
        raise SystemExit(f"error: {error}") from None
    print_figures(result)
    figures = write_figures(result)
    if figures is not None:
        print(f"figures               {figures}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0
