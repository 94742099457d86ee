"""Run one process to its end: its output lines stamped on arrival, its peak host memory and, on an NVIDIA GPU,
its peak device memory sampled while it runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

GPU_SAMPLE_INTERVAL_S = 0.2


def gpu_used_mib() -> float | None:
    """Memory in use on GPU 0 (MiB), or None where there is no NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return float(out.stdout.strip().splitlines()[0])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


def run_process(
    command: list[str], *, env: dict[str, str], cwd: Path, log_path: Path, timeout_s: float
) -> dict[str, Any]:
    """Run ``command`` to its end (killed after ``timeout_s``), its output also written to ``log_path``.

    Returns ``returncode``, ``launched`` (``time.monotonic()`` at launch), ``wall_s``, ``lines`` (``(monotonic
    seconds, text)`` per output line), ``peak_host_mib`` and ``peak_gpu_mib`` (above what GPU 0 used before the
    launch; None without a GPU)."""
    baseline_gpu = gpu_used_mib()
    peak_gpu = [baseline_gpu]
    lines: list[tuple[float, str]] = []
    done = threading.Event()
    launched = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    )

    def read() -> None:
        with open(log_path, "w") as log:
            for line in process.stdout:
                lines.append((time.monotonic(), line.rstrip("\n")))
                log.write(line)

    def sample_gpu() -> None:
        while not done.wait(GPU_SAMPLE_INTERVAL_S):
            used = gpu_used_mib()
            if used is not None and (peak_gpu[0] is None or used > peak_gpu[0]):
                peak_gpu[0] = used

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sampler = threading.Thread(target=sample_gpu, daemon=True) if baseline_gpu is not None else None
    if sampler:
        sampler.start()
    killer = threading.Timer(timeout_s, process.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        killer.cancel()
        done.set()
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=30)
    ended = time.monotonic()
    return {
        "returncode": process.returncode,
        "launched": launched,
        "wall_s": ended - launched,
        "lines": lines,
        # ru_maxrss is in KiB on Linux.
        "peak_host_mib": usage.ru_maxrss / 1024.0,
        "peak_gpu_mib": None if baseline_gpu is None else peak_gpu[0] - baseline_gpu,
    }
