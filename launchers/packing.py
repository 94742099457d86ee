"""Sweep points trained at once, each in a process of its own: started from a pickled call, followed to their end,
their outcomes read back; and the GPU slots of a packed local sweep (`launcher.runs_per_gpu`).

A point's process runs ``python -m launchers.packing <call> <result>``: it loads the call (cloudpickle, as submitit
does), runs it, and writes what it returned, or the traceback of what it raised, to the result file. Everything it
prints goes to :data:`POINT_LOG` in the point's run directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hydra.core.utils import JobReturn

POINT_LOG = "process.log"
"""In a packed point's run directory: everything its process printed (stdout and stderr, tracebacks included);
every attempt appends to it."""
PACKED_DIR = ".packed"
"""Sub-folder of a local sweep's directory holding the pickled calls and results of its points while they run."""
DISTRIBUTED_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""Removed from a point's environment: every packed point trains alone, whatever started the sweep."""
POLL_INTERVAL_S = 0.2
"""Seconds between two looks at the running points' processes."""


class PointFailed(RuntimeError):
    """A sweep point that did not complete; the message names the point, what ended it and where its output is."""


@dataclass
class PointResult:
    """What a point's process hands back."""

    job_return: JobReturn
    """Hydra's return of the point, made picklable (:func:`portable`)."""
    stopped: str | None = None
    """Why the run stopped on request before its end (core.lifecycle.Interrupted's message), or None."""
    signals: list[str] = field(default_factory=list)
    """Names of the stop signals the point's process received (SIGTERM, SIGUSR2), first first."""


def portable(job_return: JobReturn) -> JobReturn:
    """``job_return`` with a failure's exception replaced by a :class:`PointFailed` holding its type and message,
    so that it crosses a process boundary (an exception whose constructor takes other arguments than its message
    does not unpickle); the full traceback is printed to this process's stderr, the point's log."""
    from hydra.core.utils import JobStatus

    error = job_return._return_value
    if job_return.status == JobStatus.FAILED and isinstance(error, BaseException):
        traceback.print_exception(error, file=sys.stderr)
        sys.stderr.flush()
        job_return._return_value = PointFailed(f"{type(error).__name__}: {error}")
    return job_return


@dataclass
class Point:
    """One sweep point to train in a process of its own."""

    number: int
    """The point's job number in the sweep (Hydra's ``hydra.job.num``)."""
    overrides: list[str]
    """The point's own overrides, as the sweep report shows them."""
    run_dir: Path
    """The point's run directory, where its log goes."""
    call: Callable[[], PointResult]
    """What its process runs (pickled with cloudpickle)."""

    @property
    def log(self) -> Path:
        return self.run_dir / POINT_LOG

    def describe(self) -> str:
        return f"#{self.number} ({' '.join(self.overrides) or 'no overrides'})"


def failed_return(point: Point, why: str) -> JobReturn:
    """Hydra's return of a point that did not complete and handed nothing back: a failure naming the point and
    ``why`` (e.g. "was not started: the sweep was asked to stop")."""
    from hydra.core.utils import JobReturn, JobStatus

    job_return = JobReturn(overrides=point.overrides, working_dir=str(point.run_dir), status=JobStatus.FAILED)
    job_return.return_value = PointFailed(f"sweep point {point.describe()} {why}")
    return job_return


@dataclass
class Outcome:
    """How a point's process ended."""

    point: Point
    pid: int
    returncode: int
    """The process's exit status; minus the signal number when a signal ended it."""
    result: PointResult | None
    """What the call returned; None when the process ended without handing anything back."""
    error: str | None
    """The traceback of what the call raised (or why nothing came back), else None."""
    seconds: float
    """How long the process ran."""
    slot: str
    """Where it ran (``GPU 0``, ``CPU``)."""

    @property
    def killed_by(self) -> int | None:
        """The signal that ended the process, or None when it exited."""
        return -self.returncode if self.returncode < 0 else None

    @property
    def completed(self) -> bool:
        from hydra.core.utils import JobStatus

        return self.result is not None and self.result.job_return.status == JobStatus.COMPLETED

    def failure(self) -> str:
        """One line: what ended the point, for reports and for :class:`PointFailed`."""
        if self.result is not None and self.result.stopped:
            return f"stopped: {self.result.stopped}"
        if self.result is not None:
            return str(self.result.job_return._return_value)
        if self.killed_by is not None:
            return f"its process was killed by {signal.Signals(self.killed_by).name}"
        last = (self.error or "").strip().splitlines()
        return last[-1] if last else f"its process exited with status {self.returncode} and returned nothing"

    def job_return(self) -> JobReturn:
        """Hydra's return of the point: what its process returned, or a failure naming the point and its log."""
        from hydra.core.utils import JobReturn, JobStatus

        if self.completed:
            assert self.result is not None
            return self.result.job_return
        job_return = self.result.job_return if self.result is not None else JobReturn(overrides=self.point.overrides)
        job_return.status = JobStatus.FAILED
        job_return.return_value = PointFailed(
            f"sweep point {self.point.describe()} failed: {self.failure()}; its output: {self.point.log}"
        )
        return job_return


