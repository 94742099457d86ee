"""A finished training clip into the run's curves: an animated GIF in TensorBoard, the MP4 in wandb."""

from __future__ import annotations

from video.clip import Clip

TAG = "Video/policy"
"""Name of the clip in TensorBoard's images and in wandb."""


def publish(writer, clip: Clip, step: int, caption: str) -> None:
    """Log ``clip`` at ``step`` through rsl-rl's log ``writer`` (a TensorBoard ``SummaryWriter``, which this
    project's wandb writer also is); nothing happens without a writer."""
    if writer is None:
        return
    if hasattr(writer, "_get_file_writer"):
        _tensorboard_gif(writer, clip, step)
    run = getattr(writer, "run", None)
    if run is not None and hasattr(run, "log"):
        import wandb

        media = clip.mp4 if clip.mp4 is not None else clip.gif
        run.log({TAG: wandb.Video(str(media), caption=caption)}, step=step)


def _tensorboard_gif(writer, clip: Clip, step: int) -> None:
    """An image summary whose encoded image is the GIF: TensorBoard's image panel plays it."""
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    with Image.open(clip.gif) as image:
        width, height = image.size
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=clip.gif.read_bytes())
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=TAG, image=image)]), step)
