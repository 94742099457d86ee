"""`hydra/launcher=hyperpod`: submit runs to Slurm and return; inside the job, train, checkpoint on signal, requeue."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from core import ledger
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

log = logging.getLogger(__name__)


class HyperPodLauncher(SlurmLauncher):
    """hydra-submitit-launcher's Slurm launcher, changed in four ways.

    - `launch` checks the request on the submit host, submits (a sweep as one job array), prints job ids and
      run directories, and returns without waiting unless `wait` is set.
    - Inside the job, torch.distributed variables are set from Slurm and a run directory that already holds a
      checkpoint is continued (`resume=<run dir>`), so every kind of restart resumes.
    - SIGUSR2 (preemption, time limit) stops training at the end of the iteration with a checkpoint, and the
      job requeues itself; SIGTERM stops it the same way without a requeue.
    - A training step killed by a signal requeues the job (see launchers.hyperpod.requeue_on_killed_step).
    """

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        """Run one training process of the job (called on the compute node, once per Slurm task)."""
        import submitit

        from core.lifecycle import Interrupted
        from launchers import slurm_job

        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        slurm_job.export_distributed_env()

        job_environment = submitit.JobEnvironment()
        sweep_config = self._job_config(sweep_overrides, job_num, job_environment.job_id)
        run_dir = Path(str(sweep_config.hydra.sweep.dir), str(sweep_config.hydra.sweep.subdir)).resolve()
        overrides = slurm_job.with_resume(list(sweep_overrides), run_dir)
        if overrides != list(sweep_overrides):
            log.info("continuing %s from %s", run_dir, slurm_job.latest_checkpoint(run_dir))
            sweep_config = self._job_config(overrides, job_num, job_environment.job_id)

        with slurm_job.StopSignals() as signals:
            result = run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=sweep_config,
                job_dir_key=job_dir_key,
                job_subdir_key="hydra.sweep.subdir",
            )
        slurm_job.close_process_group()
        interrupted = result.status == JobStatus.FAILED and isinstance(result._return_value, Interrupted)
        if interrupted and signals.requeue_requested:
            if slurm_job.global_rank() == 0:
                message = slurm_job.requeue_this_job(int(self.params["max_requeues"]))
                log.warning("%s: %s", result._return_value, message)
                from core import ledger

                ledger.record(
                    "requeued",
                    job_id=job_environment.job_id,
                    restart_count=slurm_job.restart_count(),
                    reason=str(result._return_value),
                )
            # Leave without a result file: the job is not over, the requeued one will write it.
            raise SystemExit(0)
        if result.status == JobStatus.FAILED:
            # Raising (rather than returning the failure) makes Slurm record the job as FAILED.
            raise result._return_value
        return result

    def _job_config(self, overrides: list[str], job_num: int, slurm_job_id: str) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config.hydra.job) as job:
            job.id = slurm_job_id
            job.num = job_num
        return sweep_config

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Check the request against this host and the cluster before the sweeper writes or queues anything."""
        from launchers import hyperpod

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        output_root = OmegaConf.select(config, "output_root", default=None) or self.params["output_root"]
        for warning in hyperpod.check_before_submit(self.params, Path(str(output_root)).resolve()):
            log.warning(warning)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Check, submit one job (array) for all runs, report, and return at once unless `wait` is set."""
        import submitit

        from launchers import hyperpod

        assert self.config is not None and self.hydra_context is not None
        params = self.params
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()

        run_dirs, job_params = [], []
        for index, overrides in enumerate(job_overrides, start=initial_job_idx):
            # Composing every run here turns a bad value into an error before anything is queued.
            config = self._job_config(list(overrides), index, f"job_id_for_{index}")
            run_dirs.append(str(Path(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir)).resolve()))
            job_params.append((list(overrides), "hydra.sweep.dir", index, f"job_id_for_{index}", Singleton.get_state()))
        sweep_dir.mkdir(parents=True, exist_ok=True)

        submitit_folder = str(params["submitit_folder"])
        executor = submitit.SlurmExecutor(
            folder=submitit_folder,
            max_num_timeout=int(params["max_num_timeout"]),
            python=hyperpod.python_command(params),
        )
        executor.update_parameters(**hyperpod.executor_parameters(params, hyperpod.code_dir(), Path(os.getcwd())))
        # sbatch passes the submitter's environment into the jobs: the ledger counts queue time from this moment.
        os.environ[ledger.SUBMITTED_AT_ENV] = str(time.time())
        jobs = executor.map_array(self, *zip(*job_params, strict=True))

        runs = [
            hyperpod.SubmittedRun(
                job_id=job.job_id,
                run_dir=run_dir,
                log_file=str(job.paths.stdout),
                overrides=filter_overrides(list(overrides)),
            )
            for job, run_dir, overrides in zip(jobs, run_dirs, job_overrides, strict=True)
        ]
        manifest = hyperpod.write_manifest(sweep_dir, runs)
        hyperpod.report(runs, manifest)

        if params.get("wait"):
            states = hyperpod.wait_for(jobs, float(params["poll_interval_s"]))
            returns = []
            for job, run in zip(jobs, runs, strict=True):
                if states[job.job_id].startswith("COMPLETED"):
                    returns.append(job.results()[0])
                else:
                    failed = JobReturn(overrides=run.overrides, status=JobStatus.FAILED)
                    failed.return_value = RuntimeError(
                        f"Slurm job {job.job_id} ended {states[job.job_id]}; see {run.log_file}"
                    )
                    returns.append(failed)
            return returns

        submitted = []
        for run in runs:
            job_return = JobReturn(overrides=run.overrides, working_dir=run.run_dir, status=JobStatus.COMPLETED)
            job_return.return_value = run
            job_return.cfg = OmegaConf.create({"slurm_job_id": run.job_id, "run_dir": run.run_dir})
            submitted.append(job_return)
        return submitted
