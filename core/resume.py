"""Continuing a run: is the composed config the run's own, and which of its differences change what is learned."""

from __future__ import annotations

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
    "objective",
    "device",
    "task.objective",
    "task.kernels",
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


def check_resume(recorded: dict[str, Any], now: dict[str, Any], *, accept: bool, run_dir: str) -> dict[str, Any]:
    """Compare the run's recorded config with the one composed now.

    Returns ``{"learned": [...], "operational": [...]}`` (formatted differences). Raises :class:`ConfigChanged`
    listing the keys that change what is learned, unless ``accept``."""
    found = differences(recorded, now)
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
