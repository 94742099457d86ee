"""Where a benchmark ran: host, CPU, GPU, Python and load."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any


def machine_info(device: str) -> dict[str, Any]:
    """Where the benchmark ran."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
    }
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        info["gpu"] = out.stdout.strip()
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info
