"""Compile a task's Warp kernels ahead, in worker processes, while its environment is being built.

With an empty kernel cache, Warp compiles each module of kernels the first time the simulator launches one of them,
one module after another, in the training process; for the H1 tasks that is most of a cold start. The modules a
task uses are known ahead (``task.kernels.modules``), so worker processes compile them into the same kernel cache
while the training process builds the scene; when the simulator first launches one of them, Warp finds it built. Separate processes, not threads: Warp generates a module's source under one lock, in Python, so
threads compile little faster than one after another. A module already in the cache is skipped at once, so a warm
start pays next to nothing.

A module the simulator needs before a worker has finished it is built by the training process too (both arrive at
the same files). A kernel declared with a Warp module of its own (``module="unique"``, named after its source hash)
is listed as ``python.module:kernel``. Modules with generic kernels, or whose kernels are made while the simulator
runs (closures specialised to the model), cannot be named ahead; they still compile when first used.
"""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Precompiled:
    """What the workers did."""

    modules: dict[str, str] = field(default_factory=dict)
    """Warp modules built ahead (compiled, or found in the cache), each with the hash of its build."""
    missing: list[str] = field(default_factory=list)
    """Listed names that are not an importable module holding Warp kernels (another Isaac Lab version)."""
    failed: list[str] = field(default_factory=list)
    """``name: error`` of modules that did not build ahead (they build when first used)."""
    workers: int = 0
    """Worker processes used."""
    seconds: float = 0.0
    """Wall-clock time from starting the workers to collecting their results (with none started: of looking the
    modules up in the cache)."""


MAX_WORKERS = 8
"""Most worker processes started by default (each imports Isaac Lab and its simulator, and holds them in memory)."""


def default_workers(modules: int) -> int:
    """One worker per module, leaving the training process a core; at most :data:`MAX_WORKERS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores - 1, MAX_WORKERS, modules))


def _launch_block_dim(module, device) -> int:
    """The block size Warp launches the module's kernels with: one thread per block on the CPU."""
    return 1 if device.is_cpu else module.options["block_dim"]


def _import_warp_module(name: str):
    """The Warp module named by ``name``, or None if that does not import or holds no kernels.

    ``name`` is a Python module (its kernels' Warp module), or ``python.module:kernel`` for a kernel declared with
    its own Warp module (``@wp.kernel(module="unique")``: the module is named after the kernel and its source hash,
    which no import can name)."""
    import warp as wp

    python_module, _, kernel_name = name.partition(":")
    try:
        imported = importlib.import_module(python_module)
    except ImportError:
        return None
    if kernel_name:
        kernel = getattr(imported, kernel_name, None)
        return kernel.module if isinstance(kernel, wp.Kernel) else None
    module = wp.get_module(python_module)
    return module if module.kernels else None


