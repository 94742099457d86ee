"""Build an Isaac Lab manager-based environment from a task config (Isaac Lab is imported here, lazily)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tasks.registry import EnvHandle
from tasks.robots.settings import apply_robot_settings

PROJECT_H1 = Path(__file__).resolve().parent / "robots" / "h1" / "h1.xml"
_ENTITY_KEY = "_scene_entity_"


def _resolve_callable(path: str):
    """Import ``module:function`` (or ``module.function``)."""
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import reward/event function '{path}': {error}") from error


def _to_isaac_value(value: Any) -> Any:
    """YAML values to what Isaac Lab configs expect: tuples for lists, SceneEntityCfg for entity dicts."""
    if isinstance(value, dict):
        if _ENTITY_KEY in value:
            from isaaclab.managers import SceneEntityCfg

            kwargs = {k: _to_isaac_value(v) for k, v in value.items() if k != _ENTITY_KEY}
            return SceneEntityCfg(value[_ENTITY_KEY], **kwargs)
        return {k: _to_isaac_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_to_isaac_value(v) for v in value)
    return value


def _terms(group: Any) -> dict[str, Any]:
    """The active terms (non-None manager term configs) of a rewards/events config object."""
    return {name: term for name, term in vars(group).items() if not name.startswith("_") and term is not None}


def robot_usd(task: DictConfig) -> str | None:
    """The USD file of the task's robot, or None to keep Isaac Lab's own asset."""
    from tasks.robots.usd_writer import convert_to_usd

    source = task.robot.source
    if source == "project":
        return str(convert_to_usd(PROJECT_H1))
    if source == "file":
        if not task.robot.file:
            raise ValueError("task.robot.source=file needs task.robot.file=<path to an MJCF or URDF file>")
        return str(convert_to_usd(task.robot.file))
    if source == "isaaclab":
        return None
    raise ValueError(f"task.robot.source must be project, isaaclab or file, not '{source}'")


def apply_rewards(env_cfg: Any, rewards: dict[str, Any]) -> None:
    """Make the env's reward terms exactly the configured ones: weights, params, new and removed terms."""
    from isaaclab.managers import RewardTermCfg

    existing = _terms(env_cfg.rewards)
    for name in existing:
        if name not in rewards:
            setattr(env_cfg.rewards, name, None)
    for name, term in rewards.items():
        params = _to_isaac_value(dict(term.get("params") or {}))
        if term.get("func"):
            merged = {**(existing[name].params if name in existing else {}), **params}
            setattr(
                env_cfg.rewards,
                name,
                RewardTermCfg(func=_resolve_callable(term["func"]), weight=float(term["weight"]), params=merged),
            )
        elif name in existing:
            existing[name].weight = float(term["weight"])
            existing[name].params.update(params)
        else:
            raise ValueError(
                f"reward term '{name}' is not one of this environment's ({', '.join(sorted(existing))}); "
                f"to add a new term give its function: task.rewards.{name}.func=module:function"
            )


def apply_events(env_cfg: Any, events: dict[str, Any]) -> None:
    """Turn events off or change their parameters."""
    existing = _terms(env_cfg.events)
    for name, event in events.items():
        if name not in existing:
            raise ValueError(f"event '{name}' is not one of this environment's: {', '.join(sorted(existing))}")
        if not event["enabled"]:
            setattr(env_cfg.events, name, None)
        else:
            existing[name].params.update(_to_isaac_value(dict(event.get("params") or {})))


