"""In-container side of the SageMaker launcher: starts this instance's train.py processes and sees them to their end.

SageMaker's `sm_train.sh` runs `exec python3 -m launchers.sagemaker_entry --checkpoint-dir /opt/ml/checkpoints
-- <overrides>` from the unpacked source. `exec` makes this process the container's PID 1, the one process a
stop or a Spot interruption signals (SIGTERM, then SIGKILL 120 s later); a PID 1 without a handler for a signal
never receives it, which is why the shell must not stay in between. This process

- starts one train.py per process of the instance, with the torch.distributed variables a static torchrun sets;
- forwards SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 to each of them, which finish their iteration, checkpoint and
  exit; a process that has not exited `STOP_TIMEOUT_S` after the first stop signal is killed;
- kills the others when one fails, so that none waits forever in a collective for a peer that is gone;
- reaps orphaned processes, as the init process of the container must;
- with `--kernel-cache`, fills Warp's kernel cache from a store shared by every job before the first process
  starts, and writes back what the run compiled after its first iteration and at its end (launchers/kernel_cache.py);
- records its own events (container start, kernel cache transfers) in the run's ledger, without an attempt id of
  their own: they belong to the container, not to one train.py process;
- exits with what SageMaker should report: 0 and the model exported to SM_MODEL_DIR (uploaded as
  model.tar.gz) when the run completed; otherwise non-zero, with the reason in SM_OUTPUT_DIR/failure, which
  SageMaker shows as the job's FailureReason. A stopped run is never exported as if it were complete: its
  reason says from which iteration it resumes.

The run directory lives in the checkpoint folder, which SageMaker syncs to the job's checkpoint S3 URI and
restores into a restarted (Spot) job; a folder that already holds a run is resumed.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import rundir
from core.ledger import LEDGER

SOURCE_ROOT = Path(__file__).resolve().parents[1]
"""The unpacked source; train.py lies here."""

RUN_DIR_NAME = "run"
"""Name of the run directory inside the checkpoint folder."""

FAILURE_TAIL_LINES = 15
"""Lines of train.py output quoted in the failure file SageMaker shows as FailureReason."""

FAILURE_REASON_LIMIT = 1000
"""SageMaker truncates FailureReason to 1024 characters."""

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
"""Signals passed on to every training process; each asks the run to checkpoint and stop."""

STOP_TIMEOUT_S = 90.0
"""Seconds the training processes get, after the first stop signal, to checkpoint and exit before they are
killed. SageMaker sends SIGKILL 120 s after SIGTERM; the rest is left for this process to report the stop."""

OUTPUT_JOIN_S = 5.0
"""Seconds to wait, once every training process has exited, for output still held by processes they left."""

WARM_POOL_CACHE_ENV = "SAGEMAKER_MANAGED_WARMPOOL_CACHE_DIRECTORY"
"""Set by SageMaker in jobs of a warm pool: a folder kept for the next job the pool's instance runs."""

LOCAL_WARP_CACHE = Path(".cache") / "warp"
"""Warp's kernel cache outside a warm pool, relative to the container's home: local, never synced to S3."""

ENTRY_STARTED = time.time()
"""When this process started, near enough: the interpreter's own start-up is a few tens of milliseconds."""

ENTRY_WRITER = "sagemaker_entry"
"""The `writer` of the ledger events this process writes."""

COMPLETED_MESSAGE = "Training Container Execution Completed"
"""What sm_train.sh prints after a successful command; printed here because `exec` ends the script early."""

# Files and folders of a finished run shipped in the model artifact besides the latest
# checkpoint; missing ones are skipped.
MODEL_ARTIFACTS = (
    rundir.SUMMARY,
    rundir.MANIFEST,
    rundir.CONFIG,
    rundir.OVERRIDES,
    rundir.METRICS,
    LEDGER,
    rundir.EXPORTED,
)


