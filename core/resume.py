"""Continuing a run: is the composed config the run's own, and which of its differences change what is learned."""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any

# Keys a resumed run may change freely: how long it runs, how often it saves, where it runs and logs, how fast
# its loop goes. Anything else changes the problem or the learner, and a resume with such a change is refused
# unless `accept_config_change=true` is given. A key matches itself and everything under it.
OPERATIONAL_KEYS = (
    "algo.max_iterations",
    "algo.save_interval",
    "algo.keep_checkpoints",
    "algo.check_for_nan",
    "algo.speed",
    "logger",
    "launcher",
    "resume",
    "accept_config_change",
    "summary",
    "output_root",
    "experiment",
    "warp_cache_dir",
    "cache_dir",
    "objective",
    "device",
    "task.objective",
    "task.kernels",
    "task.terrain.solver_stand_in",
)


def differences(recorded: Any, now: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, recorded value, value now) for every key whose value differs between two plain configs;
    a key missing on one side has the value ``"(absent)"`` there."""
    if isinstance(recorded, dict) and isinstance(now, dict):
        found: list[tuple[str, Any, Any]] = []
        for key in sorted(set(recorded) | set(now), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in recorded:
                found.append((where, "(absent)", now[key]))
            elif key not in now:
                found.append((where, recorded[key], "(absent)"))
            else:
                found += differences(recorded[key], now[key], where)
        return found
    return [] if recorded == now else [(path, recorded, now)]


def config_differences(recorded: Any, now: Any) -> list[str]:
    """``key: old -> new`` lines for every differing key of two plain configs."""
    return [format_difference(*item) for item in differences(recorded, now)]


def format_difference(key: str, recorded: Any, now: Any) -> str:
    def shown(value: Any) -> str:
        return value if value == "(absent)" else repr(value)

    return f"{key}: {shown(recorded)} -> {shown(now)}"


def is_operational(key: str) -> bool:
    """Whether changing ``key`` leaves what the run learns as it was."""
    return any(key == allowed or key.startswith(allowed + ".") for allowed in OPERATIONAL_KEYS)


class ConfigChanged(ValueError):
    """A resume whose composed config changes what the run learns."""


def schema_default(dotted: str, schema: type | None = None) -> Any:
    """The default that the typed schemas give ``dotted`` (e.g. ``task.frontend``), as a plain value, or
    ``MISSING_DEFAULT`` where no schema field with a plain default is found (a dict entry, a required field)."""
    from core.config import TrainConfig

    node: Any = schema or TrainConfig
    for part in dotted.split("."):
        cls = node if isinstance(node, type) else type(node)
        if not dataclasses.is_dataclass(cls):
            return MISSING_DEFAULT
        field = {f.name: f for f in dataclasses.fields(cls)}.get(part)
        if field is None:
            return MISSING_DEFAULT
        hint = typing.get_type_hints(cls).get(part)
        if field.default_factory is not dataclasses.MISSING:
            node = field.default_factory()
        elif field.default is not dataclasses.MISSING and field.default != "???":
            node = field.default
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
            node = hint  # a sub-schema without a default of its own (config group): its fields' defaults
        else:
            return MISSING_DEFAULT
    if isinstance(node, type) or dataclasses.is_dataclass(node):
        return MISSING_DEFAULT
    return node.value if isinstance(node, enum.Enum) else node


MISSING_DEFAULT = object()
"""What :func:`schema_default` returns where the schemas give no default."""


def added_with_default(key: str, recorded: Any, now: Any) -> bool:
    """A setting that did not exist when the run was recorded and holds its schema default now: the run trained
    with what that default keeps (new settings default to the earlier behaviour), so it changes nothing."""
    if recorded != "(absent)":
        return False
    default = schema_default(key)
    return default is not MISSING_DEFAULT and default == now


def check_resume(recorded: dict[str, Any], now: dict[str, Any], *, accept: bool, run_dir: str) -> dict[str, Any]:
    """Compare the run's recorded config with the one composed now.

    Returns ``{"learned": [...], "operational": [...]}`` (formatted differences). Raises :class:`ConfigChanged`
    listing the keys that change what is learned, unless ``accept``. A setting added to the schemas since the run
    was recorded, at its default, is not a difference (:func:`added_with_default`)."""
    found = [item for item in differences(recorded, now) if not added_with_default(*item)]
    learned = [format_difference(*item) for item in found if not is_operational(item[0])]
    operational = [format_difference(*item) for item in found if is_operational(item[0])]
    if learned and not accept:
        listing = "\n  ".join(learned)
        raise ConfigChanged(
            f"resume of {run_dir} refused: the composed config changes what this run learns:\n  {listing}\n"
            "Resume with the run's own settings (drop these overrides), start a new run (resume=false), or pass "
            "accept_config_change=true to continue with the change (it is recorded in the run's ledger)."
        )
    return {"learned": learned, "operational": operational}
