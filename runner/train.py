"""`run(cfg)`: one training run from a composed config, the single entry point of every launcher."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core import ledger, lifecycle
from core.console import REDRAW, Progress
from core.distributed import dist_info, resolve_device
from core.rundir import (
    CHECKPOINT_DIR,
    CONFIG,
    CONSOLE_LOG,
    MANIFEST,
    METRICS,
    METRICS_REDONE,
    OVERRIDES,
    SOURCE_SNAPSHOT_ENV,
    STARTUP_LOG,
    SUMMARY,
    build_manifest,
    latest_checkpoint,
    source_state,
    write_json_atomic,
    write_text_atomic,
)


def _process_started() -> float:
    """When this process started (Unix seconds): from /proc where it exists, so the interpreter's own start-up
    and imports count; otherwise when this module was imported."""
    try:
        now = time.time()
        started_after_boot = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / os.sysconf(
            "SC_CLK_TCK"
        )
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return now - (uptime - started_after_boot)
    except (OSError, ValueError, IndexError):
        return time.time()


_PROCESS_START = _process_started()
_runs_in_this_process = 0


def _run_dir(cfg: DictConfig) -> Path:
    """Hydra's output folder for this job; a resumed single run already points at the old run."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir).resolve()
    from core.rundir import resolve_run_dir  # called without Hydra's app (tests, scripts)

    return Path(resolve_run_dir(cfg.output_root, cfg.experiment, cfg.resume)).resolve()


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _objective(metrics: list[dict[str, Any]], key: str, window: int = 5) -> float:
    values = [m[key] for m in metrics[-window:] if key in m]
    return float(sum(values) / len(values)) if values else float("nan")


def _check_resume(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """On a resumed run, compare the composed config with the run's ``config.yaml`` (every rank, before the
    simulator starts); raises :class:`core.resume.ConfigChanged` on a change of what is learned, unless accepted.
    Returns the differences, or None when the run has no recorded config."""
    from core import resume

    recorded_file = run_dir / CONFIG
    if not recorded_file.is_file():
        return None
    recorded = OmegaConf.to_container(OmegaConf.load(recorded_file), resolve=True)
    now = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return resume.check_resume(recorded, now, accept=bool(cfg.accept_config_change), run_dir=str(run_dir))


def _take_lock(run_dir: Path):
    """Rank 0: hold the run directory's lock for the whole attempt (refused if another process trains there)."""
    from core import checkpoint, runlock

    lock = runlock.acquire(run_dir)
    for warning in lock.warnings:
        print(f"[rlforge] {warning}")
    if lock.previous:
        print(f"[rlforge] taking over {run_dir}: its last holder, {runlock.describe(lock.previous)}, is gone")
    # No other process writes here now: a temporary file is what a writer killed mid-checkpoint left.
    for name in checkpoint.remove_partial_writes(run_dir / CHECKPOINT_DIR):
        print(f"[rlforge] removed {name}, a checkpoint whose write was cut off; the earlier checkpoints are intact")
    return lock


def _fence_metrics(run_dir: Path, iteration: int) -> int:
    """Move the metrics lines an earlier attempt wrote past ``iteration`` (where this attempt restarts) from
    ``metrics.jsonl`` to ``metrics.redone.jsonl``, so each iteration is in the former once; returns how many."""
    path = run_dir / METRICS
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept, moved = [], []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn by a hard kill
        (kept if int(entry.get("iteration", 0)) <= iteration else moved).append(line + "\n")
    if moved:
        with open(run_dir / METRICS_REDONE, "a") as redone:
            redone.write("".join(moved))
            redone.flush()
            os.fsync(redone.fileno())
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))
    return len(moved)