def distributed_layout(environ: Mapping[str, str], processes_per_instance: int | None) -> dict[str, int | str]:
    """Node count, node rank, master address/port and processes per node from SageMaker's variables."""
    gpus = int(environ.get("SM_NUM_GPUS", "0") or 0)
    return {
        "nnodes": int(environ.get("SM_HOST_COUNT", "1") or 1),
        "node_rank": int(environ.get("SM_CURRENT_HOST_RANK", "0") or 0),
        "master_addr": environ.get("SM_MASTER_ADDR", "127.0.0.1"),
        "master_port": int(environ.get("SM_MASTER_PORT", "7777") or 7777),
        "nproc_per_node": processes_per_instance or max(gpus, 1),
    }


def warp_cache_dir(environ: Mapping[str, str]) -> Path:
    """Where Warp keeps compiled kernels in the container: never in the checkpoint folder.

    SageMaker uploads the checkpoint folder, during the run and in the short window after a stop signal, so
    hundreds of kernel files there would compete with the checkpoint. A warm pool keeps
    `$SAGEMAKER_MANAGED_WARMPOOL_CACHE_DIRECTORY` for the pool's next job, so the kernels go there when it is
    set; otherwise they stay in the container's home, built again by each new instance.
    """
    warm_pool = environ.get(WARM_POOL_CACHE_ENV)
    if warm_pool:
        return Path(warm_pool) / "warp"
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / LOCAL_WARP_CACHE


def effective_warp_cache_dir(overrides: Sequence[str], environ: Mapping[str, str]) -> Path:
    """The Warp cache folder the training processes use: the run's own `warp_cache_dir=` override (relative to the
    source, where train.py runs) or, without one, `warp_cache_dir(environ)`, which `training_command` passes."""
    chosen = None
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "warp_cache_dir":
            chosen = value.strip()
    if chosen is None:
        return warp_cache_dir(environ)
    if chosen in ("", "null", "None"):
        # train.py leaves Warp its own default, the user's cache folder.
        home = environ.get("HOME") or str(Path.home())
        return Path(environ.get("XDG_CACHE_HOME") or Path(home) / ".cache") / "warp"
    return (SOURCE_ROOT / Path(chosen).expanduser()).resolve()


def process_environments(layout: Mapping[str, int | str], environ: Mapping[str, str]) -> list[dict[str, str]]:
    """The torch.distributed variables of each process this instance starts, as torchrun sets them (and, in a
    warm pool, ``RLFORGE_CACHE`` in the pool's kept folder).

    A static world: global rank `node_rank * nproc_per_node + local_rank`. With one instance the rendezvous
    is this machine; with several it is SageMaker's first host.
    """
    nnodes, node_rank, local_size = int(layout["nnodes"]), int(layout["node_rank"]), int(layout["nproc_per_node"])
    world_size = nnodes * local_size
    shared = {
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(local_size),
        "GROUP_RANK": str(node_rank),
        "GROUP_WORLD_SIZE": str(nnodes),
        "ROLE_NAME": "default",
        "ROLE_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": str(layout["master_addr"]) if nnodes > 1 else "127.0.0.1",
        "MASTER_PORT": str(layout["master_port"]),
        # NCCL then aborts a collective whose peer failed instead of waiting in it.
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"),
    }
    warm_pool = environ.get(WARM_POOL_CACHE_ENV)
    if warm_pool and "RLFORGE_CACHE" not in environ:
        # Converted robots and generated terrains, like the kernels, wait in the warm pool for its next job.
        shared["RLFORGE_CACHE"] = str(Path(warm_pool) / "rlforge")
    if local_size > 1 and "OMP_NUM_THREADS" not in environ:
        # Several processes with a thread per core each would oversubscribe the instance's cores.
        shared["OMP_NUM_THREADS"] = "1"
    environments = []
    for local_rank in range(local_size):
        rank = node_rank * local_size + local_rank
        environments.append({**shared, "RANK": str(rank), "LOCAL_RANK": str(local_rank), "ROLE_RANK": str(rank)})
    return environments


def training_command(
    overrides: Sequence[str],
    checkpoint_dir: Path,
    layout: Mapping[str, int | str],
    python: str = sys.executable,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[str], list[dict[str, str]]]:
    """The train.py command line with `overrides`, and the variables to add for each process of this instance."""
    environ = os.environ if environ is None else environ
    run_dir = checkpoint_dir / RUN_DIR_NAME
    arguments = [*overrides, f"hydra.run.dir={run_dir}"]
    if not any(override.startswith("warp_cache_dir=") for override in overrides):
        arguments.append(f"warp_cache_dir={warp_cache_dir(environ)}")
    if (run_dir / rundir.MANIFEST).is_file():
        # A restarted Spot job, or a new job given the checkpoint URI of an earlier run.
        arguments.append(f"resume={run_dir}")
    return [python, str(SOURCE_ROOT / "train.py"), *arguments], process_environments(layout, environ)


