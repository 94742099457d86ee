"""A headless OpenGL context for MuJoCo's renderer: EGL (a GPU's driver or Mesa's software rasterizer) or OSMesa.

MuJoCo picks its context type from ``MUJOCO_GL`` once, when it is first imported, which the simulator does long
before a video is asked for; the context is therefore made here, explicitly, whatever that variable said then."""

from __future__ import annotations

import os

BACKENDS = ("egl", "osmesa")
"""Headless context types, chosen by ``MUJOCO_GL`` (default ``egl``)."""

INSTALL_HINT = (
    "Headless rendering needs EGL: on Debian/Ubuntu `apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri` "
    "(Mesa renders on the CPU); on an NVIDIA GPU the driver's EGL library (libEGL_nvidia, part of the driver; "
    "in containers, NVIDIA_DRIVER_CAPABILITIES must include graphics). Without EGL, OSMesa also works: "
    "`apt-get install libosmesa6` and set MUJOCO_GL=osmesa. docs/video.md has the details."
)


class RenderingUnavailable(RuntimeError):
    """No headless OpenGL context could be made; the message says what to install."""


def backend() -> str:
    """The context type to use: ``MUJOCO_GL`` when it names a headless one, else ``egl``."""
    requested = os.environ.get("MUJOCO_GL", "").strip().lower()
    return requested if requested in BACKENDS else "egl"


def open_context(width: int, height: int):
    """A current headless OpenGL context of at least ``width`` x ``height`` pixels (MuJoCo's ``GLContext``).

    Raises :class:`RenderingUnavailable` with what to install when none can be made."""
    kind = backend()
    try:
        if kind == "egl":
            from mujoco.egl import GLContext
        else:
            from mujoco.osmesa import GLContext
        context = GLContext(width, height)
        context.make_current()
    except Exception as error:  # PyOpenGL raises ImportError, OSError, AttributeError or its own errors
        platform = os.environ.get("PYOPENGL_PLATFORM")
        clash = f" (PYOPENGL_PLATFORM is {platform!r}; unset it or set it to {kind!r})" if platform else ""
        raise RenderingUnavailable(
            f"cannot open a headless OpenGL context with {kind}{clash}: {type(error).__name__}: {error}\n{INSTALL_HINT}"
        ) from error
    return context
