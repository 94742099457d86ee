"""Compile a task's Warp kernels ahead, in worker processes, while its environment is being built.

With an empty kernel cache, Warp compiles each module of kernels the first time the simulator launches one of them,
one module after another, in the training process; for the H1 tasks that is most of a cold start. The modules a
task uses are known ahead (``task.kernels.modules``), so worker processes compile them into the same kernel cache
while the training process builds the scene; when the simulator first launches one of them, Warp finds it built. Separate processes, not threads: Warp generates a module's source under one lock, in Python, so
threads compile little faster than one after another. A module already in the cache is skipped at once, so a warm
start pays next to nothing.

The training process does not wait for the workers: it goes on to the first step, where it compiles the kernels
that cannot be named ahead (see below) while the workers build the named ones. When it loads a module that a
worker has begun, it waits for that worker instead of building the module a second time; one that no worker has
begun it builds at once. A kernel declared with a Warp module of its own (``module="unique"``, named after its
source hash) is listed as ``python.module:kernel``. Modules with generic kernels, or whose kernels are made while the simulator
runs (closures specialised to the model), cannot be named ahead; they still compile when first used.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import os
import threading
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
    left: list[str] = field(default_factory=list)
    """Modules no worker began: the simulator needed them first and built them itself, or the workers were stopped
    before them (they build when first used)."""
    workers: int = 0
    """Worker processes used."""
    seconds: float = 0.0
    """Wall-clock time from starting the workers to the last one's result (with none started: of looking the
    modules up in the cache)."""
    waited: float = 0.0
    """Seconds the training process waited, at a module's first use, for a worker still building it."""


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


_started = None
"""In a worker process: the shared flags through which it tells the training process which module it has begun."""


def _remember_flags(flags) -> None:
    global _started
    _started = flags


def build_one(
    name: str,
    device: str,
    cache_dir: str | None = None,
    options: dict[str, Any] | None = None,
    index: int | None = None,
) -> dict[str, Any]:
    """Import the Python module of ``name`` (see :func:`_import_warp_module`) and build its Warp module for ``device``
    into the kernel cache, without loading it; returns ``{"name", "hash"}``, or ``{"name", "missing": True}``, or ``{"name", "error"}``.

    ``options`` are the training process's ``warp.config`` settings that decide a build (``enable_backward``,
    ``cuda_output``): a module built with others is another build, which the simulator would not use. In a worker,
    ``index`` is the module's place among the shared start flags, set as the build begins."""
    import warp as wp

    if index is not None and _started is not None:
        _started[index] = 1

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


class _LoadAfterWorker:
    """While workers build modules, Warp's ``Module.load`` in this process first waits for the worker that has begun
    the module it loads (then finds the build in the cache) instead of building it too; a module no worker has
    begun is built here at once (and taken from the workers' queue where it still can be). Removed once no module is
    pending, so launches afterwards pay nothing."""

    def __init__(self) -> None:
        self.pending: dict[int, tuple[Any, Any, int]] = {}  # id(warp Module) -> (its worker's future, flags, index)
        self.waited = 0.0
        self._original = None

    def add(self, entries) -> None:
        """``entries``: (warp module, its worker's future, the pool's start flags, the module's index in them)."""
        from warp._src.context import Module

        self.pending.update((id(module), (future, flags, index)) for module, future, flags, index in entries)
        if self.pending and self._original is None:
            self._original = original = Module.load

            def load(module, device, block_dim=None, *args, **kwargs):
                entry = self.pending.pop(id(module), None)
                if entry is not None:
                    future, flags, index = entry
                    # Begun by a worker: wait for it. Not begun: build it here now rather than wait for the builds
                    # ahead of it (taken from the queue; one already handed to a worker is built there as well).
                    if not future.done():
                        if flags[index]:
                            started = time.perf_counter()
                            concurrent.futures.wait([future])
                            self.waited += time.perf_counter() - started
                        else:
                            future.cancel()
                    if not self.pending:
                        self.remove()
                return original(module, device, block_dim, *args, **kwargs)

            Module.load = load

    def drop(self, futures) -> None:
        """Forget the modules of ``futures`` (their workers are done or stopped)."""
        done = {id(future) for future in futures}
        for key, (future, _, _) in list(self.pending.items()):
            if id(future) in done:
                self.pending.pop(key, None)
        if not self.pending:
            self.remove()

    def remove(self) -> None:
        if self._original is not None:
            from warp._src.context import Module

            Module.load, self._original = self._original, None


