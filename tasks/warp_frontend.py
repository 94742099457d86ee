"""Isaac Lab's Warp frontend (``task.frontend=warp``): the project's Warp terms registered, the env config adapted
before the simulator starts, the environment built, and which managers replay CUDA graphs reported.

The frontend (``isaaclab_experimental``) runs the observation, reward, termination, event and action managers as
Warp kernels and, on a GPU, records each manager's step once as a CUDA graph that it replays from then on. It finds
the Warp version of every term by name on the ``.mdp`` package that mirrors the term's own (``isaaclab.envs.mdp`` ->
``isaaclab_experimental.envs.mdp``); :func:`register_twins` adds the versions of ``tasks/warp_terms.py`` there.

Its reward and termination managers log their figures as views of one buffer each, rewritten at every reset, where
rsl-rl keeps each step's log by reference until the iteration's end: :func:`snapshot_logs` hands the learner copies.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MANAGERS = ("ActionManager", "ObservationManager", "EventManager", "TerminationManager", "RewardManager")
"""The managers the Warp frontend runs as Warp kernels (commands and the curriculum stay PyTorch)."""

_DEFINITION_ATTRIBUTES = frozenset(
    {"__wrapped__", "__signature__", "_descriptor", "_has_descriptor", "_warp_capturable"}
)
"""What Isaac Lab's decorators put on a Warp term function; anything else on it is state its first call cached."""


def twin_module_for(stable: Any) -> Any:
    """The module on which the Warp frontend looks up the Warp version of ``stable`` by name: the ``.mdp`` package
    mirroring the one ``stable`` is defined in (the frontend's own mirroring rule)."""
    from isaaclab_experimental.envs.frontend import WarpFrontend

    mirrored = WarpFrontend._mirror_module(stable.__module__)
    target = WarpFrontend._nearest_mdp_module(mirrored) if mirrored else None
    if target is None:
        raise ValueError(f"{stable.__module__}.{stable.__name__} has no mirrored Warp .mdp package")
    return importlib.import_module(target)


def register_twins() -> list[str]:
    """Make the Warp frontend find the terms of ``tasks.warp_terms.TWINS``; idempotent. Returns the names set.

    The frontend takes a term for Warp code when it comes from a package it knows as Warp (``WARP_ROOT_PREFIXES``),
    so ``tasks.warp_terms`` is added to them. Each term is then set, under its PyTorch term's name, on the mirrored
    ``.mdp`` package, unless Isaac Lab ships a Warp version of that name itself, which is kept."""
    from isaaclab_experimental.envs.frontend import WarpFrontend

    from tasks import warp_terms

    isaaclab_roots = tuple(WarpFrontend.MIRROR_ROOTS.values())
    if not warp_terms.__name__.startswith(WarpFrontend.WARP_ROOT_PREFIXES):
        WarpFrontend.WARP_ROOT_PREFIXES = (*WarpFrontend.WARP_ROOT_PREFIXES, warp_terms.__name__)
    registered = []
    for path, twin in warp_terms.TWINS.items():
        module_name, _, name = path.partition(":")
        stable = getattr(importlib.import_module(module_name), name)
        module = twin_module_for(stable)
        present = module.__dict__.get(name)
        if present is not None and present is not twin and (present.__module__ or "").startswith(isaaclab_roots):
            logger.info("Isaac Lab ships a Warp %s (%s); using it", name, present.__module__)
            continue
        # The package's lazy fallback may have cached the PyTorch term under this name; the Warp version replaces it.
        setattr(module, name, twin)
        registered.append(name)
    return registered


def adapt(env_cfg: Any, task_name: str, device: str) -> None:
    """Prepare ``env_cfg`` as the Warp environment will when built (Newton check, every term swapped for its Warp
    version), so that a term without one is refused here, before the simulator starts, saying what to change. On
    the CPU the managers launch their kernels without graphs: Warp records graphs on CUDA devices only (its CPU
    recording refuses the articulation's array views)."""
    from isaaclab_experimental.envs.frontend import FrontendIncompatibleError, WarpFrontend
    from isaaclab_experimental.utils.manager_call_switch import ManagerCallMode

    register_twins()
    try:
        WarpFrontend.adapt_cfg(env_cfg)
    except FrontendIncompatibleError as error:
        raise ValueError(
            f"task.frontend=warp cannot build task '{task_name}': {error}\n"
            "Remove those terms (~task.rewards.NAME, task.events.NAME.enabled=false), give them a Warp version in "
            "tasks/warp_terms.py, or use task.frontend=torch."
        ) from error
    if not device.startswith("cuda"):
        env_cfg.manager_call_config = {"default": int(ManagerCallMode.WARP_NOT_CAPTURED)}