@dataclass
class _Running:
    """A point's process while it runs."""

    index: int
    """The point's place in the list given to :meth:`PointPool.run`."""
    point: Point
    process: subprocess.Popen
    slot: int
    started: float
    call_file: Path
    result_file: Path


class PointPool:
    """Runs points as processes, at most one per slot at a time, in order; each slot adds its own environment
    variables (``CUDA_VISIBLE_DEVICES`` of a GPU) to the points it runs."""

    def __init__(self, slots: Sequence[tuple[str, dict[str, str]]], work_dir: Path) -> None:
        """``slots``: (name, environment) of each place a point may run; ``work_dir``: where the pickled calls and
        results are kept while the points run."""
        if not slots:
            raise ValueError("a pool needs at least one slot")
        self.slots = list(slots)
        self.work_dir = Path(work_dir)
        self._running: list[_Running] = []
        self._starting = True

    def stop_starting(self) -> None:
        """Start no further point (the ones running go on)."""
        self._starting = False

    def stop(self, signum: int) -> None:
        """A stop signal for the points: start no further one and send ``signum`` to the running ones (each run
        checkpoints and stops). Safe in a signal handler, as :meth:`signal_running` is."""
        self.stop_starting()
        self.signal_running(signum)

    def signal_running(self, signum: int) -> None:
        """Send ``signum`` to every point's process still running. Safe in a signal handler: it only calls
        ``kill`` (no lock is taken, no process is waited for)."""
        for running in list(self._running):
            if running.process.returncode is None:
                try:
                    os.kill(running.process.pid, signum)
                except ProcessLookupError:
                    pass

    def run(
        self,
        points: Sequence[Point],
        on_start: Callable[[Point, str, int], None] | None = None,
        on_end: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome | None]:
        """Run every point, as many at once as there are slots, and return their outcomes in the points' order
        (None for a point never started because :meth:`stop_starting` was called). ``on_start(point, slot name,
        pid)`` and ``on_end(outcome)`` report progress. An interruption of this process (Ctrl-C) sends SIGTERM to
        the running points, which checkpoint and stop, waits for them and raises again."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        pending = list(enumerate(points))
        outcomes: list[Outcome | None] = [None] * len(points)
        free = list(range(len(self.slots)))
        try:
            while pending or self._running:
                while pending and free and self._starting:
                    index, point = pending.pop(0)
                    running = self._start(index, point, free.pop(0))
                    self._running.append(running)
                    if on_start is not None:
                        on_start(point, self.slots[running.slot][0], running.process.pid)
                if not self._starting:
                    pending.clear()
                ended = [running for running in self._running if running.process.poll() is not None]
                if not ended:
                    time.sleep(POLL_INTERVAL_S)
                    continue
                for running in ended:
                    self._running.remove(running)
                    free = sorted([*free, running.slot])
                    outcomes[running.index] = outcome = self._outcome(running)
                    if on_end is not None:
                        on_end(outcome)
        except KeyboardInterrupt:
            self.stop(signal.SIGTERM)
            for running in self._running:
                running.process.wait()
            raise
        # The calls and results are gone once read: leave no empty folder behind.
        try:
            self.work_dir.rmdir()
        except OSError:
            pass
        return outcomes

    def _start(self, index: int, point: Point, slot: int) -> _Running:
        import cloudpickle

        call_file = self.work_dir / f"{point.number}.call.pkl"
        result_file = self.work_dir / f"{point.number}.result.pkl"
        result_file.unlink(missing_ok=True)
        with open(call_file, "wb") as handle:
            cloudpickle.dump(point.call, handle)
        point.run_dir.mkdir(parents=True, exist_ok=True)
        environment = point_environment(self.slots[slot][1], threads=cpu_share(len(self.slots)))
        with open(point.log, "a") as log:
            process = subprocess.Popen(
                [sys.executable, "-P", "-m", __name__, str(call_file), str(result_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
            )
        return _Running(index, point, process, slot, time.time(), call_file, result_file)

    def _outcome(self, running: _Running) -> Outcome:
        import cloudpickle

        result, error = None, None
        if running.result_file.is_file():
            with open(running.result_file, "rb") as handle:
                kind, value = cloudpickle.load(handle)
            if kind == "returned":
                result = value
            else:
                error = value
            running.result_file.unlink(missing_ok=True)
        running.call_file.unlink(missing_ok=True)
        return Outcome(
            point=running.point,
            pid=running.process.pid,
            returncode=int(running.process.returncode),
            result=result,
            error=error,
            seconds=time.time() - running.started,
            slot=self.slots[running.slot][0],
        )


def code_root() -> Path:
    """The folder this process imports the project from (the one holding ``launchers/``): a point's process imports
    the same code, a HyperPod job's source snapshot included."""
    return Path(__file__).resolve().parents[1]


