"""The Hydra launcher that turns each job of a run or sweep into a SageMaker Training Job."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.sagemaker_launcher.config import SageMakerSettings

log = logging.getLogger(__name__)


def settings_from_config(config: DictConfig) -> SageMakerSettings:
    """The typed launcher settings of a composed config (its `launcher` node)."""
    if "launcher" not in config or config.launcher is None:
        raise ValueError("the composed config has no `launcher` node; select it with launcher=sagemaker")
    node = OmegaConf.to_container(config.launcher, resolve=True)
    merged = OmegaConf.merge(OmegaConf.structured(SageMakerSettings), node)
    return OmegaConf.to_object(merged)


def wants_resume(config: DictConfig) -> bool:
    """Whether the run asks to continue an earlier run (`resume` set and not false)."""
    value = config.get("resume", False)
    return value not in (False, None, "", "false", "False")


class SageMakerLauncher(Launcher):
    """Submits every job to SageMaker instead of running it here; see launchers/sagemaker.py."""

    def __init__(self, **_: object) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # The launch module imports the AWS SDK lazily; importing it here keeps plugin
        # discovery (which imports every plugin module) free of it too.
        from launchers import sagemaker

        assert self.config is not None and self.hydra_context is not None
        planned = []
        for offset, overrides in enumerate(job_overrides):
            job_num = initial_job_idx + offset
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config.hydra.job):
                sweep_config.hydra.job.num = job_num
                sweep_config.hydra.job.id = f"sagemaker_{job_num}"
            task_name = str(OmegaConf.select(sweep_config, "task.name", default="run"))
            record_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
            planned.append(
                sagemaker.PlannedJob(
                    job_num=job_num,
                    settings=settings_from_config(sweep_config),
                    overrides=list(overrides),
                    task_name=task_name,
                    resume=wants_resume(sweep_config),
                    record_dir=None if settings_from_config(sweep_config).dry_run else record_dir,
                )
            )
            log.info("#%d : %s", job_num, " ".join(sagemaker.container_overrides(overrides)))

        submitted = sagemaker.launch(planned)
        for job in submitted:
            if job.planned.record_dir is not None:
                config_copy = self.hydra_context.config_loader.load_sweep_config(self.config, job.planned.overrides)
                with open_dict(config_copy):
                    del config_copy["hydra"]
                OmegaConf.save(config_copy, job.planned.record_dir / "config.yaml")
        return [
            JobReturn(
                overrides=list(job.planned.overrides),
                cfg=self.config,
                hydra_cfg=self.config,
                working_dir=str(job.planned.record_dir or ""),
                task_name=job.planned.task_name,
                status=JobStatus.COMPLETED,
                _return_value=job.name,
            )
            for job in submitted
        ]
