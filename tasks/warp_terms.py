"""Warp versions of the Isaac Lab MDP terms that its Warp frontend lacks and the H1 tasks use.

Isaac Lab's Warp frontend (``isaaclab_experimental``) runs the observation, reward, termination, event and action
managers as Warp kernels, and finds the Warp version of each term by the term's name on the ``.mdp`` package that
mirrors the term's own (``isaaclab.envs.mdp`` -> ``isaaclab_experimental.envs.mdp``). It has none for ``height_scan``,
the rough-terrain observation, so rough terrain does not build there; :data:`TWINS` lists the versions written here
(``tasks/warp_frontend.py`` registers them). The curriculum and command managers stay PyTorch in the Warp
environment, so the terrain-level curriculum needs no Warp version: it moves the terrain's environment origins in
place, and the Warp reset event reads those same origins (a zero-copy view).

A Warp observation term writes into a preallocated ``out`` array (num_envs, dim) instead of returning a tensor.
"""

from __future__ import annotations

from typing import Any

import warp as wp
from isaaclab.envs.utils.io_descriptors import GenericObservationIODescriptor
from isaaclab_experimental.managers import ManagerTermBase


@wp.kernel
def _height_scan_kernel(
    sensor_pos_w: wp.array(dtype=wp.vec3f),
    ray_hits_w: wp.array2d(dtype=wp.vec3f),
    offset: wp.float32,
    out: wp.array2d(dtype=wp.float32),
):
    """out[env, ray] = sensor height - height of the ray's hit - offset (a missed ray's hit is +inf: -inf out)."""
    env, ray = wp.tid()
    out[env, ray] = (sensor_pos_w[env][2] - ray_hits_w[env, ray][2]) - offset


class HeightScan(ManagerTermBase):
    """Warp version of ``isaaclab.envs.mdp.height_scan``: the height of each ray of a ray caster below the sensor,
    minus ``offset`` [m], one column per ray.

    A class, because the number of rays (the term's width, which the Warp observation manager allocates before the
    first call) is known only once the sensor exists. The ray caster refreshes its hits lazily, on the first read of
    its ``data`` after the physics stepped: host code and the sensor's own CUDA graph, which a captured observation
    graph would not replay. The term therefore reads ``data`` as the PyTorch term does and says it cannot be
    captured; the Warp frontend then runs the observation manager's kernels without a graph and keeps the other
    managers captured.
    """

    _warp_capturable = False
    """Read by the Warp managers (``isaaclab_experimental.utils.warp.is_warp_capturable``)."""

    def __init__(self, cfg: Any, env: Any):
        super().__init__(cfg, env)
        sensor = env.scene.sensors[cfg.params["sensor_cfg"].name]
        self.num_rays = int(sensor.num_rays)
        # The Warp observation manager reads a term's width from ``_descriptor.out_dim``.
        self._descriptor = GenericObservationIODescriptor(
            name="height_scan", description=type(self).__doc__, observation_type="SensorState", dtype="float32"
        )
        self._descriptor.out_dim = self.num_rays
        self._descriptor.extras = {"units": "m"}

    def __call__(self, env: Any, out: wp.array, sensor_cfg: Any, offset: float = 0.5) -> None:
        data = env.scene.sensors[sensor_cfg.name].data  # refreshes outdated rays, as the PyTorch term's read does
        wp.launch(
            _height_scan_kernel,
            dim=(env.num_envs, self.num_rays),
            inputs=[data.pos_w.warp, data.ray_hits_w.warp, float(offset)],
            outputs=[out],
            device=env.device,
        )


TWINS: dict[str, type] = {"isaaclab.envs.mdp.observations:height_scan": HeightScan}
"""PyTorch term (``module:name``) -> its Warp version; ``tasks.warp_frontend.register_twins`` makes the frontend
find them."""