def build_one(
    name: str, device: str, cache_dir: str | None = None, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Import the Python module of ``name`` (see :func:`_import_warp_module`) and build its Warp module for ``device``
    into the kernel cache, without loading it; returns ``{"name", "hash"}``, or ``{"name", "missing": True}``, or ``{"name", "error"}``.

    ``options`` are the training process's ``warp.config`` settings that decide a build (``enable_backward``,
    ``cuda_output``): a module built with others is another build, which the simulator would not use."""
    import warp as wp

    for key, value in (options or {}).items():
        setattr(wp.config, key, value)
    wp.init()
    if cache_dir:  # the training process's folder, as it resolved it
        wp.config.kernel_cache_dir = cache_dir
    module = _import_warp_module(name)
    if module is None:
        return {"name": name, "missing": True}
    target = wp.get_device(device)
    block_dim = _launch_block_dim(module, target)
    try:
        if target.is_cpu:
            wp.force_load(device=target, modules=[module], block_dim=block_dim, max_workers=0)
        else:
            # Compiles for the device's architecture into the cache, without creating a CUDA context here.
            output = wp.config.cuda_output
            wp.compile_aot_module(module, device=target, use_ptx=None if output is None else output == "ptx")
    except Exception as error:  # noqa: BLE001 - any build failure is reported; the module builds again when used
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        return {"name": name, "error": message}
    return {"name": name, "hash": module.get_module_hash(block_dim).hex()}


def build_options() -> dict[str, Any]:
    """The ``warp.config`` settings of this process that decide how a module is built."""
    import warp as wp

    return {"enable_backward": bool(wp.config.enable_backward), "cuda_output": wp.config.cuda_output}


class Precompiler:
    """Worker processes building ``names`` for ``device``; :meth:`result` waits for them and says what they did.

    The named modules are imported here first (the simulator imports them anyway): those whose build is already in
    the kernel cache need no worker, so a warm start starts none."""

    def __init__(self, names: list[str], device: str, workers: int = 0) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import warp as wp

        self.started = time.perf_counter()
        wp.init()
        target = wp.get_device(device)
        self.cached: dict[str, str] = {}
        self.missing: list[str] = []
        todo: list[tuple[int, str]] = []
        for name in names:
            module = _import_warp_module(name)
            if module is None:
                self.missing.append(name)
                continue
            block_dim = _launch_block_dim(module, target)
            identifier = module.get_module_identifier(block_dim)
            # Built for this module's exact source and options (by hash); a cache filled on another GPU model
            # lacks this one's binary, and that module then compiles at first use, as without this step.
            if os.path.isfile(os.path.join(wp.config.kernel_cache_dir, identifier, f"{identifier}.meta")):
                self.cached[name] = module.get_module_hash(block_dim).hex()
            else:
                todo.append((len(module.kernels), name))
        # Largest first (by kernel count, a proxy for build time): with fewer workers than modules, the longest
        # builds start at once instead of after the short ones, which shortens the wait for the last one.
        self.order = [name for _, name in sorted(todo, key=lambda item: -item[0])]
        self.workers = min(workers or default_workers(len(self.order)), len(self.order))
        self.checked = time.perf_counter() - self.started
        self._pool = None
        self._futures = []
        if self.order:
            # Spawned, not forked: the training process already holds CUDA and threads.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            cache_dir = wp.config.kernel_cache_dir
            options = build_options()
            self._futures = [self._pool.submit(build_one, name, device, cache_dir, options) for name in self.order]

    def result(self) -> Precompiled:
        """Wait for every worker, then shut them down."""
        done = Precompiled(modules=dict(self.cached), missing=list(self.missing), workers=self.workers)
        try:
            for future in self._futures:
                try:
                    outcome = future.result()
                except Exception as error:  # noqa: BLE001 - a worker that died loses only its module
                    done.failed.append(f"worker: {error}")
                    continue
                if outcome.get("missing"):
                    done.missing.append(outcome["name"])
                elif "error" in outcome:
                    done.failed.append(f"{outcome['name']}: {outcome['error']}")
                else:
                    done.modules[outcome["name"]] = outcome["hash"]
        finally:
            self.close()
        # With no worker, the time is that of looking the modules up in the cache, not of the wait for result().
        done.seconds = time.perf_counter() - self.started if self._pool is not None else self.checked
        return done

    def close(self) -> None:
        """Stop the workers without waiting for modules not started yet."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def precompile(names: list[str], device: str, workers: int = 0) -> Precompiled:
    """Build ``names`` for ``device`` in worker processes and wait for them."""
    return Precompiler(names, device, workers).result()


def made_at_run_time(kernel) -> bool:
    """Whether ``kernel`` was made by a function call (a factory's closure), not defined when its module imports."""
    return "<locals>" in getattr(kernel.func, "__qualname__", "")


def named_ahead(module) -> bool:
    """Whether ``module`` compiles the same ahead as at first use: it has no generic kernel (one specialised to
    argument types when launched adds an overload) and no kernel made at run time (a factory's closure, added
    after import); either changes the module after import, and so its build."""
    return not any(kernel.is_generic or made_at_run_time(kernel) for kernel in module.kernels.values())


def listed_name(module) -> str | None:
    """The name a task's kernel list gives ``module``: its Python module's, or ``python.module:kernel`` for a kernel
    declared with a module of its own at import (``module="unique"``); None for a module no import names (the
    closure of a factory, made while the simulator runs)."""
    import sys

    if module.name in sys.modules:
        return module.name
    if len(module.kernels) != 1:
        return None
    kernel = next(iter(module.kernels.values()))
    python_module = sys.modules.get(getattr(kernel.func, "__module__", ""))
    name = getattr(kernel.func, "__name__", "")
    if python_module is None or made_at_run_time(kernel) or getattr(python_module, name, None) is not kernel:
        return None
    return f"{python_module.__name__}:{name}"


def loaded_modules(device: str) -> tuple[list[str], list[str]]:
    """The Warp modules loaded on ``device`` so far that an import names (:func:`listed_name`): (those that can be
    compiled ahead, by that name; those that cannot because they hold generic kernels or kernels made at run time)."""
    import warp as wp
    from warp._src.context import user_modules

    context = wp.get_device(device).context
    ahead: list[str] = []
    not_ahead: list[str] = []
    for module in user_modules.values():
        if not any(ctx == context for ctx, _ in module.execs):
            continue
        name = listed_name(module)
        if name is not None:
            (ahead if named_ahead(module) else not_ahead).append(name)
    return ahead, not_ahead


def rebuilt_since(done: Precompiled, device: str) -> list[str]:
    """Modules built ahead whose build the simulator did not use: they changed after import (a kernel added or
    specialised at run time) and were built again."""
    import warp as wp
    from warp._src.context import user_modules

    target = wp.get_device(device)
    stale = []
    for name, digest in done.modules.items():
        module = _import_warp_module(name)  # imported already: a look-up
        if module is None or user_modules.get(module.name) is not module:
            continue
        loaded = module.execs.get((target.context, _launch_block_dim(module, target)))
        if loaded is not None and loaded.module_hash.hex() != digest:
            stale.append(name)
    return stale
