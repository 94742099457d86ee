"""`hydra/launcher=local`: the points of a sweep one after another in this process (Hydra's basic launcher), or
`launcher.runs_per_gpu` at once on each GPU, each point a process of its own (launchers.packing)."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from launchers import packing
from launchers.settings import LocalSettings, settings_from_config

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
"""What a run takes as a request to checkpoint and stop (core.lifecycle); passed on to every running point."""


class LocalLauncher(Launcher):
    """Runs the points of a sweep on this machine; its settings are the composed config's `launcher` node
    (launchers.settings.LocalSettings).

    - `runs_per_gpu=1`: Hydra's basic launcher, unchanged: one point after another, in this process.
    - `runs_per_gpu=N`: up to N points at once on each GPU torch sees (N on the CPU without one), each a process
      of its own pinned to its GPU, in the run directory the basic launcher would give it. A failed point is
      reported with its overrides and log while the others go on; Hydra then fails the sweep with the first
      failure, as it does after the basic launcher. SIGTERM, SIGUSR1 and SIGUSR2 reach every running point (each
      checkpoints and stops) and start no further point.
    """

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.settings: LocalSettings | None = None
        self._basic = BasicLauncher()

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Read and check the settings before the sweeper writes anything."""
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.settings = settings_from_config(config, LocalSettings)
        if self.settings.runs_per_gpu < 1:
            raise ValueError(
                f"launcher.runs_per_gpu={self.settings.runs_per_gpu}: give 1 (sweep points one after another in "
                "this process) or more (that many points at once on each GPU, each a process of its own)"
            )
        self._basic.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.settings is not None
        if self.settings.runs_per_gpu == 1:
            return self._basic.launch(job_overrides, initial_job_idx)
        return self._launch_packed(job_overrides, initial_job_idx)

    def _launch_packed(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None and self.settings is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)

        points, devices = [], set()
        for number, overrides in enumerate(job_overrides, start=initial_job_idx):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = number
                sweep_config.hydra.job.num = number
            shown = filter_overrides(list(overrides))
            if settings_from_config(sweep_config, LocalSettings) != self.settings:
                raise ValueError(
                    f"sweep point #{number} ({' '.join(shown)}) changes launcher settings; the points of one sweep "
                    "share them: sweep them in separate commands"
                )
            devices.add(_pinnable_device(sweep_config, number, shown, self.settings.runs_per_gpu))
            call = _LocalPoint(self.hydra_context, self.task_function, sweep_config, Singleton.get_state())
            points.append(packing.Point(number, shown, _run_dir(sweep_config), call))

        gpus = [] if devices == {"cpu"} else packing.visible_gpus(_cuda_device_count())
        slots = packing.local_slots(self.settings.runs_per_gpu, gpus)
        where = f"{self.settings.runs_per_gpu} per GPU on GPUs {', '.join(gpus)}" if gpus else "on the CPU"
        log.info(f"Launching {len(points)} jobs locally, up to {len(slots)} at once ({where})")
        pool = packing.PointPool(slots, sweep_dir / packing.PACKED_DIR)
        with _passed_on_to_points(pool):
            outcomes = pool.run(points, on_start=_report_start, on_end=_report_end)

        returns = []
        for point, outcome in zip(points, outcomes, strict=True):
            if outcome is None:
                returns.append(packing.failed_return(point, "was not started: the sweep was asked to stop"))
            else:
                returns.append(outcome.job_return())
        failed = [r for r in returns if r.status != JobStatus.COMPLETED]
        if failed:
            log.error(f"{len(failed)} of {len(points)} sweep points did not complete:")
            for job_return in failed:
                log.error(f"\t{job_return._return_value}")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns


class _LocalPoint:
    """One sweep point, run by its own process as the basic launcher runs it (Hydra's run_job).

    `config` is the point's composed config (job number and id set) and `singleton_state` Hydra's singletons (the
    ConfigStore among them), both from the sweeping process. (A plain class: Hydra's plugin scan executes this
    module outside sys.modules, where a dataclass cannot be defined.)"""

    def __init__(
        self,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
        singleton_state: dict[Any, Any],
    ) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self.singleton_state = singleton_state

    def __call__(self) -> packing.PointResult:
        Singleton.set_state(self.singleton_state)
        setup_globals()
        result = run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=self.config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        return packing.PointResult(packing.portable(result))


def _run_dir(sweep_config: DictConfig) -> Path:
    """The run directory Hydra's run_job gives the point: `hydra.sweep.dir`/`hydra.sweep.subdir`, resolved with the
    point's own Hydra config in place (the subdir may name job fields)."""
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    hydra_config.set_config(sweep_config)
    try:
        return Path(
            os.path.abspath(os.path.join(str(sweep_config.hydra.sweep.dir), str(sweep_config.hydra.sweep.subdir)))
        )
    finally:
        hydra_config.cfg = previous


def _pinnable_device(sweep_config: DictConfig, number: int, shown: list[str], runs_per_gpu: int) -> str:
    """The point's `device`, refused when it names a GPU other than the one its process is pinned to (seen as
    cuda:0)."""
    device = str(OmegaConf.select(sweep_config, "device", default="auto"))
    index = re.fullmatch(r"cuda:(\d+)", device)
    if index and int(index.group(1)) != 0:
        raise ValueError(
            f"sweep point #{number} ({' '.join(shown)}) asks for device={device}, but launcher.runs_per_gpu="
            f"{runs_per_gpu} pins each point's process to one GPU, which it sees as cuda:0: use device=auto or "
            "device=cuda (and CUDA_VISIBLE_DEVICES to choose the GPUs)"
        )
    return "cpu" if device == "cpu" else "cuda"


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count()


@contextmanager
def _passed_on_to_points(pool: packing.PointPool) -> Iterator[None]:
    """While the points run, a stop signal to this process goes to every running point and starts no further one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous = {sig: signal.signal(sig, lambda signum, _frame: pool.stop(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report_start(point: packing.Point, slot: str, pid: int) -> None:
    log.info(f"\t#{point.number} : {' '.join(point.overrides)}  [{slot}, pid {pid}, output in {point.log}]")


def _report_end(outcome: packing.Outcome) -> None:
    point = outcome.point
    if outcome.completed:
        log.info(f"\t#{point.number} completed in {outcome.seconds:.0f} s")
    else:
        log.error(
            f"\t#{point.number} failed after {outcome.seconds:.0f} s: {outcome.failure()}; its output: {point.log}"
        )