def cpu_share(processes: int) -> int:
    """CPU threads for each of ``processes`` processes sharing the CPUs this process may use (at least one)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(processes, 1))


def point_environment(
    slot_environment: dict[str, str], environ: dict[str, str] | None = None, threads: int | None = None
) -> dict[str, str]:
    """The environment of a point's process: this one's without the distributed variables, the project first on
    PYTHONPATH, unbuffered output, the slot's own variables, and ``OMP_NUM_THREADS=threads`` unless it is set
    already: each of the points that run at once gets its share of the CPUs (PyTorch would otherwise start a
    thread per CPU in every one of them, and the points would spend their time waiting on each other's threads)."""
    environment = {
        key: value
        for key, value in (os.environ if environ is None else environ).items()
        if key not in DISTRIBUTED_VARIABLES
    }
    path = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = f"{code_root()}{os.pathsep}{path}" if path else str(code_root())
    environment["PYTHONUNBUFFERED"] = "1"
    if threads is not None:
        environment.setdefault("OMP_NUM_THREADS", str(threads))
    environment.update(slot_environment)
    return environment


def visible_gpus(device_count: int, environ: dict[str, str] | None = None) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` value that pins a process to each of the ``device_count`` GPUs torch sees: the
    entries of this process's own ``CUDA_VISIBLE_DEVICES`` when it has one, else the GPU indices."""
    listed = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(index) for index in range(device_count)]
    return [entry.strip() for entry in listed.split(",") if entry.strip()][:device_count]


def local_slots(runs_per_gpu: int, gpus: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """The slots of a packed local sweep: ``runs_per_gpu`` per GPU, taken round-robin over the GPUs (the first
    points spread over every GPU before any GPU gets a second), or ``runs_per_gpu`` on the CPU when there is none."""
    if not gpus:
        return [("CPU", {}) for _ in range(runs_per_gpu)]
    return [(f"GPU {gpu}", {"CUDA_VISIBLE_DEVICES": gpu}) for _ in range(runs_per_gpu) for gpu in gpus]


def main(argv: Sequence[str]) -> int:
    """A point's process: run the pickled call in ``argv[0]`` and write its outcome to ``argv[1]``."""
    import cloudpickle

    call_file, result_file = Path(argv[0]), Path(argv[1])
    try:
        with open(call_file, "rb") as handle:
            call = cloudpickle.load(handle)
        outcome: tuple[str, Any] = ("returned", call())
    except BaseException:  # noqa: BLE001 - whatever ended the call is reported to the launcher
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        outcome = ("raised", text)
    partial = result_file.with_name(f".{result_file.name}.partial")
    with open(partial, "wb") as handle:
        cloudpickle.dump(outcome, handle)
    partial.rename(result_file)
    sys.stdout.flush()
    return 0 if outcome[0] == "returned" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
