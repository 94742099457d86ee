"""Every override that the README, docs and config comments show on a `python train.py` line composes and
takes effect: the key it sets holds its value in the composed config (a group override selects its option).
An override that a clash or an interpolation silently overrides again fails here."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml
from omegaconf import OmegaConf

from rlforge_testing import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "conf").rglob("*.yaml"))]
OVERRIDE = re.compile(r"^[+~]?[A-Za-z_][\w.@/]*(=|$)")
# Groups whose options are selected by name; `+reward@task.rewards.x=term` adds a node from a group.
GROUPS = {"task", "algo", "launcher", "logger", "preset"}


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, overrides) of every `python train.py ...` line, continuation lines joined; values that stand
    for the reader's own (shell variables, <placeholders>, `...`) are left out."""
    commands = []
    for path in DOCUMENTS:
        text = re.sub(r"\\\n\s*#?\s*", " ", path.read_text())
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip("# ").startswith("$ "):  # a console transcript, e.g. of a refused override
                continue
            match = re.search(r"python (?:-m \S+ .*?-- )?train\.py((?: +[^`#|]+)?)", line.lstrip("# "))
            if not match:
                continue
            try:
                tokens = shlex.split(match.group(1))
            except ValueError:
                continue
            if "--cfg" in tokens or "--help" in tokens:
                continue
            # SageMaker and HyperPod submissions are sweeps without -m (their launcher config sets MULTIRUN).
            sweep = bool({"-m", "--multirun", "launcher=sagemaker", "launcher=hyperpod"} & set(tokens))
            overrides = []
            for token in tokens:
                if token.startswith("-") or not OVERRIDE.match(token) or "=" not in token and not token.startswith("~"):
                    continue
                if any(mark in token for mark in ("$", "<", ">", "...")) or re.search(r"=[A-Z]$", token):
                    continue
                if sweep and "," in token and "[" not in token:
                    token = token.split(",")[0]
                overrides.append(token)
            if overrides:
                commands.append((f"{path.relative_to(ROOT)}:{number}", overrides))
    return commands


COMMANDS = documented_commands()


def test_the_documents_show_commands():
    assert len(COMMANDS) >= 15, COMMANDS


@pytest.mark.parametrize(("where", "overrides"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_each_documented_override_takes_effect(compose_cfg, where, overrides, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # resume=<dir> and relative paths resolve here, not in the checkout
    resumable = [o for o in overrides if o.startswith("resume=") and o != "resume=true"]
    for override in resumable:  # a named run directory must exist to be resumed
        run_dir = tmp_path / override.split("=", 1)[1]
        run_dir.mkdir(parents=True)
        (run_dir / "manifest.json").write_text("{}")
    if "resume=true" in overrides:
        (tmp_path / "outputs" / "h1_rough" / "2026-01-01_00-00-00").mkdir(parents=True)
        (tmp_path / "outputs" / "h1_rough" / "2026-01-01_00-00-00" / "manifest.json").write_text("{}")
    cfg = compose_cfg(overrides, return_hydra_config=True)
    for override in overrides:
        key, _, value = override.partition("=")
        if key.startswith("~"):
            assert OmegaConf.select(cfg, key[1:]) is None, f"{where}: {override} left {key[1:]} in place"
            continue
        key = key.lstrip("+")
        if "@" in key:  # +group@path=option: the node at path exists
            assert OmegaConf.select(cfg, key.split("@", 1)[1]) is not None, f"{where}: {override} added nothing"
            continue
        if key in GROUPS:
            assert cfg.hydra.runtime.choices[key] == value, f"{where}: {override} did not select {value}"
            continue
        selected = OmegaConf.select(cfg, key, throw_on_missing=False)
        if OmegaConf.is_config(selected):
            selected = OmegaConf.to_container(selected, resolve=True)
        expected = yaml.safe_load(value)
        if key == "resume":
            assert str(selected).lower() == str(expected).lower(), f"{where}: {override} became {selected!r}"
        else:
            assert selected == expected or str(selected) == value, f"{where}: {override} became {selected!r}"
