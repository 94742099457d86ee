"""A wandb log writer that resumes the same wandb run and goes offline by itself without an API key."""

from __future__ import annotations

import os
from dataclasses import asdict

from rsl_rl.utils.log_writer import LogWriter
from torch.utils.tensorboard import SummaryWriter


def wandb_mode(requested: str) -> str:
    """``auto`` -> online with an API key (env or netrc), offline without."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = os.path.expanduser("~/.netrc")
    if os.path.isfile(netrc) and "api.wandb.ai" in open(netrc).read():
        return "online"
    return "offline"


class WandbWriter(SummaryWriter, LogWriter):
    """TensorBoard files plus a wandb run; the run id lives in the run directory, so a resume continues it."""

    def __init__(
        self,
        log_dir: str,
        run_id: str,
        project: str,
        entity: str | None,
        group: str | None,
        tags: list[str],
        mode: str,
        name: str,
    ) -> None:
        import wandb

        super().__init__(log_dir, flush_secs=10)
        self._wandb = wandb
        self.run = wandb.init(
            id=run_id,
            resume="allow",
            project=project,
            entity=entity,
            group=group,
            tags=tags or None,
            mode=wandb_mode(mode),
            name=name,
            dir=log_dir,
        )

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, new_style=False):
        super().add_scalar(tag, scalar_value, global_step=global_step, walltime=walltime, new_style=new_style)
        self._wandb.log({tag: scalar_value}, step=global_step)

    def store_config(self, env_cfg, train_cfg: dict) -> None:
        self._wandb.config.update({"train_cfg": train_cfg}, allow_val_change=True)
        try:
            self._wandb.config.update(
                {"env_cfg": env_cfg.to_dict() if hasattr(env_cfg, "to_dict") else asdict(env_cfg)},
                allow_val_change=True,
            )
        except TypeError:
            self._wandb.config.update({"env_cfg": dict(env_cfg)}, allow_val_change=True)

    def save_model(self, model_path: str, it: int) -> None:
        """Checkpoints stay in the run directory; they are not uploaded."""

    def save_file(self, path: str) -> None:
        self._wandb.save(path, base_path=os.path.dirname(path), policy="now")

    def save_video(self, video, it: int) -> None:
        """Videos are not recorded by this project's runs."""

    def stop(self) -> None:
        self._wandb.finish()
        self.close()
