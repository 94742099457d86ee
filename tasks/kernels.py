"""Compile a task's Warp kernels in parallel before its environment is built.

With an empty kernel cache, Warp compiles each module of kernels the first time the simulator launches one of them,
one module after another on the main thread; for the H1 tasks that is most of a cold start. The modules a task
uses are known ahead (``task.kernels.modules``), so they can be compiled together on a pool of threads instead:
Warp generates their source one at a time and runs the compilers, which hold no Python lock, side by side. A module
already in the cache is only loaded, so a warm start pays next to nothing.

Modules whose kernels are made while the simulator runs (closures specialised to the model) cannot be named
ahead; they still compile when first used.
"""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass, field


@dataclass
class Precompiled:
    """What :func:`precompile` did."""

    modules: dict[str, str] = field(default_factory=dict)
    """Warp modules loaded (compiled, or read from the cache), each with the hash of its build."""
    missing: list[str] = field(default_factory=list)
    """Listed names that are not an importable module holding Warp kernels (another Isaac Lab version)."""
    failed: list[str] = field(default_factory=list)
    """``name: error`` of modules that did not build ahead (they build when first used)."""
    workers: int = 0
    """Threads used."""
    seconds: float = 0.0
    """Wall-clock time of the whole step."""


def default_workers() -> int:
    """One thread per CPU core this process may use, at most 16."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 16))


def warp_modules(names: list[str]) -> tuple[list, list[str]]:
    """Import each named Python module and return its Warp module (if it holds kernels) and the names that do not."""
    import warp as wp

    found, missing = [], []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
            continue
        module = wp.get_module(name)
        if module.kernels:
            found.append(module)
        else:
            missing.append(name)
    return found, missing


def precompile(names: list[str], device: str, workers: int = 0) -> Precompiled:
    """Compile (or load from the cache) the named Warp modules on ``device`` with ``workers`` threads
    (0: :func:`default_workers`).

    A module that fails to build here is left as if never tried: it builds again, and reports its own error, when
    the simulator first uses it."""
    from concurrent.futures import ThreadPoolExecutor

    import warp as wp

    started = time.perf_counter()
    workers = workers or default_workers()
    modules, missing = warp_modules(names)

    # Warp launches every kernel on the CPU with one thread per block; on a GPU, with the module's block size.
    block_dim = 1 if wp.get_device(device).is_cpu else None

    def load(module) -> tuple[str | None, str | None]:
        """(error, hash of the build) of one module."""
        try:
            wp.force_load(device=device, modules=[module], block_dim=block_dim, max_workers=0)
        except Exception as error:  # noqa: BLE001 - any build failure is reported, then retried at first use
            module.mark_modified()  # forget the recorded failure
            return f"{module.name}: {str(error).splitlines()[0] if str(error) else type(error).__name__}", None
        return None, module.get_module_hash(block_dim or module.options["block_dim"]).hex()

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="warp-precompile") as pool:
        results = list(pool.map(load, modules))
    return Precompiled(
        modules={m.name: digest for m, (error, digest) in zip(modules, results, strict=True) if error is None},
        missing=missing,
        failed=[error for error, _ in results if error],
        workers=workers,
        seconds=time.perf_counter() - started,
    )


def rebuilt_since(done: Precompiled, device: str) -> list[str]:
    """Modules :func:`precompile` built whose build the simulator did not use: they changed after import (a
    kernel added or specialised at run time) and were built again."""
    import warp as wp
    from warp._src.context import user_modules

    device_ = wp.get_device(device)
    stale = []
    for name, digest in done.modules.items():
        module = user_modules.get(name)
        block_dim = 1 if device_.is_cpu else module.options["block_dim"]
        loaded = module.execs.get((device_.context, block_dim))
        if loaded is not None and loaded.module_hash.hex() != digest:
            stale.append(name)
    return stale


def named_ahead(module) -> bool:
    """Whether ``module`` compiles the same ahead as at first use: it has no generic kernel (one specialised to
    argument types when launched adds an overload, which changes the module and so its build)."""
    return not any(kernel.is_generic for kernel in module.kernels.values())


def loaded_modules(device: str) -> tuple[list[str], list[str]]:
    """The Warp modules loaded on ``device`` so far that belong to an importable Python module: (those that can be
    compiled ahead, those that cannot because they hold generic kernels)."""
    import sys

    import warp as wp
    from warp._src.context import user_modules

    context = wp.get_device(device).context
    loaded = [
        module
        for name, module in user_modules.items()
        if name in sys.modules and any(ctx == context for ctx, _ in module.execs)
    ]
    return [m.name for m in loaded if named_ahead(m)], [m.name for m in loaded if not named_ahead(m)]
