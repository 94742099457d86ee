"""Videos of policies: the toy's drawing, clip files, play.py --video and its figures, clips during training (files
and TensorBoard), the sweep report's clips beside the curves, the missing-EGL message, and a real H1 clip."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rlforge_testing import H1_CPU_RUN, SMALL_TOY, only_run, run_train


def decode(mp4: Path) -> list[np.ndarray]:
    """Every frame of an MP4, decoded by PyAV, as (H, W, 3) uint8."""
    import av

    with av.open(str(mp4)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def robot_pixels(frame: np.ndarray) -> tuple[int, float, float]:
    """Count and centroid (x, y) of the pixels in the robot's orange (video.scene.ROBOT_RGBA, lit or shaded)."""
    rgb = frame.astype(int)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mask = (red > 90) & (red > green + 40) & (green > blue + 15)
    ys, xs = np.nonzero(mask)
    return int(mask.sum()), float(xs.mean()) if len(xs) else float("nan"), float(ys.mean()) if len(ys) else float("nan")


def assert_moving_robot(frames: list[np.ndarray], min_pixels: int, min_shift_px: float) -> None:
    """Frames differ over time, the robot is in every one, and its centroid moves."""
    assert not np.array_equal(frames[0], frames[-1])
    counts, xs, ys = zip(*(robot_pixels(f) for f in frames), strict=True)
    assert min(counts) >= min_pixels, counts
    shift = max(np.hypot(np.array(xs) - xs[0], np.array(ys) - ys[0]))
    assert shift >= min_shift_px, (xs, ys)


def toy_run(tmp_path: Path, *extra: str) -> Path:
    result = run_train(
        ["task=toy", f"output_root={tmp_path / 'outputs'}", *SMALL_TOY, "algo.max_iterations=2", *extra], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run(tmp_path / "outputs" / "toy")


# ------------------------------------------------------------------------------------------- units
def test_toy_draws_the_mass_at_its_velocity(compose_cfg):
    import torch

    from tasks import build_env

    env = build_env(compose_cfg(["task=toy", "task.num_envs=2"]).task, "cpu", 0).env
    env.command[0] = torch.tensor([0.0, 0.0])
    centroids = []
    for velocity in ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0]):
        env.velocity[0] = torch.tensor(velocity)
        count, x, y = robot_pixels(env.render(0, 300, 300))
        assert count > 50
        centroids.append((x, y))
    # 50 pixels per m/s on a 300-pixel square; screen y grows downwards.
    assert centroids[0] == pytest.approx((150, 150), abs=1.5)
    assert centroids[1] == pytest.approx((200, 150), abs=1.5)
    assert centroids[2] == pytest.approx((150, 100), abs=1.5)


def test_clip_writer_writes_mp4_gif_and_sheet(tmp_path):
    from PIL import Image

    from video.clip import ClipWriter

    writer = ClipWriter(tmp_path / "clip", fps=50.0)
    for step in range(60):
        frame = np.full((120, 160, 3), 40, dtype=np.uint8)
        frame[50:70, 10 + 2 * step : 30 + 2 * step] = (237, 107, 20)
        writer.add(frame)
    clip = writer.close()
    frames = decode(clip.mp4)
    assert len(frames) == clip.frames == 60 and frames[0].shape == (120, 160, 3)
    assert_moving_robot(frames, min_pixels=200, min_shift_px=100)
    with Image.open(clip.gif) as gif:
        assert gif.n_frames == 15  # 12.5 of 50 frames a second
    with Image.open(clip.sheet) as sheet:
        assert sheet.size == (4 * 160, 2 * 120)


def test_newest_clip_prefers_play_of_the_newest_checkpoint(tmp_path):
    from video.files import VIDEO_DIR, newest_clip

    folder = tmp_path / VIDEO_DIR
    assert newest_clip(tmp_path) is None
    folder.mkdir()
    for name in ("train_000010", "train_000020"):
        (folder / f"{name}.png").write_bytes(b"")
    assert newest_clip(tmp_path) == folder / "train_000020"
    for name in ("play_model_100", "play_model_20"):
        (folder / f"{name}.png").write_bytes(b"")
    assert newest_clip(tmp_path) == folder / "play_model_100"


