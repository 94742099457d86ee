"""The Hydra launcher that turns each job of a run or sweep into a SageMaker Training Job."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from core import rundir
from launchers.settings import SageMakerSettings, settings_from_config

log = logging.getLogger(__name__)


class SageMakerLauncher(Launcher):
    """Submits every job to SageMaker instead of running it here, with the settings of each job's composed `launcher`
    node (launchers.settings.SageMakerSettings); see launchers/sagemaker.py."""

    def __init__(self) -> None:
        # The `hydra/launcher` node only names this class: every setting is read from the composed config.
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # The launch modules import the AWS SDK lazily; importing them here keeps plugin
        # discovery (which imports every plugin module) free of them too.
        from launchers import sagemaker
        from launchers.sagemaker_plan import PlannedJob, container_overrides

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
            settings = settings_from_config(sweep_config, SageMakerSettings)
            planned.append(
                PlannedJob(
                    job_num=job_num,
                    settings=settings,
                    overrides=list(overrides),
                    task_name=task_name,
                    resume=rundir.resume_requested(sweep_config.get("resume", "false")),
                    record_dir=None if settings.dry_run else record_dir,
                )
            )
            log.info("#%d : %s", job_num, " ".join(container_overrides(overrides)))

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