def forget_warm_up(env_cfg: Any) -> list[str]:
    """Drop what Isaac Lab's Warp term functions cached on themselves in an earlier environment of this process
    (the command's array, scratch buffers, behind an ``_is_warmed_up`` flag), so the next environment built here (a
    local sweep's next point) starts from its own buffers instead of reading the closed one's. Returns the terms
    cleared. Only call it with no Warp environment alive in the process: a live one's recorded graphs point at those
    buffers, and two cannot run side by side anyway (the caches are per function, not per environment)."""
    from isaaclab_experimental.envs.frontend import WarpFrontend

    cleared = []
    for path, term in WarpFrontend._walk_terms(env_cfg):
        func = getattr(term, "func", None)
        if not inspect.isfunction(func):
            continue
        stale = [key for key in vars(func) if key not in _DEFINITION_ATTRIBUTES]
        for key in stale:
            delattr(func, key)
        if stale:
            cleared.append(".".join(path))
    return cleared


def build_env(env_cfg: Any, task_id: str) -> Any:
    """The Warp environment, built the way ``python -m isaaclab train --frontend warp`` builds it, from an adapted
    ``env_cfg``, after dropping what an earlier environment of this process left on the term functions."""
    from isaaclab_experimental.envs.frontend import WarpFrontend

    forget_warm_up(env_cfg)
    return WarpFrontend.build_env(env_cfg, task_id)


def captured_managers(env: Any) -> dict[str, bool]:
    """Whether each Warp manager of ``env`` replays a CUDA graph (False: its kernels are launched one by one, on
    the CPU, or because one of its terms cannot be recorded)."""
    from isaaclab_experimental.utils.manager_call_switch import ManagerCallMode

    switch = env._manager_call_switch
    return {name: switch.get_mode_for_manager(name) == ManagerCallMode.WARP_CAPTURED for name in MANAGERS}


def describe(captured: dict[str, bool]) -> str:
    """One line: which managers replay graphs and which launch their kernels without one."""
    graphs = [name for name, yes in captured.items() if yes]
    eager = [name for name, yes in captured.items() if not yes]
    line = "[rlforge] Warp frontend: CUDA graphs for " + (", ".join(graphs) or "no manager")
    return line + (f"; kernels launched without a graph: {', '.join(eager)}" if eager else "")


# -------------------------------------------------------------------------------------------------- logs
def saved_views(log: dict[str, Any]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Copies of the buffers that the tensors of ``log`` view (a Warp manager's figures are views of one buffer it
    keeps and rewrites at each reset), by the buffer's id: (buffer, copy), the copy with the buffer's strides. Other
    tensors are new at each reset and stay as they were."""
    import torch

    saved = {}
    for value in log.values():
        base = value._base if isinstance(value, torch.Tensor) else None
        if base is not None and id(base) not in saved:
            saved[id(base)] = (base, base.clone())  # a dense buffer's clone keeps its strides
    return saved


def snapshot(log: dict[str, Any]) -> dict[str, Any]:
    """``log`` with each figure that views a manager's buffer replaced by the same view of a copy of that buffer
    taken now (:func:`saved_views`): one copy per buffer, on the device, that later resets leave as it is."""
    saved = saved_views(log)
    copied = {}
    for key, value in log.items():
        base = getattr(value, "_base", None)
        if base is not None and id(base) in saved:
            buffer, copy = saved[id(base)]
            value = copy.as_strided(value.shape, value.stride(), value.storage_offset() - buffer.storage_offset())
        copied[key] = value
    return copied


def snapshot_logs(env: Any) -> None:
    """Make ``env`` (rsl-rl's wrapper of a Warp environment) hand out each step's ``extras["log"]`` as a
    :func:`snapshot`: rsl-rl keeps every step's log by reference and averages them at the iteration's end, which
    with the managers' rewritten buffers would give every step the last reset's figures. The environment's own log
    is left as it is (the masked reset of ``task.device_resets`` reads it back)."""
    step = env.step

    def step_with_snapshot(actions: torch.Tensor):
        obs, rewards, dones, extras = step(actions)
        if "log" in extras:
            extras = {**extras, "log": snapshot(extras["log"])}
        return obs, rewards, dones, extras

    env.step = step_with_snapshot
