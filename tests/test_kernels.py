"""Warp kernels compiled ahead (tasks/kernels.py), with Warp's real compiler on the CPU and a private kernel cache."""

from __future__ import annotations

import importlib
import sys
import textwrap
import time
from pathlib import Path

import pytest

wp = pytest.importorskip("warp")

from tasks import kernels  # noqa: E402

SOURCE = '''
import warp as wp


@wp.kernel
def double(values: wp.array(dtype=float)):
    i = wp.tid()
    values[i] = 2.0 * values[i]


@wp.kernel
def scale(values: wp.array(dtype=float), factor: float):
    i = wp.tid()
    values[i] = factor * values[i]


def add_kernel():
    """Adds a kernel to this module after import, as a simulator's factory does."""

    @wp.kernel
    def shift(values: wp.array(dtype=float)):
        i = wp.tid()
        values[i] = values[i] + 1.0

    return shift
'''

GENERIC = """
import warp as wp
from typing import Any


@wp.kernel
def fill(values: wp.array(dtype=Any), value: Any):
    values[wp.tid()] = value
"""

BROKEN = """
import warp as wp


@wp.kernel
def broken(values: wp.array(dtype=float)):
    values[wp.tid()] = no_such_function(values[0])
"""


@pytest.fixture
def modules(tmp_path: Path, monkeypatch):
    """Three importable Python modules of kernels under fresh names, and an empty kernel cache for the test."""
    tag = tmp_path.name.replace("-", "_").replace("[", "_").replace("]", "_")
    names = {}
    for role, text in (("plain", SOURCE), ("generic", GENERIC), ("broken", BROKEN), ("empty", "X = 1\n")):
        name = f"kernels_{role}_{tag}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
        names[role] = name
    monkeypatch.syspath_prepend(str(tmp_path))
    wp.init()
    monkeypatch.setattr(wp.config, "kernel_cache_dir", str(tmp_path / "warp-cache"))
    yield names
    for name in names.values():
        sys.modules.pop(name, None)


def _run(name: str, kernel: str, values: list[float], *args) -> list[float]:
    array = wp.array(values, dtype=float, device="cpu")
    wp.launch(getattr(sys.modules[name], kernel), dim=len(values), inputs=[array, *args], device="cpu")
    return array.numpy().tolist()


def test_module_built_by_a_worker_is_the_build_the_first_launch_uses(modules, tmp_path):
    done = kernels.precompile([modules["plain"]], "cpu", workers=1)
    assert list(done.modules) == [modules["plain"]] and not done.failed and not done.missing
    assert done.workers == 1 and not wp.get_module(modules["plain"]).execs, "built by the worker, not loaded here"
    built = sorted(p.name for p in (tmp_path / "warp-cache").iterdir())
    assert len(built) == 1 and modules["plain"] in built[0]

    assert _run(modules["plain"], "double", [1.0, 2.0]) == [2.0, 4.0]
    assert _run(modules["plain"], "scale", [1.0, 2.0], 3.0) == [3.0, 6.0]
    assert kernels.rebuilt_since(done, "cpu") == []
    assert sorted(p.name for p in (tmp_path / "warp-cache").iterdir()) == built, "the launch compiled again"
    assert kernels.loaded_modules("cpu")[0].count(modules["plain"]) == 1

    again = kernels.Precompiler([modules["plain"]], "cpu")
    assert again.workers == 0, "a module already in the cache needs no worker"
    assert again.result().modules == done.modules