def set_dotted(obj: Any, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` on nested config objects or dicts, refusing paths that do not exist."""
    *parents, last = dotted.split(".")
    target = obj
    for i, part in enumerate(parents):
        target = target[part] if isinstance(target, dict) else getattr(target, part, None)
        if target is None:
            raise ValueError(f"env_overrides: '{'.'.join(parents[: i + 1])}' does not exist in the env config")
    if isinstance(target, dict):
        target[last] = value
    elif hasattr(target, last):
        setattr(target, last, value)
    else:
        raise ValueError(f"env_overrides: '{dotted}' does not exist in the env config")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested ``{"scene": {"env_spacing": 3}}`` (what ``task.env_overrides.scene.env_spacing=3`` composes to) and
    dotted ``{"scene.env_spacing": 3}`` alike, as dotted paths to leaf values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def build_env_cfg(task: DictConfig, device: str, seed: int) -> Any:
    """Isaac Lab's env config for ``task.isaaclab_id``, with every field of the task config applied."""
    from isaaclab_tasks.utils import resolve_task_config

    if task.frontend == "warp" and task.physics != "newton_mjwarp":
        raise ValueError(
            f"task.frontend=warp runs on Newton only, not task.physics={task.physics}; "
            "use task.physics=newton_mjwarp, or task.frontend=torch"
        )
    if task.terrain.midphase == "tiled" and (task.physics != "newton_mjwarp" or task.terrain.type != "generator"):
        raise ValueError(
            "task.terrain.midphase=tiled chooses Newton's search for a generated terrain's triangles, which runs with "
            f"task.physics=newton_mjwarp and task.terrain.type=generator only, not task.physics={task.physics} and "
            f"task.terrain.type={task.terrain.type} (drop the override)"
        )
    if task.device_resets and task.frontend != "warp":
        raise ValueError(
            f"task.device_resets=true resets by Isaac Lab's Warp environment's mask, not with "
            f"task.frontend={task.frontend}; add task.frontend=warp, or drop task.device_resets"
        )
    if task.physics == "physx" and importlib.util.find_spec("isaacsim") is None:
        raise ValueError(
            "task.physics=physx needs Isaac Sim installed (the isaacsim packages); "
            "without it use task.physics=newton_mjwarp"
        )
    overrides = [] if task.physics == "newton_mjwarp" else [f"physics={task.physics}"]
    env_cfg, _ = resolve_task_config(task.isaaclab_id, None, overrides=overrides)
    container = OmegaConf.to_container(task, resolve=True)

    env_cfg.seed = seed
    env_cfg.sim.device = device
    env_cfg.scene.num_envs = task.num_envs
    env_cfg.episode_length_s = task.episode_length_s
    env_cfg.decimation = task.decimation
    env_cfg.sim.dt = task.sim_dt
    env_cfg.sim.render_interval = task.decimation
    if env_cfg.scene.contact_forces is not None:
        env_cfg.scene.contact_forces.update_period = task.sim_dt

    usd = robot_usd(task)
    if usd is not None:
        env_cfg.scene.robot.spawn.usd_path = usd
    apply_robot_settings(env_cfg.scene.robot, task.robot)

    terrain = env_cfg.scene.terrain
    if task.terrain.type == "plane":
        if task.terrain.collision != "mesh":
            raise ValueError(
                f"task.terrain.collision={task.terrain.collision} applies to a generated terrain; "
                "the plane is already the cheapest ground to collide against (use task.terrain.collision=mesh)"
            )
        if task.terrain.simplify:
            raise ValueError(
                "task.terrain.simplify=true merges a generated terrain's triangles; the plane has none to merge "
                "(use task.terrain.simplify=false)"
            )
        # Isaac Lab's "plane" terrain loads its ground from the asset server; this one is written locally.
        from tasks.ground import flat_ground_usd

        terrain.terrain_type = "usd"
        terrain.usd_path = str(flat_ground_usd())
        terrain.terrain_generator = None
        terrain.max_init_terrain_level = None
        env_cfg.scene.height_scanner = None
        env_cfg.observations.policy.height_scan = None
        env_cfg.curriculum.terrain_levels = None
    elif task.terrain.type == "generator":
        if terrain.terrain_generator is None:
            raise ValueError(
                f"task {task.name}: this environment has no terrain generator; use task.terrain.type=plane"
            )
        terrain.terrain_generator.num_rows = task.terrain.num_rows
        terrain.terrain_generator.num_cols = task.terrain.num_cols
        terrain.terrain_generator.curriculum = task.terrain.curriculum
        if task.terrain.collision != "mesh" and task.physics != "newton_mjwarp":
            raise ValueError(
                f"task.terrain.collision={task.terrain.collision} is Newton's; "
                f"task.physics={task.physics} collides against the mesh (use task.terrain.collision=mesh)"
            )
        from tasks.terrain_heightfield import set_collision

        set_collision(terrain.terrain_generator, str(task.terrain.collision))
        if task.terrain.simplify and task.terrain.collision != "mesh":
            raise ValueError(
                f"task.terrain.simplify=true merges the triangles of the mesh Newton collides against; with "
                f"task.terrain.collision={task.terrain.collision} it collides against a heightfield sampled at the "
                "same heights either way (use task.terrain.simplify=false, or task.terrain.collision=mesh)"
            )
        if task.terrain.cache:
            from tasks.terrain_cache import CachedSimplifiedTerrainGenerator, CachedTerrainGenerator

            terrain.terrain_generator.class_type = (
                CachedSimplifiedTerrainGenerator if task.terrain.simplify else CachedTerrainGenerator
            )
        elif task.terrain.simplify:
            from tasks.terrain_simplify import SimplifiedTerrainGenerator

            terrain.terrain_generator.class_type = SimplifiedTerrainGenerator
        terrain.max_init_terrain_level = task.terrain.max_init_level
        if not task.terrain.curriculum:
            env_cfg.curriculum.terrain_levels = None
    else:
        raise ValueError(f"task.terrain.type must be 'generator' or 'plane', not '{task.terrain.type}'")
    if env_cfg.scene.height_scanner is not None:
        env_cfg.scene.height_scanner.update_period = task.decimation * task.sim_dt

    command = env_cfg.commands.base_velocity
    ranges = task.commands.ranges
    command.ranges.lin_vel_x = tuple(ranges.lin_vel_x)
    command.ranges.lin_vel_y = tuple(ranges.lin_vel_y)
    command.ranges.ang_vel_z = tuple(ranges.ang_vel_z)
    command.ranges.heading = tuple(ranges.heading)
    command.resampling_time_range = (task.commands.resampling_time_s, task.commands.resampling_time_s)
    command.heading_command = task.commands.heading_command
    command.rel_standing_envs = task.commands.standing_fraction

    env_cfg.observations.policy.enable_corruption = task.observation_noise
    apply_events(env_cfg, container["events"])
    apply_rewards(env_cfg, container["rewards"])
    for dotted, value in flatten(container["env_overrides"]).items():
        set_dotted(env_cfg, dotted, _to_isaac_value(value))
    if task.frontend == "warp":
        from tasks.warp_frontend import adapt

        adapt(env_cfg, task.name, device)
    return env_cfg


def build(task: DictConfig, device: str, seed: int, clip_actions: float | None = None) -> EnvHandle:
    """Launch the (kit-less) simulation and build the wrapped environment (which clamps actions to
    ``clip_actions`` when given)."""
    info: dict[str, Any] = {"kind": "isaaclab", "frontend": str(task.frontend)}
    configure_warp(task.kernels)
    set_torchscript(bool(task.torchscript))
    with contextlib.ExitStack() as stack:
        precompiler = _start_precompile(task, device)
        if precompiler is not None:
            stack.callback(precompiler.close)
        from isaaclab.app import launch_simulation

        env_cfg = info["env_cfg"] = build_env_cfg(task, device, seed)
        stack.enter_context(launch_simulation(env_cfg, {"device": device}))
        from isaaclab_rl.rsl_rl import RslRlVecEnvWrapper

        if task.physics == "newton_mjwarp":
            from tasks.fan_triangulation import install as fast_fan_triangulation

            fast_fan_triangulation()
        topology = _keep_mesh_topology(task)
        if task.physics == "newton_mjwarp" and task.terrain.type == "generator" and task.terrain.midphase != "tiled":
            try:
                from tasks.contact_search import install_midphase
            except ImportError as error:
                raise RuntimeError(
                    f"task.terrain.midphase={task.terrain.midphase} builds on Newton's midphase functions, which this "
                    f"Newton lacks ({error}); use task.terrain.midphase=tiled"
                ) from error
            stack.callback(install_midphase(str(task.terrain.midphase)))
            print(f"[rlforge] terrain midphase: {task.terrain.midphase}")
        stand_ins = _solver_stand_ins(task, stack)
        if task.frontend == "warp":
            from tasks.warp_frontend import build_env, captured_managers, describe

            env = build_env(env_cfg, task.isaaclab_id)
            stack.callback(env.close)
            info["captured"] = captured_managers(env)
            print(describe(info["captured"]))
            if task.device_resets:
                from tasks.device_resets import DeviceResets

                stack.callback(DeviceResets(env).remove)
                print("[rlforge] resets chosen on the device (task.device_resets)")
        else:
            from isaaclab.envs import ManagerBasedRLEnv

            env = ManagerBasedRLEnv(cfg=env_cfg)
            stack.callback(env.close)
        if task.physics == "newton_mjwarp" and task.terrain.type == "generator":
            from isaaclab_newton.physics import NewtonManager

            from tasks.terrain_heightfield import check_collision

            check_collision(NewtonManager.get_model(), str(task.terrain.collision))
        if topology is not None:
            print(topology.describe())
        if stand_ins is not None:
            print(stand_ins.describe())
        wrapped = RslRlVecEnvWrapper(env, clip_actions=clip_actions)
        if task.frontend == "warp":
            from tasks.warp_frontend import snapshot_logs

            snapshot_logs(wrapped)
        if precompiler is not None:
            info["precompiler"] = precompiler
            _report(precompiler, wait=bool(task.kernels.wait_for_workers))
        close = stack.pop_all().close  # built: the caller closes it from here on
    return EnvHandle(env=wrapped, close=close, info=info)


def configure_warp(kernels: DictConfig) -> None:
    """How Warp builds the modules imported from now on: adjoint kernels or not (``task.kernels.backward``), GPU
    machine code or PTX (``task.kernels.cubin``)."""
    import warp as wp

    wp.config.enable_backward = bool(kernels.backward)
    wp.config.cuda_output = "cubin" if kernels.cubin else None


def set_torchscript(enabled: bool) -> None:
    """Whether ``torch.jit.script`` compiles what is imported from now on (``task.torchscript``); off, it returns
    the function unchanged."""
    import torch.jit._state

    (torch.jit._state.enable if enabled else torch.jit._state.disable)()


def _keep_mesh_topology(task: DictConfig):
    """Keep Newton's analysis of the generated terrain's mesh across starts (``task.terrain.cache``)."""
    if task.physics != "newton_mjwarp" or task.terrain.type != "generator" or not task.terrain.cache:
        return None
    from tasks.mesh_topology import install

    return install()


def _solver_stand_ins(task: DictConfig, stack: contextlib.ExitStack):
    """Spare MuJoCo the terrain's mesh while the environment lives (``task.terrain.solver_stand_in``)."""
    if task.physics != "newton_mjwarp" or not task.terrain.solver_stand_in:
        return None
    from tasks.solver_stand_in import install

    record, uninstall = install()
    stack.callback(uninstall)
    return record


def modules_built_ahead(task: DictConfig) -> list[str]:
    """The Warp modules a run of ``task`` builds ahead: the task's, and its Warp frontend's when that runs."""
    extra = list(task.kernels.warp_frontend_modules) if task.frontend == "warp" else []
    return list(task.kernels.modules) + [name for name in extra if name not in task.kernels.modules]


def _start_precompile(task: DictConfig, device: str):
    """Start building the task's named Warp modules in worker processes (one set per machine: local rank 0)."""
    from core.distributed import dist_info

    if task.kernels.wait_for_workers and not task.kernels.precompile:
        raise ValueError(
            "task.kernels.wait_for_workers=true waits for the kernel workers, which task.kernels.precompile=false "
            "turns off; drop one of the two"
        )
    names = modules_built_ahead(task)
    if not (task.kernels.precompile and names) or dist_info().local_rank != 0:
        return None
    from tasks.kernels import Precompiler

    return Precompiler(names, device, int(task.kernels.workers), share=not task.kernels.wait_for_workers)


def _report(precompiler, wait: bool) -> None:
    """Print what the kernel workers did (``[rlforge] Warp kernels: ...``): with ``wait``, or once they are all done,
    after waiting for them; otherwise how far they are as training starts."""
    plural = "es" if precompiler.workers != 1 else ""
    if not wait and precompiler.ready() < len(precompiler.order):
        print(
            f"[rlforge] Warp kernels: {precompiler.ready()} of {len(precompiler.order)} modules built ahead "
            f"by {precompiler.workers} worker process{plural} so far; training starts while they build the rest"
        )
        return
    done = precompiler.result()
    notes = [f"not found: {', '.join(done.missing)}"] if done.missing else []
    notes += [f"left to first use: {'; '.join(done.failed)}"] if done.failed else []
    notes += (
        [f"built by the simulator itself, needed before a worker began them: {len(done.left)}"] if done.left else []
    )
    how = f"by {done.workers} worker process{plural}" if done.workers else "(all found in the kernel cache)"
    waited = f"; the simulator waited {done.waited:.1f} s for them" if done.waited >= 0.05 else ""
    print(
        f"[rlforge] Warp kernels: {len(done.modules)} modules built ahead {how} in {done.seconds:.1f} s{waited}"
        + "".join(f"; {note}" for note in notes)
    )
