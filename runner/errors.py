"""Turn a failed composition into a message that names the valid choices."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

_CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
_TERM_OVERRIDE = re.compile(r"^[~+]*task\.(rewards|events)\.([^.=]+)")


def known_terms(task_name: str, kind: str) -> list[str]:
    """Reward or event names that ``conf/task/<task_name>.yaml`` defines (after its defaults)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from runner.setup import register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(_CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"task={task_name}"])
    GlobalHydra.instance().clear()
    return sorted(cfg.task[kind].keys())


def hint_for(argv: list[str]) -> str | None:
    """A hint for overrides that name a reward or event term the chosen task does not have."""
    task_name = next((a.split("=", 1)[1] for a in argv if a.startswith("task=")), "h1_rough")
    for arg in argv:
        match = _TERM_OVERRIDE.match(arg)
        if not match or arg.startswith("+"):
            continue
        kind, name = match.groups()
        try:
            valid = known_terms(task_name, kind)
        except Exception:  # the task itself may be the unknown part; Hydra's message covers that
            return None
        if name not in valid:
            return (
                f"task '{task_name}' has no {kind[:-1]} term '{name}'. Valid {kind}: {', '.join(valid)}.\n"
                f"To add a new reward term: +reward@task.rewards.{name}=term "
                f"task.rewards.{name}.func=module:function task.rewards.{name}.weight=1.0"
            )
    return None


@contextlib.contextmanager
def explain_failed_composition() -> Iterator[None]:
    """Add a hint naming the valid terms when Hydra exits on a bad override."""
    try:
        yield
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            hint = hint_for(sys.argv[1:])
            if hint:
                print(hint, file=sys.stderr)
        raise
