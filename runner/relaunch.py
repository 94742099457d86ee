"""Start a run again with the exact config of an earlier one, here or through another launcher.

    python scripts/relaunch.py outputs/h1_rough/2026-11-24_10-00-00
    python scripts/relaunch.py outputs/h1_rough/2026-11-24_10-00-00 launcher=hyperpod launcher.nodes=2
    python scripts/relaunch.py <run> --allow-drift      # code or packages changed since: relaunch anyway
    python scripts/relaunch.py <run> --dry-run          # show the drift and the command, run nothing

The run's saved overrides (overrides.yaml) are composed again and checked against its resolved config
(config.yaml); the checkout's git commit, uncommitted changes and package versions are compared with its
manifest.json. Any difference is drift: the relaunch is refused, or with --allow-drift carried out and the
drift written into the new run's ledger (a ``relaunch`` event). Extra overrides replace saved ones of the
same key; train.py is then started with the result, from the directory the original run was started in.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from core import ledger
from core.resume import config_differences
from core.rundir import MANIFEST, git_state, package_versions, project_root
from runner.compose import compose_config

EXIT_DRIFT = 3


def override_key(override: str) -> str:
    """The key an override sets: ``task.num_envs`` of ``task.num_envs=8``, ``task`` of ``task=toy``."""
    key = override.split("=", 1)[0]
    return key.lstrip("+~")


def merge_overrides(saved: list[str], extra: list[str]) -> list[str]:
    """The saved overrides, less ``resume`` (a relaunch is a new run), with ``extra`` replacing same-key ones."""
    replaced = {override_key(o) for o in extra}
    kept = [o for o in saved if override_key(o) != "resume" and override_key(o) not in replaced]
    return [*kept, *extra]


def compose(overrides: list[str], project: Path | None = None) -> dict[str, Any]:
    """The resolved config that ``train.py`` of ``project`` (default: this checkout) would run with."""
    from omegaconf import OmegaConf

    cfg = compose_config(overrides, (project or project_root()) / "conf")
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def code_drift(
    manifest: dict[str, Any], current_git: dict[str, Any], current_packages: dict[str, Any], python: str
) -> list[dict[str, Any]]:
    """What differs between the code and packages the run used and those of this checkout."""
    drift: list[dict[str, Any]] = []
    recorded_git = manifest.get("git") or {}
    if recorded_git.get("commit") != current_git.get("commit"):
        drift.append({"what": "git commit", "recorded": recorded_git.get("commit"), "now": current_git.get("commit")})
    if (recorded_git.get("diff") or "") != (current_git.get("diff") or ""):
        drift.append(
            {
                "what": "uncommitted changes",
                "recorded": _changed_files(recorded_git.get("diff") or ""),
                "now": _changed_files(current_git.get("diff") or ""),
            }
        )
    if sorted(recorded_git.get("untracked") or []) != sorted(current_git.get("untracked") or []):
        drift.append(
            {
                "what": "untracked files",
                "recorded": sorted(recorded_git.get("untracked") or []),
                "now": sorted(current_git.get("untracked") or []),
            }
        )
    recorded_packages = manifest.get("packages") or {}
    for name in sorted(set(recorded_packages) | set(current_packages)):
        if recorded_packages.get(name) != current_packages.get(name):
            drift.append(
                {"what": f"package {name}", "recorded": recorded_packages.get(name), "now": current_packages.get(name)}
            )
    if manifest.get("python") and manifest["python"] != python:
        drift.append({"what": "python", "recorded": manifest["python"], "now": python})
    return drift


def _changed_files(diff: str) -> list[str]:
    return [line.split(" b/", 1)[1] for line in diff.splitlines() if line.startswith("diff --git ") and " b/" in line]


def describe(drift: list[dict[str, Any]]) -> str:
    """The drift as indented lines: what, as recorded -> as now."""
    return "\n".join(f"  {item['what']}: {item['recorded']} -> {item['now']}" for item in drift)


def relaunch(
    run_dir: Path,
    extra: list[str],
    *,
    allow_drift: bool = False,
    dry_run: bool = False,
    cwd: Path | None = None,
    project: Path | None = None,
) -> int:
    """Check for drift, then start train.py with the run's overrides plus ``extra``; returns its exit code.

    ``project`` is the checkout whose ``train.py``, ``conf/`` and git state the relaunch uses (default: the one this
    code runs from)."""
    from omegaconf import OmegaConf

    project = Path(project).resolve() if project else project_root()
    run_dir = Path(run_dir).resolve()
    if not (run_dir / MANIFEST).is_file() or not (run_dir / "overrides.yaml").is_file():
        print(f"{run_dir} is not a run directory (it needs {MANIFEST} and overrides.yaml)", file=sys.stderr)
        return 2
    manifest = json.loads((run_dir / MANIFEST).read_text())
    saved = [str(o) for o in OmegaConf.load(run_dir / "overrides.yaml") or []]

    drift = code_drift(manifest, git_state(project), package_versions(), platform.python_version())
    # The saved overrides alone must give back the saved config; a change of conf/ defaults shows here.
    same_overrides = merge_overrides(saved, [])
    if (run_dir / "config.yaml").is_file():
        recorded = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=False)
        differences = config_differences(recorded, compose(same_overrides, project))
        if differences:
            drift.append({"what": "composed config", "recorded": "config.yaml", "now": differences})
    overrides = merge_overrides(saved, extra)
    compose(overrides, project)  # a bad extra override fails here, before anything starts

    command = [sys.executable, str(project / "train.py"), *overrides]
    workdir = Path(cwd) if cwd else Path(manifest.get("cwd") or os.getcwd())
    if not workdir.is_dir():
        workdir = Path.cwd()
    print(f"relaunching {run_dir}")
    print(f"  overrides  {' '.join(overrides) or '(none)'}")
    print(f"  from       {workdir}")
    if drift:
        print(f"drift since the run was made:\n{describe(drift)}", file=sys.stderr)
        if not allow_drift:
            print(
                "refusing to relaunch: the new run would not be the same. Commit or undo the changes, or pass "
                "--allow-drift to relaunch anyway (the drift is then recorded in the new run's ledger).",
                file=sys.stderr,
            )
            return EXIT_DRIFT
    else:
        print("  no drift: same commit, same uncommitted changes, same packages, same composed config")
    if dry_run:
        print("  command    " + " ".join(command))
        return 0
    note = {"source": str(run_dir), "extra_overrides": extra, "drift": drift, "allowed_drift": bool(drift)}
    env = {**os.environ, ledger.RELAUNCH_ENV: json.dumps(note, default=str)}
    return subprocess.call(command, cwd=workdir, env=env)


def main(argv: list[str] | None = None, project: Path | None = None) -> int:
    """The command line; ``project`` is the checkout to relaunch from (default: the one this code runs from)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the run to start again")
    parser.add_argument("overrides", nargs="*", help="extra overrides, e.g. launcher=hyperpod")
    parser.add_argument(
        "--allow-drift",
        action="store_true",
        help="relaunch even if code, packages or config differ; the drift goes into the ledger",
    )
    parser.add_argument("--dry-run", action="store_true", help="check and print the command, start nothing")
    parser.add_argument("--cwd", type=Path, help="start train.py here (default: where the original run started)")
    args = parser.parse_args(argv)
    return relaunch(
        args.run_dir, args.overrides, allow_drift=args.allow_drift, dry_run=args.dry_run, cwd=args.cwd, project=project
    )