_LOADS = _LoadAfterWorker()


class Precompiler:
    """Worker processes building ``names`` for ``device``; :meth:`result` waits for them and says what they did.

    The named modules are imported here first (the simulator imports them anyway): those whose build is already in
    the kernel cache need no worker, so a warm start starts none. With ``share``, until the workers are done, a
    module of theirs that this process loads waits for the worker that has begun it, or is taken back and built here
    (:class:`_LoadAfterWorker`). When the last one is done, the pool shuts down by itself and its processes exit."""

    def __init__(self, names: list[str], device: str, workers: int = 0, share: bool = True) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import warp as wp

        self.started = time.perf_counter()
        self._waited_before = _LOADS.waited
        wp.init()
        target = wp.get_device(device)
        self.cached: dict[str, str] = {}
        self.missing: list[str] = []
        todo: list[tuple[int, str]] = []
        imported: dict[str, Any] = {}
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
                imported[name] = module
        # Largest first (by kernel count, a proxy for build time): with fewer workers than modules, the longest
        # builds start at once instead of after the short ones, which shortens the wait for the last one.
        self.order = [name for _, name in sorted(todo, key=lambda item: -item[0])]
        self.workers = min(workers or default_workers(len(self.order)), len(self.order))
        self.checked = time.perf_counter() - self.started
        self._pool = None
        self._futures = []
        self._finished: float | None = None
        self._closing = threading.Lock()
        self._closed = False
        self._result: Precompiled | None = None
        if self.order:
            # Spawned, not forked: the training process already holds CUDA and threads.
            context = multiprocessing.get_context("spawn")
            flags = self._begun = context.RawArray("b", len(self.order))
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_remember_flags, initargs=(flags,)
            )
            cache_dir = wp.config.kernel_cache_dir
            options = build_options()
            self._futures = [
                self._pool.submit(build_one, name, device, cache_dir, options, index)
                for index, name in enumerate(self.order)
            ]
            if share:  # else this process builds what it needs regardless of the workers
                _LOADS.add(
                    (imported[name], future, flags, index)
                    for index, (name, future) in enumerate(zip(self.order, self._futures, strict=True))
                )
            threading.Thread(target=self._shut_down_when_done, name="rlforge-kernel-workers", daemon=True).start()

    def _shut_down_when_done(self) -> None:
        concurrent.futures.wait(self._futures)
        self._finished = time.perf_counter()
        self.close()

    def begun(self, name: str) -> bool:
        """Whether a worker has begun building ``name``."""
        return bool(self._begun[self.order.index(name)])

    def ready(self) -> int:
        """How many of the modules given to workers are done (built, or failed)."""
        return sum(future.done() for future in self._futures)

    def result(self) -> Precompiled:
        """Wait for every worker, then shut them down (the same answer on every call)."""
        if self._result is not None:
            return self._result
        done = Precompiled(modules=dict(self.cached), missing=list(self.missing), workers=self.workers)
        try:
            for name, future in zip(self.order, self._futures, strict=True):
                if future.cancelled():
                    done.left.append(name)
                    continue
                try:
                    outcome = future.result()
                except Exception as error:  # noqa: BLE001 - a worker that died, or one stopped by close()
                    done.failed.append(f"worker: {error or type(error).__name__}")
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
        finished = self._finished or time.perf_counter()
        done.seconds = finished - self.started if self._pool is not None else self.checked
        done.waited = _LOADS.waited - self._waited_before
        self._result = done
        return done

    def close(self) -> None:
        """Stop the workers without waiting for modules not started yet; this process builds any it still needs."""
        with self._closing:  # from this process's thread and from the one that shuts the pool down when it is done
            if self._pool is not None and not self._closed:
                self._pool.shutdown(wait=True, cancel_futures=True)
                _LOADS.drop(self._futures)
                self._closed = True


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
