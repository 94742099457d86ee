"""Helpers shared by the test tiers: paths, and running train.py or a script as a user would."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
REFERENCE_H1 = ROOT.parent / "shared" / "reference" / "unitree_h1"
# The Slurm tests, relative to ROOT (as pytest's node ids are): they share one cluster, so `make test` runs them all on
# one worker (tests/conftest.py).
SLURM_TESTS = "tests/slurm/"
# The toy task at its smallest: tiny networks, one epoch of one mini-batch; an iteration takes milliseconds.
SMALL_TOY = (
    "task.num_envs=16",
    "algo.num_steps_per_env=8",
    "algo.algorithm.num_learning_epochs=1",
    "algo.algorithm.num_mini_batches=1",
    "algo.actor.hidden_dims=[32,32]",
    "algo.critic.hidden_dims=[32,32]",
)
# An H1 run on the CPU at its smallest: 2 envs on a 2 x 2 terrain, 4 steps an iteration.
H1_CPU_RUN = (
    "device=cpu",
    "task.num_envs=2",
    "task.terrain.num_rows=2",
    "task.terrain.num_cols=2",
    "algo.num_steps_per_env=4",
)


def run_train(
    args: list[str], cwd: Path, timeout: float = 600, env: dict | None = None, script: str = "train.py"
) -> subprocess.CompletedProcess:
    """Run ``train.py`` (or a script) with this interpreter, as a user would, from ``cwd``.

    ``env`` adds variables; a value of None removes that variable.
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env = {key: value for key, value in full_env.items() if value is not None}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def start_train(args: list[str], cwd: Path) -> subprocess.Popen:
    """Start ``train.py`` with this interpreter, its output (stdout and stderr together) piped."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def train_until_then_signal(
    args: list[str], cwd: Path, runs: Path, iterations: int, timeout: float = 120, sig: int = signal.SIGTERM
) -> tuple[Path, int]:
    """Start ``train.py``, send ``sig`` once ``iterations`` iterations are logged under ``runs``, wait for it to exit.

    Returns the run directory and the process's exit code.
    """
    proc = start_train(args, cwd)
    deadline = time.time() + timeout
    metrics = None
    while time.time() < deadline and proc.poll() is None:
        found = list(runs.glob("*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= iterations:
            metrics = found[0]
            break
        time.sleep(0.1)
    if metrics is None:
        proc.kill()
        output = proc.communicate(timeout=60)[0]
        raise AssertionError(f"training did not reach {iterations} iterations:\n{output[-3000:]}")
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    return metrics.parent, proc.returncode


def only_run(root: Path) -> Path:
    """The one run directory under ``root`` (fails when there are none or several)."""
    runs = [p for p in root.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def wait_for(condition, what: str, timeout: float = 120, interval: float = 0.5):
    """The first true value of ``condition()``, asked every ``interval`` seconds; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def rsl_rl_logger(tmp_path, num_envs: int):
    """rsl-rl's real logger writing TensorBoard files under ``tmp_path``."""
    from rsl_rl.utils.logger import Logger

    cfg = {"num_steps_per_env": 24, "logger": "tensorboard", "algorithm": {}, "run_name": ""}
    logger = Logger(
        log_dir=str(tmp_path),
        cfg=cfg,
        env_cfg={},
        num_envs=num_envs,
        is_distributed=False,
        gpu_world_size=1,
        gpu_global_rank=0,
        device="cpu",
    )
    logger.git_status_repos = []
    logger.init_logging_writer()
    return logger


@contextlib.contextmanager
def srun_on_path(folder: Path):
    """submitit's Slurm executor refuses to be built where no ``srun`` is on ``PATH``. For tests that only read the
    batch script it writes (no job runs), this puts a stand-in ``srun`` that fails if called on ``PATH`` while inside,
    when the machine has none (the cluster tier installs the real one)."""
    if shutil.which("srun"):
        yield
        return
    bin_dir = folder / "stand-in-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    stand_in = bin_dir / "srun"
    stand_in.write_text("#!/bin/sh\necho 'srun: a stand-in for reading batch scripts; no job runs here' >&2\nexit 1\n")
    stand_in.chmod(0o755)
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{before}"
    try:
        yield
    finally:
        os.environ["PATH"] = before