def _open_run(
    cfg: DictConfig,
    run_dir: Path,
    device: str,
    info,
    started: float,
    resuming: bool,
    lock,
    changes: dict[str, Any] | None,
) -> dict[str, Any]:
    """Rank 0: start the ledger for this attempt; on a new run, write its config, overrides and manifest.

    Returns the run's manifest (read back on a resumed run)."""
    import torch

    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    ledger.open_ledger(
        run_dir,
        attempt=uuid.uuid4().hex[:8],
        launcher=cfg.launcher.name,
        host=os.uname().nodename,
        world_size=info.world_size,
        gpus_per_node=gpus,
        **ledger.placement(),
    )
    # Each attempt may run other code (a later submission of the same run): the ledger says which, per attempt.
    snapshot = source_state()["source_snapshot"] if os.environ.get(SOURCE_SNAPSHOT_ENV) else None
    ledger.record("process_start", at=started, pid=os.getpid(), submitted_at=ledger.submitted_at(), source=snapshot)
    ledger.record("config_composed", resuming=resuming)
    if lock.previous:
        ledger.record("lock_taken_over", previous=lock.previous)
    if changes and (changes["learned"] or changes["operational"]):
        ledger.record(
            "config_changed",
            accepted=bool(changes["learned"]),
            learned=changes["learned"],
            operational=changes["operational"],
        )
        # The newest attempt's config is the run's config from now on; the ledger keeps what it was before.
        (run_dir / CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    relaunch = os.environ.get(ledger.RELAUNCH_ENV)
    if relaunch:
        try:
            ledger.record("relaunch", **json.loads(relaunch))
        except (json.JSONDecodeError, TypeError):
            ledger.record("relaunch", raw=relaunch)
    # A stop request (a signal, a launcher's preemption notice) is written when it arrives, not when the
    # iteration it interrupts has finished, so the ledger shows how long the stop took.
    lifecycle.set_stop_hook(lambda reason: ledger.record("signal", reason=reason))
    if resuming:
        return json.loads((run_dir / MANIFEST).read_text())
    (run_dir / CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (run_dir / OVERRIDES).write_text(OmegaConf.to_yaml(OmegaConf.create(_overrides())))
    manifest = build_manifest(seed=int(cfg.seed), device=device, launcher=cfg.launcher.name, overrides=_overrides())
    manifest["world_size"] = info.world_size
    manifest["wandb_run_id"] = uuid.uuid4().hex[:12]
    write_json_atomic(run_dir / MANIFEST, manifest)
    return manifest


def _restore_latest(trainer, run_dir: Path, device: str, is_main: bool, resuming: bool) -> int:
    """Load the newest readable checkpoint into ``trainer``; return the iterations it had completed (0 if none).

    On a resumed run, what an earlier attempt logged past that iteration is set aside (metrics lines) or hidden
    (curve points), so each iteration counts once."""
    from core import checkpoint

    loaded = checkpoint.load_latest(run_dir / CHECKPOINT_DIR, map_location=device)
    if loaded is None:
        if not resuming:
            return 0
        iteration, name = 0, None
    else:
        state, path, warnings = loaded
        for warning in warnings:
            print(f"[rlforge] {warning}")
            if is_main:
                ledger.record("checkpoint_unreadable", message=warning)
        trainer.restore(state)
        iteration, name = trainer.iterations_done, path.name
        print(f"[rlforge] resuming {run_dir} from {name} at iteration {iteration}")
    trainer.fence_from = iteration
    if is_main:
        moved = _fence_metrics(run_dir, iteration)
        if moved:
            print(f"[rlforge] {moved} iteration(s) past {iteration} are done again (moved to {METRICS_REDONE})")
        ledger.record("resume", iteration=iteration, checkpoint=name, metrics_redone=moved)
    return iteration


def _finish(cfg: DictConfig, trainer, run_dir: Path, device: str) -> float:
    """Rank 0: write the summary and the ledger's end, print the one-screen summary; return the objective."""
    metrics = ledger.read_jsonl(run_dir / METRICS)
    objective = _objective(metrics, cfg.objective)
    newest = latest_checkpoint(run_dir)
    summary = {
        "run_dir": str(run_dir),
        "iterations": trainer.iterations_done,
        "checkpoint": str(newest[1]) if newest else None,
        "tensorboard": str(run_dir),
        "objective": {"key": cfg.objective, "value": objective},
        "last": trainer.last_stats,
        "device": device,
    }
    write_json_atomic(run_dir / SUMMARY, summary)
    ledger.record("end", how="completed", iteration=trainer.iterations_done)
    if cfg.summary:
        print_summary(summary, metrics)
    return objective


def run(cfg: DictConfig) -> float:
    """Train as ``cfg`` says, in its run directory, continuing it when asked; returns ``cfg.objective``.

    Every rank of a distributed run calls this; rank 0 alone writes the run directory's files."""
    if not cfg.algo.speed.freeze_gc:
        return _run(cfg)
    # Start-up creates millions of long-lived objects (simulator, scene, configs); the collector's full scans of
    # them find next to nothing and cost seconds. The trainer freezes them and turns it back on when training
    # begins; this puts it back on however the run ends.
    gc.disable()
    try:
        return _run(cfg)
    finally:
        gc.enable()


def _run(cfg: DictConfig) -> float:
    import torch

    from tasks.registry import list_kinds

    global _runs_in_this_process
    if cfg.task.kind not in list_kinds():
        raise ValueError(
            f"task.kind={cfg.task.kind} is not a registered task kind; registered: {', '.join(list_kinds())}"
        )
    # The first run of a process started with it; a later one (the next point of a local sweep) starts now.
    started = _PROCESS_START if _runs_in_this_process == 0 else time.time()
    _runs_in_this_process += 1
    info = dist_info()
    device = resolve_device(cfg.device, info)
    seed = int(cfg.seed) + info.rank
    run_dir = _run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    resuming = (run_dir / MANIFEST).is_file()
    newest = latest_checkpoint(run_dir)
    # Until the first iteration starts, a stop request ends the attempt at once: the newest checkpoint holds
    # everything the run has learned.
    lifecycle.begin_startup(newest[0] if newest else 0)
    lifecycle.install_signal_handlers()
    lock = None
    try:
        changes = _check_resume(cfg, run_dir) if resuming else None
        lock = _take_lock(run_dir) if info.is_main else None
        with _console_copy(run_dir if lock is not None else None):
            manifest = _open_run(cfg, run_dir, device, info, started, resuming, lock, changes) if info.is_main else {}
            # A stop requested before this run began (a launcher's handler held the signal) ends it here.
            lifecycle.stop_now_if_starting()
            return _train(cfg, run_dir, device, info, seed, manifest, resuming, torch)
    except BaseException as error:
        stop = lifecycle.as_startup_stop(error)
        if stop is None:
            raise
        lifecycle.leave_startup()  # a repeated stop signal now raises nothing: the records below are written whole
        if info.is_main and lock is not None:
            if not lifecycle.stop_reported():
                # The request came before the ledger's stop hook was set (a signal while the run directory was
                # being opened, or one a launcher held): the ledger still says a stop was asked, and why.
                ledger.record("signal", reason=stop.reason)
            surfaced_as = {} if stop is error else {"surfaced_as": repr(error)[:500]}
            ledger.record("end", how="interrupted", reason=stop.reason, iteration=stop.iteration, **surfaced_as)
        if stop is error:
            raise
        raise stop from error
    finally:
        # The next run of this process (a local sweep's next point) starts with no stop request of this one's.
        lifecycle.clear()
        lifecycle.set_stop_hook(None)
        if lock is not None:
            lock.release()


def _train(cfg: DictConfig, run_dir: Path, device: str, info, seed: int, manifest, resuming: bool, torch) -> float:
    """Build the environment and the trainer, restore the run's state, train, and write the run's end."""
    from algos.ppo import build_trainer
    from tasks import build_env

    # A stop that arrived during these imports may have been caught by a library's own `except Exception`.
    lifecycle.stop_now_if_starting()
    if cfg.warp_cache_dir:
        use_warp_cache(str(cfg.warp_cache_dir))
    if cfg.cache_dir:
        use_cache_dir(str(cfg.cache_dir))
    torch.manual_seed(seed)
    if info.is_main:
        print(f"[rlforge] building {cfg.task.name}: {cfg.task.num_envs} envs on {device}", flush=True)
    started = time.perf_counter()
    with _startup_output(cfg, run_dir, info.is_main):
        handle = build_env(cfg.task, device, seed, clip_actions=cfg.algo.clip_actions)
    recorder = trainer = None
    try:
        if info.is_main:
            ledger.record("simulator_ready", num_envs=int(cfg.task.num_envs), device=device)
        first_new_iteration = None

        def on_iteration(done: int, stats: dict[str, Any]) -> None:
            nonlocal first_new_iteration
            if first_new_iteration is None:
                first_new_iteration = done
                ledger.record("first_iteration", iteration=done)

        def on_checkpoint(done: int, path: Path) -> None:
            ledger.record("checkpoint", iteration=done, path=str(path.relative_to(run_dir)))

        def on_checkpoint_failed(done: int, message: str) -> None:
            ledger.record("checkpoint_failed", iteration=done, error=message)

        with _startup_output(cfg, run_dir, info.is_main):
            trainer = build_trainer(
                handle.env,
                cfg,
                device=device,
                dist=info,
                run_dir=run_dir,
                seed=seed,
                log_dir=str(run_dir) if info.is_main else None,
                wandb_run_id=manifest.get("wandb_run_id", "none"),
                on_iteration=on_iteration if info.is_main else None,
                on_checkpoint=on_checkpoint if info.is_main else None,
                on_checkpoint_failed=on_checkpoint_failed if info.is_main else None,
            )
        start_iteration = _restore_latest(trainer, run_dir, device, info.is_main, resuming)
        if info.is_main:
            from video.recorder import recorder_for

            trainer.recorder = recorder = recorder_for(cfg, handle.env, run_dir)  # None unless logger.video_interval
        if info.is_main:
            where = f"; start-up output in {run_dir / STARTUP_LOG}" if cfg.console == "compact" else ""
            print(f"[rlforge] ready to train in {time.perf_counter() - started:.1f} s{where}", flush=True)
        if info.is_main and cfg.console == "compact":
            trainer.console = Progress(
                total=int(cfg.algo.max_iterations), start=start_iteration, interval_s=float(cfg.console_interval_s)
            )
            trainer.block_every = int(cfg.console_block_every)
        lifecycle.end_startup()
        try:
            if start_iteration < int(cfg.algo.max_iterations):
                trainer.train(until=int(cfg.algo.max_iterations))
        except lifecycle.Interrupted:
            raise
        except BaseException as error:
            if info.is_main:
                ledger.record("end", how="failed", error=repr(error)[:500], iteration=trainer.iterations_done)
            raise
    finally:
        if recorder is not None:
            recorder.close()
        handle.close()
        # Leave the process group before the process exits, or NCCL/gloo may abort a rank on its way out; NCCL
        # waits for every CUDA graph holding its collectives to be destroyed first, so the graphs go before.
        if info.is_distributed and torch.distributed.is_initialized():
            if trainer is not None:
                trainer.release_graphs()
            torch.distributed.destroy_process_group()
    return _finish(cfg, trainer, run_dir, device) if info.is_main else float("nan")


class _Tee(io.TextIOBase):
    """The console, and a copy of it in a file: a progress line redrawn on a terminal becomes a line per update."""

    def __init__(self, console, copy) -> None:
        self.console, self.copy = console, copy
        self._line_start = True

    def write(self, text: str) -> int:
        self.console.write(text)
        for index, piece in enumerate(text.split(REDRAW)):
            if index and not self._line_start:  # a redraw ends the line being drawn; in the copy, a new line
                self.copy.write("\n")
                self._line_start = True
            if piece:
                self.copy.write(piece)
                self._line_start = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.console.flush()
        self.copy.flush()

    def isatty(self) -> bool:
        return self.console.isatty()

    def fileno(self) -> int:
        return self.console.fileno()


@contextlib.contextmanager
def _console_copy(run_dir: Path | None) -> Iterator[None]:
    """What the run prints also goes to ``run_dir/console.log`` (appended by every attempt): the run's log file."""
    if run_dir is None:
        yield
        return
    with open(run_dir / CONSOLE_LOG, "a", buffering=1) as copy:
        console = sys.stdout
        sys.stdout = _Tee(console, copy)
        try:
            yield
        finally:
            sys.stdout = console


@contextlib.contextmanager
def _startup_output(cfg: DictConfig, run_dir: Path, is_main: bool) -> Iterator[None]:
    """With ``console=compact``, what the simulator and the learner print while they are built (Isaac Lab's
    manager tables, Warp's module loads, rsl-rl's network summary, the kernel builders' banners) goes to the run's
    startup log, not the console: Python's ``sys.stdout`` and the process's file descriptor 1, which child
    processes and native code write to."""
    if cfg.console != "compact":
        yield
        return
    log = run_dir / STARTUP_LOG
    sys.stdout.flush()
    saved_fd = os.dup(1)
    with open(log if is_main else os.devnull, "a") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            with contextlib.redirect_stdout(sink):
                yield
        finally:
            sink.flush()
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


def use_warp_cache(path: str) -> None:
    """Make Warp keep its compiled kernels under ``path`` (must run before the environment imports Warp)."""
    import sys

    folder = Path(path).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["WARP_CACHE_PATH"] = str(folder)
    warp = sys.modules.get("warp")
    if warp is not None:
        # Warp reads the variable once, when it initializes; a process that already imported it (a local
        # sweep running its second point) is pointed at the folder directly, in the versioned layout Warp uses.
        warp.config.kernel_cache_dir = str(folder / warp.config.version)
        os.makedirs(warp.config.kernel_cache_dir, exist_ok=True)


def use_cache_dir(path: str) -> None:
    """Keep this project's caches (robots, terrains, their mesh analysis) under ``path``: read at each use, so it
    applies from the next environment built in this process."""
    folder = Path(path).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["RLFORGE_CACHE"] = str(folder)


def print_summary(summary: dict[str, Any], metrics: list[dict[str, Any]]) -> None:
    """One screen: where the run's outputs are and how it ended."""
    last = summary.get("last") or {}
    steps = sum(m.get("env_steps", 0) for m in metrics)
    seconds = sum(m.get("collect_s", 0) + m.get("learn_s", 0) for m in metrics)
    lines = [
        "",
        "=" * 72,
        f" run finished: {summary['iterations']} iterations on {summary['device']}",
        "=" * 72,
        f" run directory   {summary['run_dir']}",
        f" checkpoint      {summary['checkpoint']}",
        f" tensorboard     tensorboard --logdir {summary['tensorboard']}",
        f" config          {summary['run_dir']}/config.yaml",
        f" mean reward     {last.get('Train/mean_reward', float('nan')):.3f}"
        f"   mean episode length {last.get('Train/mean_episode_length', float('nan')):.1f}",
        f" objective       {summary['objective']['key']} = {summary['objective']['value']:.4f}",
        f" throughput      {steps / seconds if seconds else 0:.0f} env-steps/s over {len(metrics)} logged iterations",
        f" resume with     python train.py resume={summary['run_dir']}",
        "=" * 72,
    ]
    print("\n".join(lines))
