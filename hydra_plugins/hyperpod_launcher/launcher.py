"""`hydra/launcher=hyperpod`: submit runs to Slurm and return; inside the job, train, checkpoint on signal, requeue."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from core import ledger, rundir
from launchers.settings import HyperPodSettings, settings_from_config

if TYPE_CHECKING:
    from launchers.hyperpod import SourceSnapshot
    from launchers.slurm_job import StopDecision

log = logging.getLogger(__name__)


class HyperPodLauncher(Launcher):
    """Sends the runs of a sweep to Slurm through submitit as one job array; its settings are the composed
    config's `launcher` node (launchers.settings.HyperPodSettings).

    - `launch` checks the request on the submit host, copies the source into the sweep directory (the jobs run
      that copy, whatever happens to the work tree later), submits (a sweep as one job array), prints job ids
      and run directories, and returns without waiting unless `wait` is set.
    - Inside the job, torch.distributed variables are set from Slurm and a run directory that already holds a
      checkpoint is continued (`resume=<run dir>`), so every kind of restart resumes.
    - SIGUSR2 (time limit, preemption notice) and a preemption's SIGTERM stop training at the end of the
      iteration (at once during start-up) with a checkpoint, and the job requeues itself; a user's `scancel`
      (SIGTERM) stops it the same way without a requeue (see launchers.slurm_job.classify_stop).
    - A training step killed by a signal requeues the job, unless it was killed for exceeding its memory or
      HyperPod's auto-resume restarts it (see launchers.hyperpod.killed_step_teardown).
    """

    def __init__(self) -> None:
        # The `hydra/launcher` node only names this class: every setting is read from the composed config.
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.settings: HyperPodSettings | None = None

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
        from core.rundir import SOURCE_COMMIT_ENV, SOURCE_SNAPSHOT_ENV
        from launchers import slurm_job

        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        started = time.time()
        Singleton.set_state(singleton_state)
        setup_globals()
        slurm_job.export_distributed_env()
        snapshot = os.environ.get(SOURCE_SNAPSHOT_ENV)
        print(
            f"[hyperpod] code from {Path(__file__).resolve().parents[2]}"
            + (f" (source snapshot of commit {os.environ.get(SOURCE_COMMIT_ENV)})" if snapshot else ""),
            flush=True,
        )

        job_environment = submitit.JobEnvironment()
        sweep_config = self._job_config(sweep_overrides, job_num, job_environment.job_id)
        run_dir = Path(str(sweep_config.hydra.sweep.dir), str(sweep_config.hydra.sweep.subdir)).resolve()
        overrides = rundir.continuation_overrides(list(sweep_overrides), run_dir)
        if overrides != list(sweep_overrides):
            log.info("continuing %s from %s", run_dir, rundir.latest_checkpoint(run_dir)[1])
            sweep_config = self._job_config(overrides, job_num, job_environment.job_id)

        # The training code (torch included) is imported while submitit's handlers still hold the signals: the
        # run forgets stop requests made before it starts, and submitit requeues on SIGUSR2 by itself.
        import runner.train  # noqa: F401

        with slurm_job.StopSignals() as signals:
            result = run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=sweep_config,
                job_dir_key=job_dir_key,
                job_subdir_key="hydra.sweep.subdir",
            )
        slurm_job.close_process_group()
        stop = result._return_value if result.status == JobStatus.FAILED else None
        if isinstance(stop, Interrupted) and signals.received:
            if slurm_job.global_rank() != 0:
                # Rank 0 alone asks the controller what the signal meant and acts for the whole job.
                raise SystemExit(0)
            decision = signals.decision()
            assert decision is not None
            if decision.kind is slurm_job.StopKind.STOP:
                log.warning("%s: %s; not requeued", stop, decision.explanation)
            else:
                self._leave_for_next_attempt(decision, stop, job_environment.job_id, run_dir, started)
        if result.status == JobStatus.FAILED:
            # Raising (rather than returning the failure) makes Slurm record the job as FAILED.
            raise result._return_value
        return result

    def checkpoint(self, *args: object, **kwargs: object) -> object:
        """What submitit submits again when it requeues the job on SIGUSR2 by itself (before the run has taken the
        signal over): this same call."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def _leave_for_next_attempt(
        self, decision: StopDecision, stop: BaseException, job_id: str, run_dir: Path, started: float
    ) -> None:
        """Rank 0: requeue the job unless Slurm already did, record it in the run's ledger, and exit cleanly.

        The events go to the attempt this process started in `run_dir` since `started` (none if the run stopped
        before it opened its ledger)."""
        from launchers import slurm_job

        assert self.settings is not None
        attempt = ledger.attempt_ledger(run_dir, since=started)
        record = attempt.record if attempt is not None else _record_nothing
        job = decision.job
        if slurm_job.is_preemption(job):
            record(
                "preempted",
                job_id=job_id,
                signal=decision.signal,
                preempt_time=job.get("PreemptTime"),
                kill_time=job.get("EndTime"),
            )
        if decision.kind is slurm_job.StopKind.REQUEUE:
            message = slurm_job.requeue_this_job(self.settings.max_requeues)
            requeued_by = "run"
        else:
            message = f"Slurm requeued job {job_id} itself"
            requeued_by = "slurm"
        log.warning("%s (%s): %s", stop, decision.explanation, message)
        record(
            "requeued",
            job_id=job_id,
            restart_count=slurm_job.restart_count(),
            reason=str(stop),
            why=decision.explanation,
            by=requeued_by,
        )
        # Leave without a result file: the job is not over, the requeued one will write it.
        raise SystemExit(0)

    def _running_from(self, source: SourceSnapshot, code_dir: Path) -> HyperPodLauncher:
        """A copy of this launcher for the jobs, whose config search path reads the snapshot's config files.

        Every attempt composes its config again (with `resume=` when continuing); the primary config folder
        (`conf/` next to train.py) is searched in the snapshot, not in the work tree it was copied from.
        """
        import copy

        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra._internal.config_search_path_impl import ConfigSearchPathImpl

        assert self.hydra_context is not None
        search_path = ConfigSearchPathImpl()
        for element in self.hydra_context.config_loader.get_search_path().get_path():
            search_path.append(element.provider, _in_snapshot(element.path, code_dir, source.code_dir))
        job_launcher = copy.copy(self)
        job_launcher.hydra_context = HydraContext(
            config_loader=ConfigLoaderImpl(config_search_path=search_path), callbacks=self.hydra_context.callbacks
        )
        return job_launcher

    def _job_config(self, overrides: list[str], job_num: int, slurm_job_id: str) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config.hydra.job) as job:
            job.id = slurm_job_id
            job.num = job_num
        return sweep_config

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Read the settings and check the request against this host and the cluster before the sweeper writes or
        queues anything."""
        from launchers import hyperpod

        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.settings = settings_from_config(config, HyperPodSettings)
        output_root = OmegaConf.select(config, "output_root", default=None) or self.settings.output_root
        checks = hyperpod.check_before_submit(self.settings, Path(str(output_root)).resolve(), hyperpod.code_dir())
        for warning in checks:
            log.warning(warning)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Check, submit one job (array) for all runs, report, and return at once unless `wait` is set."""
        from launchers import hyperpod

        assert self.config is not None and self.hydra_context is not None and self.settings is not None
        settings = self.settings
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()

        run_dirs, job_params = [], []
        for index, overrides in enumerate(job_overrides, start=initial_job_idx):
            # Composing every run here turns a bad value into an error before anything is queued.
            config = self._job_config(list(overrides), index, f"job_id_for_{index}")
            if settings_from_config(config, HyperPodSettings) != settings:
                raise ValueError(
                    f"run #{index} ({' '.join(filter_overrides(list(overrides)))}) changes launcher settings; the "
                    "runs of one sweep are one Slurm job array and share them: sweep them in separate submissions"
                )
            run_dirs.append(str(Path(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir)).resolve()))
            job_params.append((list(overrides), "hydra.sweep.dir", index, f"job_id_for_{index}", Singleton.get_state()))
        if not settings.dry_run:
            sweep_dir.mkdir(parents=True, exist_ok=True)

        code_dir, job_launcher = hyperpod.code_dir(), self
        # A dry run writes nothing: no source snapshot (the script then imports the live folder of train.py).
        source = None if settings.dry_run else hyperpod.source_for(settings, code_dir, sweep_dir)
        if source is not None:
            log.info("jobs run the source copied to %s (%d files)", source.path, source.file_count)
            job_launcher = self._running_from(source, code_dir)
        executor = hyperpod.make_executor(
            settings,
            job_name=str(OmegaConf.select(self.config, "task.name", default="train")),
            sweep_dir=str(self.config.hydra.sweep.dir),
            code_dir=code_dir,
            workdir=Path(os.getcwd()),
            source=source,
        )
        if settings.dry_run:
            print(hyperpod.dry_run_text(executor, settings, len(job_params)))
            return []
        # sbatch passes the submitter's environment into the jobs: the ledger counts queue time from this moment.
        os.environ[ledger.SUBMITTED_AT_ENV] = str(time.time())
        jobs = executor.map_array(job_launcher, *zip(*job_params, strict=True))

        runs = [
            hyperpod.SubmittedRun(
                job_id=job.job_id,
                run_dir=run_dir,
                log_file=str(job.paths.stdout),
                overrides=filter_overrides(list(overrides)),
                source=source,
            )
            for job, run_dir, overrides in zip(jobs, run_dirs, job_overrides, strict=True)
        ]
        manifest = hyperpod.write_manifest(sweep_dir, runs)
        hyperpod.report(runs, manifest)

        if settings.wait:
            states = hyperpod.wait_for(jobs, settings.poll_interval_s)
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


def _in_snapshot(search_path: str, code_dir: Path, snapshot_code_dir: Path) -> str:
    """A Hydra config search path (a folder, written bare or as `file://<folder>`) moved into the snapshot when
    it lies under `code_dir`; other paths (`pkg://...`, folders elsewhere) are returned unchanged."""
    scheme = "file://" if search_path.startswith("file://") else ""
    if "://" in search_path and not scheme:
        return search_path
    folder = Path(search_path[len(scheme) :]).resolve()
    try:
        return f"{scheme}{snapshot_code_dir / folder.relative_to(code_dir.resolve())}"
    except ValueError:
        return search_path


def _record_nothing(_event: str, **_fields: object) -> None:
    """The ledger of a run that stopped before it opened its own."""
