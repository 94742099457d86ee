"""Learners: rsl-rl's PPO runner, driven by this project's loop (checkpoints, resume, stop requests)."""

import importlib
import importlib.util
import sys
import types


class _ImportedAtFirstUse(types.ModuleType):
    """Stands in ``sys.modules`` for a module until one of its attributes is read, then imports the module there.

    The module's ``__file__`` and ``__spec__`` are answered without importing it, so scans
    of ``sys.modules`` (``inspect.getmodule``, which PyTorch runs while registering its operators) leave it alone.
    Every other attribute is read from the imported module each time, so values the module rebinds later (wandb's
    ``wandb.config`` after ``wandb.init``) are never stale."""

    def __getattr__(self, name: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def _defer_wandb() -> None:
    """rsl-rl imports wandb as it is imported (for its own wandb writer, which runs here never use), so every start
    paid for wandb (0.3-0.6 s of imports) whatever ``logger`` says. wandb stands in ``sys.modules`` instead until a
    run reads from it: with ``logger=wandb`` when the writer calls ``wandb.init``, otherwise never. Where wandb is not
    installed, or already imported, nothing changes."""
    if "wandb" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("wandb")
    except (ImportError, ValueError):
        return
    if spec is None:
        return
    module = _ImportedAtFirstUse("wandb")
    module.__spec__ = spec
    module.__loader__ = spec.loader
    module.__file__ = spec.origin
    sys.modules["wandb"] = module


_defer_wandb()