def test_a_clip_goes_to_tensorboard_and_wandb(tmp_path):
    import wandb
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from video.clip import ClipWriter
    from video.publish import TAG, publish

    class WandbLikeWriter(SummaryWriter):  # as algos.wandb_writer.WandbWriter: TensorBoard files and a wandb run
        logged: list = []

        class run:  # noqa: N801 - stands for the wandb run object
            @staticmethod
            def log(data, step):
                WandbLikeWriter.logged.append((data, step))

    writer = ClipWriter(tmp_path / "videos" / "train_000004", fps=50.0)
    for step in range(10):
        writer.add(np.full((60, 80, 3), 20 * step, dtype=np.uint8))
    clip = writer.close()
    log_writer = WandbLikeWriter(str(tmp_path))
    publish(log_writer, clip, step=5, caption="after 4 iterations")
    log_writer.close()
    [(data, step)] = WandbLikeWriter.logged
    assert step == 5 and isinstance(data[TAG], wandb.Video)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    [image] = events.Images(TAG)
    assert (image.step, image.width, image.height) == (5, 80, 60)
    assert image.encoded_image_string == clip.gif.read_bytes()


def test_missing_egl_says_what_to_install(monkeypatch):
    from video.gl import RenderingUnavailable, open_context

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setitem(sys.modules, "mujoco.egl", None)  # as when libEGL cannot be loaded
    with pytest.raises(RenderingUnavailable, match="apt-get install libegl1"):
        open_context(64, 64)


# ------------------------------------------------------------------------------------------- toy runs
def test_toy_play_video_and_figures(tmp_path):
    from runner.play import main

    run = toy_run(tmp_path)
    assert main([str(run), "--video", "--video-seconds", "1", "--episodes", "2", "--size", "320x240"]) == 0
    stem = run / "videos" / "play_model_2"
    frames = decode(stem.with_suffix(".mp4"))
    assert len(frames) == 50  # 1 s at the toy's 50 steps a second
    assert frames[0].shape == (240, 320, 3)
    assert_moving_robot(frames, min_pixels=30, min_shift_px=2.0)
    assert stem.with_suffix(".gif").is_file() and stem.with_suffix(".png").is_file()
    figures = json.loads(stem.with_suffix(".json").read_text())
    assert figures["episodes"] >= 2 and figures["mean_episode_length_steps"] == 500
    assert {"mean_return", "mean_episode_length_s", "velocity_tracking", "video"} <= set(figures)
    assert figures["velocity_tracking"]["lin_vel_xy_mae"] > 0
    assert figures["velocity_tracking"]["yaw_rate_mae"] is None  # the point mass has no yaw
    assert figures["video"]["frames"] == 50


def test_training_clips_in_run_dir_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # 8 steps an iteration, 12 frames a clip (0.24 s at 50 Hz): clips start at iterations 0 and 2; the first ends
    # during iteration 1, where it is logged; the second is cut short by the end of training and left out.
    run = toy_run(tmp_path, "algo.max_iterations=3", "logger.video_interval=2", "logger.video_seconds=0.24")
    videos = sorted(p.name for p in (run / "videos").iterdir())
    assert videos == ["train_000000.gif", "train_000000.mp4", "train_000000.png"], videos
    assert len(decode(run / "videos" / "train_000000.mp4")) == 12
    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    images = events.Images("Video/policy")
    assert [image.step for image in images] == [1]
    assert images[0].encoded_image_string.startswith(b"GIF89a")


def test_sweep_report_shows_a_clip_per_point(tmp_path):
    from reports.report import report

    result = run_train(
        [
            "-m",
            "task=toy",
            f"output_root={tmp_path / 'outputs'}",
            *SMALL_TOY,
            "algo.max_iterations=1",
            "task.rewards.track_velocity.weight=0.5,1.0,2.0",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = only_run(tmp_path / "outputs" / "multirun")
    data = report(sweep, make_clips=True, clip_seconds=0.5, clip_envs=2)
    page = (sweep / "report.html").read_text()
    assert page.count('class="clip"') == 3
    assert page.count("<video") == 3 and page.count("data:video/mp4;base64,") == 3
    assert [clip["point"] for clip in data["clips"]] == ["0", "1", "2"]
    assert all(Path(clip["clip"]).with_suffix(".mp4").is_file() for clip in data["clips"])


# ------------------------------------------------------------------------------------------- H1
@pytest.mark.slow
def test_h1_play_video_draws_the_robot(tmp_path):
    from runner.play import main

    result = run_train(
        ["task=h1_rough", *H1_CPU_RUN, f"output_root={tmp_path / 'outputs'}", "algo.max_iterations=1"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path / "outputs" / "h1_rough")
    code = main([str(run), "--video", "--video-seconds", "1", "--video-episodes", "5", "--episodes", "1"])
    assert code == 0
    stem = run / "videos" / "play_model_1"
    frames = decode(stem.with_suffix(".mp4"))
    assert len(frames) == 50 and frames[0].shape == (360, 640, 3)
    assert_moving_robot(frames, min_pixels=1500, min_shift_px=3.0)
    figures = json.loads(stem.with_suffix(".json").read_text())
    tracking = figures["velocity_tracking"]
    assert tracking["lin_vel_xy_mae"] > 0 and tracking["yaw_rate_mae"] > 0