# --------------------------------------------------------------------------------------
# The training processes: started, signalled, reaped.
# --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How this instance's training processes ended."""

    statuses: list[int | None]
    """Exit status of each process by local rank (a negative number: killed by that signal); None: not started."""
    tails: list[list[str]]
    """The last output lines of each process."""
    first_failure: int | None = None
    """Local rank of the first process that exited non-zero while no stop was asked; the others were killed."""
    stop_signal: int | None = None
    """The first stop signal this process received, or None."""
    killed_after_stop: bool = False
    """Whether processes still running `STOP_TIMEOUT_S` after the stop signal were killed."""

    @property
    def completed(self) -> bool:
        """Every process started and exited 0: train.py returns normally only from a finished run."""
        return bool(self.statuses) and all(status == 0 for status in self.statuses)


def _become_subreaper() -> None:
    """Have orphans of the training processes reparented to this process, which reaps them.

    PID 1 of a container is that already; elsewhere (tests, a shell left in between) this makes it so.
    """
    if os.getpid() == 1 or not sys.platform.startswith("linux"):
        return
    pr_set_child_subreaper = 36
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Supervisor:
    """Runs the training processes of one instance as the container's init process.

    Create it first thing: from then on a stop signal is kept, and forwarded to the processes once they are
    started (or keeps them from starting). Signals are handled in `run`'s loop, not in the handlers, which only
    wake the loop through a pipe (`signal.set_wakeup_fd`), so a process is signalled only while it is known to
    be alive and unreaped.
    """

    def __init__(self, stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.stop_timeout_s = stop_timeout_s
        self.stop_signal: int | None = None
        self._stop_deadline: float | None = None
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        self._previous_handlers = {}
        for signum in (*FORWARDED_SIGNALS, signal.SIGCHLD):
            # The handler itself does nothing: its presence makes the signal write its number to the pipe.
            self._previous_handlers[signum] = signal.signal(signum, _note_signal)
        _become_subreaper()
        self._processes: list[subprocess.Popen | None] = []
        self._alive: dict[int, int] = {}
        self._tails: list[collections.deque[str]] = []
        self._readers: list[threading.Thread] = []
        self._output_lock = threading.Lock()
        self._first_failure: int | None = None
        self._killed_after_stop = False

    def stop_requested(self) -> bool:
        """Whether a stop signal has arrived (read now; before the processes start, e.g. during the kernel fetch)."""
        self._handle_signals()
        return self.stop_signal is not None

    def say(self, text: str) -> None:
        """Print a line of this process's own between the training processes' lines, never inside one."""
        with self._output_lock:
            sys.stdout.buffer.write(f"sagemaker_entry: {text}\n".encode())
            sys.stdout.buffer.flush()

    def close(self) -> None:
        """Give the signals back their previous handlers and close the wake-up pipe."""
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        os.close(self._wake_read)
        os.close(self._wake_write)

    def run(self, command: Sequence[str], environments: Sequence[Mapping[str, str]], cwd: Path) -> Outcome:
        """Start `command` once per entry of `environments` (added to this environment) and wait for all.

        Nothing is started when a stop signal came first. Output is passed through, prefixed with the local
        rank when there are several processes.
        """
        count = len(environments)
        self._processes = [None] * count
        self._tails = [collections.deque(maxlen=FAILURE_TAIL_LINES) for _ in range(count)]
        self._handle_signals()
        try:
            for local_rank, extra in enumerate(environments):
                if self.stop_signal is not None or self._first_failure is not None:
                    break
                prefix = f"[{local_rank}] " if count > 1 else ""
                self._start(local_rank, command, {**os.environ, **extra}, cwd, prefix)
                self._handle_signals()
                self._reap()
        except BaseException:
            # A process that could not be started leaves the others without their peer.
            self._kill_alive()
            raise
        while self._alive:
            self._handle_signals()
            self._reap()
            if not self._alive:
                break
            timeout = None
            if self._stop_deadline is not None:
                timeout = self._stop_deadline - time.monotonic()
                if timeout <= 0:
                    self._kill_alive()
                    self._killed_after_stop = True
                    self._stop_deadline = None
                    continue
            select.select([self._wake_read], [], [], timeout)
        for process in self._processes:
            if process is not None:
                _kill_group(process.pid)
        joined_by = time.monotonic() + OUTPUT_JOIN_S
        for reader in self._readers:
            reader.join(max(0.0, joined_by - time.monotonic()))
        return Outcome(
            statuses=[None if process is None else process.returncode for process in self._processes],
            tails=[list(tail) for tail in self._tails],
            first_failure=self._first_failure,
            stop_signal=self.stop_signal,
            killed_after_stop=self._killed_after_stop,
        )

    def _start(self, local_rank: int, command: Sequence[str], environment: dict[str, str], cwd: Path, prefix: str):
        # Its own process group, so that a kill reaches what the process started too.
        process = subprocess.Popen(
            list(command),
            env=environment,
            cwd=str(cwd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._processes[local_rank] = process
        self._alive[process.pid] = local_rank
        reader = threading.Thread(
            target=self._pass_output, args=(process.stdout, self._tails[local_rank], prefix.encode()), daemon=True
        )
        reader.start()
        self._readers.append(reader)

    def _pass_output(self, stream, tail: collections.deque[str], prefix: bytes) -> None:
        """Copy a process's output to this one's, line by line, keeping its last lines."""
        out = sys.stdout.buffer
        for line in iter(stream.readline, b""):
            with self._output_lock:
                out.write(prefix + line)
                out.flush()
            tail.append(line.decode(errors="replace").rstrip("\n"))
        stream.close()

    def _handle_signals(self) -> None:
        """Read the signals noted since the last call; forward stop signals to every live process."""
        try:
            received = os.read(self._wake_read, 4096)
        except BlockingIOError:
            return
        for signum in received:
            if signum not in FORWARDED_SIGNALS:
                continue
            if self.stop_signal is None:
                self.stop_signal = signum
                self._stop_deadline = time.monotonic() + self.stop_timeout_s
                print(
                    f"sagemaker_entry: {signal.Signals(signum).name} received; the training processes checkpoint "
                    f"and stop (killed after {self.stop_timeout_s:.0f} s)",
                    flush=True,
                )
            for pid in self._alive:
                _send(pid, signum)

    def _reap(self) -> None:
        """Collect every exited child: a training process's status, or an orphan's, which is dropped."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            local_rank = self._alive.pop(pid, None)
            if local_rank is None:
                continue
            status = os.waitstatus_to_exitcode(wait_status)
            process = self._processes[local_rank]
            assert process is not None
            process.returncode = status
            if status != 0 and self.stop_signal is None and self._first_failure is None:
                self._first_failure = local_rank
                if self._alive:
                    print(
                        f"sagemaker_entry: process {local_rank} exited with status {status}; "
                        f"stopping the other {len(self._alive)}",
                        flush=True,
                    )
                self._kill_alive()

    def _kill_alive(self) -> None:
        for pid in self._alive:
            _kill_group(pid)


def _note_signal(_signum: int, _frame: Any) -> None:
    """Python-level handler of the supervised signals; the wake-up pipe carries them to the loop."""


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _kill_group(pid: int) -> None:
    """SIGKILL the process group a training process leads (itself and what it started)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------------------
# What SageMaker is told.
# --------------------------------------------------------------------------------------


def export_model(run_dir: Path, model_dir: Path) -> list[str]:
    """Copy the latest checkpoint (as policy.pt too) and the run's summary files into `model_dir`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    newest = rundir.latest_checkpoint(run_dir)
    if newest is not None:
        checkpoint = newest[1]
        shutil.copy2(checkpoint, model_dir / checkpoint.name)
        shutil.copy2(checkpoint, model_dir / "policy.pt")
        copied += [checkpoint.name, "policy.pt"]
    for name in MODEL_ARTIFACTS:
        source = run_dir / name
        if source.is_dir():
            shutil.copytree(source, model_dir / name, dirs_exist_ok=True)
            copied.append(name)
        elif source.is_file():
            shutil.copy2(source, model_dir / name)
            copied.append(name)
    return copied


def failed_reason(status: int, tail: Sequence[str], local_rank: int | None = None) -> str:
    """The reason of a failed run: the exit status and the last output, cut from its start to fit.

    SageMaker keeps the first 1024 characters, so the output keeps its end, where the error is.
    """
    who = "train.py" if local_rank is None else f"train.py (process {local_rank} of this instance)"
    header = f"{who} exited with status {status}; last output:\n"
    return header + "\n".join(tail)[-(FAILURE_REASON_LIMIT - len(header)) :]


def interrupted_reason(
    signal_name: str,
    end: Mapping[str, Any] | None,
    resume_from: int | None,
    killed_after_stop: bool,
    stop_timeout_s: float = STOP_TIMEOUT_S,
) -> str:
    """The reason of a run stopped by a signal: where it stopped and from which iteration it resumes.

    `end` is the ledger's `end` event of this attempt (None if it wrote none); `resume_from` the iteration of the
    newest checkpoint (None without one; -1 when this instance holds no run directory of its own).
    """
    cause = " (a SageMaker stop request or a Spot interruption)" if signal_name == "SIGTERM" else ""
    parts = [f"Run interrupted by {signal_name}{cause}; training did not complete."]
    how = end.get("how") if end is not None else None
    if how == "interrupted":
        parts.append(f"It stopped at iteration {end.get('iteration')} after saving a checkpoint.")
    elif how == "failed":
        parts.append(f"It ended with an error while stopping: {end.get('error')}.")
    elif killed_after_stop:
        parts.append(f"The training processes did not stop within {stop_timeout_s:.0f} s and were killed.")
    elif how is None:
        parts.append("It stopped before its training loop began.")
    if resume_from == -1:
        where = "the latest checkpoint the first instance saved"
    elif resume_from is not None:
        where = f"iteration {resume_from}"
    else:
        where = "the beginning (no checkpoint yet)"
    parts.append(
        f"The run will resume from {where} in the next job on this checkpoint folder "
        "(a restarted Spot job, or a new job given this checkpoint URI with resume=true)."
    )
    return " ".join(parts)[:FAILURE_REASON_LIMIT]


def write_failure(output_dir: Path, reason: str) -> None:
    """Write the reason SageMaker reports for a job that did not complete."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "failure").write_text(reason[:FAILURE_REASON_LIMIT])


def report(
    outcome: Outcome, run_dir: Path, attempt_events: Sequence[Mapping[str, Any]], first_node: bool = True
) -> tuple[int, str]:
    """Exit status and failure reason of a run that did not complete.

    `attempt_events` are the ledger events this attempt wrote; only the first instance has them and the run's
    checkpoints (rank 0 writes both).
    """
    if outcome.stop_signal is not None:
        ends = [event for event in attempt_events if event.get("event") == "end"]
        resume_from = -1
        if first_node:
            newest = rundir.latest_checkpoint(run_dir)
            resume_from = newest[0] if newest is not None else None
        reason = interrupted_reason(
            signal.Signals(outcome.stop_signal).name,
            ends[-1] if ends else None,
            resume_from,
            outcome.killed_after_stop,
        )
        return 128 + outcome.stop_signal, reason
    failing = outcome.first_failure
    if failing is None:
        failing = next((rank for rank, status in enumerate(outcome.statuses) if status not in (0, None)), None)
    if failing is None:
        return 1, "sagemaker_entry: no training process ran"
    status = outcome.statuses[failing] or 1
    local_rank = failing if len(outcome.statuses) > 1 else None
    return (status if status > 0 else 128 - status), failed_reason(status, outcome.tails[failing], local_rank)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The entry's command line: where the checkpoint folder is, processes per instance, train.py's overrides."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("/opt/ml/checkpoints"))
    parser.add_argument("--processes-per-instance", type=int, default=None)
    parser.add_argument(
        "--kernel-cache",
        default=None,
        help="store of compiled Warp kernels shared by jobs: s3://bucket/prefix, file:///folder or a folder; "
        "fetched before training, written back after the first iteration and at the end (absent: off)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for train.py (after --)")
    return parser.parse_args(argv)


def entry_ledger(run_dir: Path) -> Callable[..., None]:
    """The function that records this process's own events in the run's ledger.

    Only the first instance calls it: it holds the run directory that rank 0 writes, and every instance syncs the
    same checkpoint URI, so a ledger written elsewhere would replace the real one in S3."""
    from core import ledger

    run_dir.mkdir(parents=True, exist_ok=True)
    context = {
        "writer": ENTRY_WRITER,
        "launcher": "sagemaker",
        "host": os.uname().nodename,
        "job": os.environ.get("TRAINING_JOB_NAME"),
        **ledger.placement(),
    }
    return ledger.RunLedger(run_dir, context).record


def _record_nothing(_event: str, **_fields: Any) -> None:
    """The ledger of an instance that holds no run directory."""


def run(argv: Sequence[str] | None, supervisor: Supervisor, output_dir: Path) -> int:
    """Train as the job asks; return the container's exit status."""
    from core import ledger

    args = parse_arguments(argv)
    layout = distributed_layout(os.environ, args.processes_per_instance)
    run_dir = args.checkpoint_dir / RUN_DIR_NAME
    first_node = int(layout["node_rank"]) == 0
    command, environments = training_command(args.overrides, args.checkpoint_dir, layout)
    print(
        f"sagemaker_entry: pid {os.getpid()}, {len(environments)} process(es) on node {layout['node_rank']} "
        f"of {layout['nnodes']}: {shlex.join(command)}",
        flush=True,
    )
    if os.getpid() != 1:
        print("sagemaker_entry: not the container's PID 1; a stop signal reaches only what is sent here", flush=True)
    record = entry_ledger(run_dir) if first_node else _record_nothing
    record("container_start", at=ENTRY_STARTED, pid=os.getpid(), processes=len(environments))
    shared = None
    if args.kernel_cache:
        from launchers.kernel_cache import SharedKernels

        try:
            cache_root = effective_warp_cache_dir(args.overrides, os.environ)
            shared = SharedKernels(args.kernel_cache, cache_root, args.overrides, record, log=supervisor.say)
        except Exception as error:  # noqa: BLE001 - the cache is an optimisation; training goes on without it
            supervisor.say(f"WARNING: kernel cache {args.kernel_cache} not used: {error!r}")
            record("kernel_cache_fetch", store=args.kernel_cache, error=repr(error)[:500])
        else:
            shared.fetch(cancelled=supervisor.stop_requested)
    events_before = len(ledger.read(run_dir))
    if shared is not None and first_node:
        shared.upload_after_first_iteration(run_dir / ledger.LEDGER, events_before)
    outcome = supervisor.run(command, environments, SOURCE_ROOT)
    if shared is not None:
        # Only the first instance writes back: every instance compiled the same kernels.
        shared.finish(stopped=outcome.stop_signal is not None, write_back=first_node)

    if outcome.completed:
        if first_node:
            model_dir = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
            copied = export_model(run_dir, model_dir)
            print(f"sagemaker_entry: exported {copied} to {model_dir}", flush=True)
        print(COMPLETED_MESSAGE, flush=True)
        return 0
    status, reason = report(outcome, run_dir, ledger.read(run_dir)[events_before:], first_node)
    write_failure(output_dir, reason)
    print(f"sagemaker_entry: exit status {status}: {reason}", flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; whatever goes wrong leaves a failure reason, as sm_train.sh's error trap would have."""
    supervisor = Supervisor()
    output_dir = Path(os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output"))
    try:
        return run(argv, supervisor, output_dir)
    except SystemExit as stop:
        if stop.code not in (0, None):
            write_failure(output_dir, f"sagemaker_entry exited with status {stop.code} (see the job's log)")
        raise
    except Exception as error:
        traceback.print_exc()
        write_failure(output_dir, f"sagemaker_entry failed: {error!r}")
        return 1
    finally:
        supervisor.close()


if __name__ == "__main__":
    sys.exit(main())