def test_a_module_a_worker_is_building_is_waited_for_at_first_use_not_built_twice(modules, monkeypatch):
    from warp._src.context import Module

    original_load = Module.load
    builds: list[tuple[str, bool]] = []
    original_compile = Module._compile

    def recording_compile(module, *args, **kwargs):
        compiled = original_compile(module, *args, **kwargs)
        builds.append((module.name, compiled))
        return compiled

    monkeypatch.setattr(Module, "_compile", recording_compile)
    started = kernels.Precompiler([modules["plain"]], "cpu", workers=1)
    try:
        deadline = time.monotonic() + 60
        while not started.begun(modules["plain"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started.begun(modules["plain"])
        finished_first = started._futures[0].done()  # a build on the CPU takes seconds: next to never
        assert _run(modules["plain"], "double", [1.0, 2.0]) == [2.0, 4.0]
        assert started._futures[0].done(), "the launch went ahead of the worker building its module"
        assert builds == [(modules["plain"], False)], "built here as well as by the worker"
        assert Module.load is original_load, "nothing left to wait for: Warp's own load again"
        done = started.result()
    finally:
        started.close()
    assert list(done.modules) == [modules["plain"]]
    assert done.waited > 0 or finished_first, "the launch did not wait for the worker"


def test_a_module_no_worker_has_begun_is_taken_back_and_built_at_once(modules, tmp_path):
    copies = []
    for index in range(3):
        name = f"{modules['plain']}_copy{index}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(SOURCE))
        copies.append(name)
    started = kernels.Precompiler(copies, "cpu", workers=1)
    try:
        # The worker is still starting: no module is begun. The third is still in the queue here (a worker's own
        # queue holds the one it builds and the next), so it is taken back; it is built here, not waited for.
        assert not started.begun(copies[2])
        assert _run(copies[2], "double", [1.0, 3.0]) == [2.0, 6.0]
        assert started._futures[2].cancelled()
        done = started.result()
    finally:
        started.close()
        for name in copies:
            sys.modules.pop(name, None)
    assert done.left == [copies[2]] and sorted(done.modules) == copies[:2] and done.waited == 0


def test_workers_done_restore_warps_load_and_shut_down_by_themselves(modules):
    from warp._src.context import Module

    original_load = Module.load
    started = kernels.Precompiler([modules["plain"]], "cpu", workers=1)
    try:
        started._futures[0].result(timeout=120)
        deadline = time.monotonic() + 30
        while Module.load is not original_load and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Module.load is original_load
        assert started.ready() == 1 and started.result().waited == 0
    finally:
        started.close()
        Module.load = original_load


def test_module_changed_after_import_is_reported_as_rebuilt(modules):
    done = kernels.precompile([modules["plain"]], "cpu", workers=1)
    shift = sys.modules[modules["plain"]].add_kernel()
    array = wp.array([1.0], dtype=float, device="cpu")
    wp.launch(shift, dim=1, inputs=[array], device="cpu")
    assert array.numpy().tolist() == [2.0]
    assert kernels.rebuilt_since(done, "cpu") == [modules["plain"]]
    # Listing the modules a run loaded no longer suggests it: its build changes after import.
    assert not kernels.named_ahead(wp.get_module(modules["plain"]))
    ahead, other = kernels.loaded_modules("cpu")
    assert modules["plain"] in other and modules["plain"] not in ahead


def test_missing_and_broken_modules_are_reported_and_left_to_first_use(modules):
    done = kernels.precompile(
        [modules["broken"], "no_such_python_module_xyz", modules["empty"], modules["plain"]], "cpu", workers=2
    )
    assert list(done.modules) == [modules["plain"]]
    assert done.missing == ["no_such_python_module_xyz", modules["empty"]]
    assert len(done.failed) == 1 and done.failed[0].startswith(modules["broken"] + ":")
    assert "no_such_function" in done.failed[0]
    # Its first launch here builds it again and reports its own error.
    with pytest.raises(Exception, match="no_such_function"):
        _run(modules["broken"], "broken", [1.0])


def test_generic_kernels_are_not_named_ahead(modules):
    importlib.import_module(modules["generic"])
    importlib.import_module(modules["plain"])
    assert not kernels.named_ahead(wp.get_module(modules["generic"]))
    assert kernels.named_ahead(wp.get_module(modules["plain"]))
    assert _run(modules["generic"], "fill", [0.0, 0.0], 5.0) == [5.0, 5.0]
    _run(modules["plain"], "double", [1.0])
    ahead, generic = kernels.loaded_modules("cpu")
    assert modules["plain"] in ahead and modules["generic"] in generic and modules["generic"] not in ahead


def test_default_workers_leave_a_core_and_never_exceed_the_modules():
    assert kernels.default_workers(1) == 1
    assert 1 <= kernels.default_workers(100) <= kernels.MAX_WORKERS


def test_modules_with_more_kernels_are_built_first(modules):
    started = kernels.Precompiler([modules["broken"], modules["plain"]], "cpu", workers=1)
    started.close()
    assert started.order == [modules["plain"], modules["broken"]], "two kernels before one"


def test_close_stops_workers_before_their_modules_start(modules):
    started = kernels.Precompiler([modules["plain"]] * 6, "cpu", workers=1)
    started.close()
    assert all(f.done() for f in started._futures), "close() returned with work still queued"


def test_h1_tasks_list_their_kernels_and_can_turn_precompile_off(compose_cfg):
    rough = compose_cfg(["task=h1_rough"])
    assert rough.task.kernels.precompile and "mujoco_warp._src.smooth" in rough.task.kernels.modules
    flat = compose_cfg(["task=h1_flat"]).task.kernels.modules
    assert flat and set(flat) < set(rough.task.kernels.modules), "h1_flat lists a subset: no ray caster"
    assert "isaaclab.sensors.ray_caster.kernels" not in flat
    assert not compose_cfg(["task=h1_rough", "task.kernels.precompile=false"]).task.kernels.precompile
    assert compose_cfg(["task=toy"]).task.kernels.modules == []


def test_the_warp_frontends_modules_are_built_ahead_only_when_it_runs(compose_cfg):
    from tasks.isaaclab_env import modules_built_ahead

    torch_task = compose_cfg(["task=h1_rough"]).task
    warp_task = compose_cfg(["task=h1_rough", "task.frontend=warp"]).task
    extra = list(warp_task.kernels.warp_frontend_modules)
    assert "isaaclab_experimental.managers.reward_manager" in extra and "tasks.warp_terms" in extra
    assert modules_built_ahead(torch_task) == list(torch_task.kernels.modules)
    assert modules_built_ahead(warp_task) == list(warp_task.kernels.modules) + extra
    flat = compose_cfg(["task=h1_flat"]).task.kernels.warp_frontend_modules
    assert "tasks.warp_terms" not in flat, "h1_flat has no height scan of ours"


def test_load_times_record_each_build_in_the_phase_it_fell_in(modules):
    from warp._src.context import Module

    from runner.warp_modules import LoadTimes

    importlib.import_module(modules["plain"])
    importlib.import_module(modules["generic"])
    original = Module.load
    times = LoadTimes(threshold_s=0.0)
    times.install()
    try:
        _run(modules["plain"], "double", [1.0])
        times.phase = "iteration 0"
        assert _run(modules["generic"], "fill", [0.0], 2.0) == [2.0]
        _run(modules["plain"], "double", [1.0])  # loaded: recorded only because the threshold is 0
    finally:
        times.uninstall()
    assert Module.load is original
    phases = {(phase, name) for phase, name, _ in times.rows}
    assert ("start-up", modules["plain"]) in phases and ("iteration 0", modules["generic"]) in phases
    assert "2 slow loads" in times.table() and times.table().splitlines()[-1].startswith("total: start-up")


def test_kernel_with_a_module_of_its_own_is_listed_and_built_by_its_python_module(modules, tmp_path):
    """``module="unique"``: the Warp module is named after the kernel's source hash; the list names the kernel."""
    # Warp shares one such module among equal sources: this test's kernel has a name of its own.
    python_module = f"kernels_unique_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{python_module}.py").write_text(
        "import warp as wp\n\n\n"
        '@wp.kernel(module="unique")\n'
        f"def negate_{python_module}(values: wp.array(dtype=float)):\n"
        "    values[wp.tid()] = -values[wp.tid()]\n"
    )
    name = f"{python_module}:negate_{python_module}"
    try:
        done = kernels.precompile([name, f"{python_module}:no_such_kernel"], "cpu", workers=1)
        assert list(done.modules) == [name] and done.missing == [f"{python_module}:no_such_kernel"]
        unique = getattr(sys.modules[python_module], f"negate_{python_module}").module
        assert unique.name != python_module and not unique.execs, "built by the worker, not loaded here"
        built = sorted(p.name for p in (tmp_path / "warp-cache").iterdir())
        assert len(built) == 1 and unique.name in built[0]

        assert _run(python_module, f"negate_{python_module}", [1.0, -2.0]) == [-1.0, 2.0]
        assert sorted(p.name for p in (tmp_path / "warp-cache").iterdir()) == built, "the launch compiled again"
        assert kernels.rebuilt_since(done, "cpu") == []
        ahead, _ = kernels.loaded_modules("cpu")
        assert name in ahead and unique.name not in ahead
    finally:
        sys.modules.pop(python_module, None)


def test_waiting_for_workers_that_are_turned_off_is_refused(compose_cfg):
    from tasks.isaaclab_env import _start_precompile

    cfg = compose_cfg(["task=h1_rough", "task.kernels.precompile=false", "task.kernels.wait_for_workers=true"])
    with pytest.raises(ValueError, match=r"task\.kernels\.precompile=false turns off; drop one of the two"):
        _start_precompile(cfg.task, "cpu")
