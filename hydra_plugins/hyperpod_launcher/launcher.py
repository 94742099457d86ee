"""`hydra/launcher=hyperpod`: submit runs to Slurm and return; inside the job, train, checkpoint on signal, requeue."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
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
from launchers.packing import POINT_LOG, Outcome, Point, PointPool, PointResult, failed_return, portable
from launchers.settings import HyperPodSettings, settings_from_config

if TYPE_CHECKING:
    from launchers.hyperpod import SourceSnapshot
    from launchers.slurm_job import StopDecision, StopSignals

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
    - With `runs_per_gpu` > 1, each task of the array trains that many sweep points at once, each in a process of
      its own, and does the above for all of them at once (:meth:`_run_pack`).
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
        from launchers import slurm_job

        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        started = time.time()
        Singleton.set_state(singleton_state)
        setup_globals()
        slurm_job.export_distributed_env()
        _print_code_source()

        job_environment = submitit.JobEnvironment()
        result, signals, run_dir = self._train(sweep_overrides, job_dir_key, job_num, job_environment.job_id)
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
                self._leave_for_next_attempt(decision, [(run_dir, str(stop), None)], job_environment.job_id, started)
        if result.status == JobStatus.FAILED:
            # Raising (rather than returning the failure) makes Slurm record the job as FAILED.
            raise result._return_value
        return result

    def _train(
        self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str
    ) -> tuple[JobReturn, StopSignals, Path]:
        """Train one sweep point in this process, continuing its run directory when it holds a checkpoint; returns
        Hydra's return, the stop signals that came, and the run directory."""
        from launchers import slurm_job

        sweep_config = self._job_config(sweep_overrides, job_num, job_id)
        run_dir = Path(str(sweep_config.hydra.sweep.dir), str(sweep_config.hydra.sweep.subdir)).resolve()
        overrides = rundir.continuation_overrides(list(sweep_overrides), run_dir)
        if overrides != list(sweep_overrides):
            log.info("continuing %s from %s", run_dir, rundir.latest_checkpoint(run_dir)[1])
            sweep_config = self._job_config(overrides, job_num, job_id)

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
        return result, signals, run_dir

    def _train_packed_point(
        self, sweep_overrides: list[str], job_num: int, job_id: str, singleton_state: dict[type, Singleton]
    ) -> PointResult:
        """One packed sweep point, in a process of its own that the array task started (launchers.packing): train
        it, and hand back how it ended and the stop signals that came; the task decides what they mean."""
        from core.lifecycle import Interrupted

        Singleton.set_state(singleton_state)
        setup_globals()
        _print_code_source()
        result, signals, _ = self._train(sweep_overrides, "hydra.sweep.dir", job_num, job_id)
        stop = result._return_value if result.status == JobStatus.FAILED else None
        return PointResult(
            portable(result),
            stopped=str(stop) if isinstance(stop, Interrupted) else None,
            signals=list(signals.received),
        )

    def _run_pack(self, points: list[tuple[list[str], int]], singleton_state: dict[type, Singleton]) -> list[JobReturn]:
        """One task of a packed job array (`launcher.runs_per_gpu`): train its sweep points at once, each in a
        process of its own sharing the task's GPU (or CPUs), and act for them all once every one has ended.

        Points whose run completed (or failed) in an earlier attempt of the task are not trained again; the others
        continue their run directories. The job's stop signals reach every point's process (Slurm signals them all,
        and the task passes each signal on as well); when points stopped on one, the task asks the controller once
        what it meant and requeues the job once, after the last point has written its checkpoint. A point's
        process killed by a signal makes the task end as a killed training step would (the batch script requeues
        it, unless it ran out of memory); a point that failed with an error fails the task once the others end.
        """
        import submitit

        from launchers import slurm_job

        assert self.hydra_context is not None and self.config is not None
        started = time.time()
        Singleton.set_state(singleton_state)
        setup_globals()
        _print_code_source()
        job_environment = submitit.JobEnvironment()
        job_id = job_environment.job_id

        returns: dict[int, JobReturn] = {}
        to_train: list[Point] = []
        for overrides, number in points:
            config = self._job_config(list(overrides), number, job_id)
            run_dir = Path(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir)).resolve()
            shown = filter_overrides(list(overrides))
            earlier = _ended_earlier(run_dir, shown)
            if earlier is not None:
                print(
                    f"[hyperpod] #{number} ({' '.join(shown)}): {earlier.working_dir} ended in an earlier attempt "
                    f"({earlier.status.name.lower()}); not trained again",
                    flush=True,
                )
                returns[number] = earlier
                continue
            call = _PackedPoint(self, list(overrides), number, job_id, singleton_state)
            to_train.append(Point(number, shown, run_dir, call))

        assert self.settings is not None
        shared = "the task's GPU" if self.settings.gpus_per_node else "the task's CPUs"
        # The points' pickled calls and results go beside submitit's own files of this task.
        pool = PointPool([(shared, {})] * max(len(to_train), 1), job_environment.paths.folder / "packed")

        print(f"[hyperpod] array task {job_id}: training {len(to_train)} sweep point(s) at once", flush=True)
        with slurm_job.StopSignals(on_signal=pool.stop) as signals:
            outcomes = pool.run(to_train, on_start=_report_start, on_end=_report_end)

        stopped: list[tuple[Path, str, int | None]] = []
        killed: list[int] = []
        for point, outcome in zip(to_train, outcomes, strict=True):
            if outcome is None:
                stopped.append((point.run_dir, "not started: the task was asked to stop first", None))
                returns[point.number] = failed_return(point, "not started: the task was asked to stop first")
                continue
            returns[point.number] = outcome.job_return()
            if outcome.completed:
                continue
            if outcome.result is not None and outcome.result.stopped:
                stopped.append((point.run_dir, outcome.result.stopped, outcome.pid))
            elif outcome.killed_by in slurm_job.STOP_SIGNALS and signals.received:
                # Ended by the stop signal itself before its run could take it over: nothing new to save.
                reason = f"stopped while starting ({signal.Signals(outcome.killed_by).name})"
                stopped.append((point.run_dir, reason, outcome.pid))
            elif outcome.killed_by is not None:
                killed.append(outcome.killed_by)

        if stopped and signals.received:
            decision = signals.decision()
            assert decision is not None
            if decision.kind is slurm_job.StopKind.STOP:
                log.warning("%d sweep point(s) stopped: %s; not requeued", len(stopped), decision.explanation)
            else:
                self._leave_for_next_attempt(decision, stopped, job_id, started)
        if killed:
            status = slurm_job.killed_points_status(killed)
            print(
                f"[hyperpod] array task {job_id}: a sweep point's process was killed by "
                f"{signal.Signals(status - 128).name}; the task ends as a killed training step (status {status})",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(status)
        ordered = [returns[number] for _, number in points]
        failed = [job_return for job_return in ordered if job_return.status != JobStatus.COMPLETED]
        if failed:
            # Raising (rather than returning the failures) makes Slurm record the task as FAILED.
            raise RuntimeError(
                f"{len(failed)} of the {len(ordered)} sweep points of array task {job_id} did not complete:\n  "
                + "\n  ".join(str(job_return._return_value) for job_return in failed)
            )
        return ordered

    def checkpoint(self, *args: object, **kwargs: object) -> object:
        """What submitit submits again when it requeues the job on SIGUSR2 by itself (before the run has taken the
        signal over): this same call."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def _leave_for_next_attempt(
        self,
        decision: StopDecision,
        stops: list[tuple[Path, str, int | None]],
        job_id: str,
        started: float,
    ) -> None:
        """Requeue the job unless Slurm already did, record it in the ledger of every run that stopped, and exit
        cleanly (rank 0 of a run, or the task of packed runs).

        `stops` holds, for each run that stopped, its run directory, why it stopped, and the process that trained
        it (None: this one). The events go to the attempt that process started in the run directory since
        `started` (none if the run stopped before it opened its ledger)."""
        from launchers import slurm_job

        assert self.settings is not None
        job = decision.job
        attempts = []
        for run_dir, reason, pid in stops:
            attempt = ledger.attempt_ledger(run_dir, since=started, pid=pid)
            attempts.append((attempt.record if attempt is not None else _record_nothing, reason))
        if slurm_job.is_preemption(job):
            for record, _ in attempts:
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
        for (record, reason), (run_dir, _, _) in zip(attempts, stops, strict=True):
            log.warning("%s: %s (%s): %s", run_dir, reason, decision.explanation, message)
            record(
                "requeued",
                job_id=job_id,
                restart_count=slurm_job.restart_count(),
                reason=reason,
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
            shown = [filter_overrides(list(overrides)) for overrides in job_overrides]
            print(hyperpod.dry_run_text(executor, settings, shown))
            return []
        # sbatch passes the submitter's environment into the jobs: the ledger counts queue time from this moment.
        os.environ[ledger.SUBMITTED_AT_ENV] = str(time.time())
        # Each task of the array trains one run, or `runs_per_gpu` runs at once when they are packed.
        tasks = hyperpod.pack(list(range(len(job_params))), settings.runs_per_gpu)
        if settings.runs_per_gpu > 1:
            packs = [[(job_params[index][0], job_params[index][2]) for index in members] for members in tasks]
            jobs = executor.map_array(_PackedTask(job_launcher), packs, [Singleton.get_state()] * len(packs))
        else:
            jobs = executor.map_array(job_launcher, *zip(*job_params, strict=True))
        task_of = {index: job for members, job in zip(tasks, jobs, strict=True) for index in members}

        runs = []
        for index, (run_dir, overrides) in enumerate(zip(run_dirs, job_overrides, strict=True)):
            job = task_of[index]
            packed = settings.runs_per_gpu > 1
            runs.append(
                hyperpod.SubmittedRun(
                    job_id=job.job_id,
                    run_dir=run_dir,
                    log_file=str(Path(run_dir) / POINT_LOG) if packed else str(job.paths.stdout),
                    overrides=filter_overrides(list(overrides)),
                    source=source,
                    task_log=str(job.paths.stdout) if packed else None,
                )
            )
        manifest = hyperpod.write_manifest(sweep_dir, runs)
        hyperpod.report(runs, manifest)

        if settings.wait:
            states = hyperpod.wait_for(jobs, settings.poll_interval_s)
            results: dict[str, list[JobReturn]] = {}
            returns = []
            for index, run in enumerate(runs):
                job = task_of[index]
                if states[job.job_id].startswith("COMPLETED"):
                    if job.job_id not in results:
                        # A packed task returns the list of its runs' returns.
                        result = job.results()[0]
                        results[job.job_id] = result if isinstance(result, list) else [result]
                    members = next(members for members in tasks if index in members)
                    returns.append(results[job.job_id][members.index(index)])
                    continue
                # A packed task that failed may have completed some of its runs: each run's directory says.
                earlier = _ended_earlier(Path(run.run_dir), run.overrides) if settings.runs_per_gpu > 1 else None
                if earlier is not None and earlier.status == JobStatus.COMPLETED:
                    returns.append(earlier)
                    continue
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


def _print_code_source() -> None:
    """Say in the task's (or packed point's) log which code runs: this folder, a source snapshot of a commit."""
    from core.rundir import SOURCE_COMMIT_ENV, SOURCE_SNAPSHOT_ENV

    snapshot = os.environ.get(SOURCE_SNAPSHOT_ENV)
    print(
        f"[hyperpod] code from {Path(__file__).resolve().parents[2]}"
        + (f" (source snapshot of commit {os.environ.get(SOURCE_COMMIT_ENV)})" if snapshot else ""),
        flush=True,
    )


class _PackedTask:
    """What each task of a packed job array runs (`launcher.runs_per_gpu`): its sweep points, at once.

    (Plain classes here: Hydra's plugin scan executes this module outside sys.modules, where a dataclass cannot be
    defined.)"""

    def __init__(self, launcher: HyperPodLauncher) -> None:
        self.launcher = launcher

    def __call__(self, points: list[tuple[list[str], int]], singleton_state: dict[type, Singleton]) -> list[JobReturn]:
        return self.launcher._run_pack(points, singleton_state)

    def checkpoint(self, *args: object, **kwargs: object) -> object:
        """What submitit submits again when it requeues the task on SIGUSR2 by itself (before the task has taken
        the signal over): this same call."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class _PackedPoint:
    """One sweep point of a packed task, as its own process runs it (launchers.packing)."""

    def __init__(
        self,
        launcher: HyperPodLauncher,
        overrides: list[str],
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> None:
        self.launcher = launcher
        self.overrides = overrides
        self.job_num = job_num
        self.job_id = job_id
        self.singleton_state = singleton_state

    def __call__(self) -> PointResult:
        return self.launcher._train_packed_point(self.overrides, self.job_num, self.job_id, self.singleton_state)


def _ended_earlier(run_dir: Path, overrides: list[str]) -> JobReturn | None:
    """Hydra's return of a packed point whose run completed or failed in an earlier attempt of its task, which a
    requeued task does not train again (a failure is not retried); None when the run is to be trained."""
    from launchers.jobs import local_state

    state = local_state(run_dir)
    if state not in ("completed", "failed"):
        return None
    job_return = JobReturn(overrides=overrides, working_dir=str(run_dir))
    if state == "completed":
        summary = json.loads((run_dir / rundir.SUMMARY).read_text())
        job_return.status = JobStatus.COMPLETED
        job_return.return_value = (summary.get("objective") or {}).get("value")
    else:
        job_return.status = JobStatus.FAILED
        job_return.return_value = RuntimeError(
            f"sweep point ({' '.join(overrides)}) failed in an earlier attempt; see {run_dir / ledger.LEDGER}"
        )
    return job_return


def _report_start(point: Point, slot: str, pid: int) -> None:
    print(
        f"[hyperpod] #{point.number} ({' '.join(point.overrides)}): pid {pid} on {slot}; output in {point.log}",
        flush=True,
    )


def _report_end(outcome: Outcome) -> None:
    point = outcome.point
    what = "completed" if outcome.completed else outcome.failure()
    print(f"[hyperpod] #{point.number} ended after {outcome.seconds:.0f} s: {what}", flush=True)
