"""Run directories: where a run lives, how `resume` finds it, and the manifest that reproduces it."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "checkpoints"
"""Folder of the run's checkpoints (``model_<iteration>.pt``, named by ``core.checkpoint``)."""
MANIFEST = "manifest.json"
"""What reproduces the run: code state, packages, machine, seed, device, command line (``build_manifest``)."""
CONFIG = "config.yaml"
"""The composed config of the run, resolved; a resume compares against it."""
OVERRIDES = "overrides.yaml"
"""The command-line overrides the run was started with; a relaunch starts from them."""
SUMMARY = "summary.json"
"""Written when the run ends: iterations, the final checkpoint, the objective."""
CONSOLE_LOG = "console.log"
"""A copy of what the run printed (every attempt appends): the run's log file."""
STARTUP_LOG = "startup.log"
"""What the simulator and the learner printed while the run started (with ``console=compact``): Isaac Lab's
manager tables, Warp's module loads, rsl-rl's network summary."""
EXPORTED = "exported"
"""Folder of the exported policy (TorchScript and ONNX)."""
METRICS = "metrics.jsonl"
"""One JSON line per completed iteration, written by the trainer on rank 0; each iteration once."""
METRICS_REDONE = "metrics.redone.jsonl"
"""Lines of iterations an attempt did past its last readable checkpoint, moved out of ``METRICS`` when a later
attempt resumed before them and did them again: lost work, kept for the run's accounting."""
# Packages whose versions decide what a run computes; recorded in every manifest.
TRACKED_PACKAGES = (
    "torch",
    "isaaclab",
    "rsl-rl-lib",
    "newton",
    "warp-lang",
    "mujoco",
    "mujoco-warp",
    "hydra-core",
    "omegaconf",
    "numpy",
    "submitit",
    "sagemaker-train",
    "wandb",
    "tensorboard",
)


SOURCE_SNAPSHOT_ENV = "RLFORGE_SOURCE_SNAPSHOT"
"""Set by a launcher that runs a copy of the source taken at submission: the folder of that copy."""
SOURCE_COMMIT_ENV = "RLFORGE_SOURCE_COMMIT"
"""With ``SOURCE_SNAPSHOT_ENV``: the commit the submitting work tree was on."""
SOURCE_DIRTY_ENV = "RLFORGE_SOURCE_DIRTY"
"""With ``SOURCE_SNAPSHOT_ENV``: 1 when the copy holds uncommitted changes, else 0."""


class ResumeError(ValueError):
    """``resume`` names nothing that can be continued."""


def resume_requested(resume: Any) -> bool:
    """Whether a ``resume`` value asks to continue a run (``true`` or a run directory), not to start one."""
    flag = _is_resume_flag(resume)
    return flag is None or flag


def latest_checkpoint(run_dir: str | os.PathLike) -> tuple[int, Path] | None:
    """The run's newest checkpoint with its iteration (``core.checkpoint``'s naming rule), or None."""
    from core.checkpoint import list_checkpoints

    found = list_checkpoints(Path(run_dir) / CHECKPOINT_DIR)
    return found[0] if found else None


def continuation_overrides(overrides: list[str], run_dir: str | os.PathLike) -> list[str]:
    """``overrides`` that continue ``run_dir`` when it already holds a checkpoint, else ``overrides`` unchanged.

    A restarted job (requeued, preempted, a replaced node, a new SageMaker job on the same checkpoint folder)
    starts from the overrides it was first given; the checkpoint on disk, not the job's history, decides
    whether it is a continuation, so every kind of restart resumes the same way.
    """
    if latest_checkpoint(run_dir) is None:
        return list(overrides)
    kept = [item for item in overrides if not item.split("=", 1)[0].lstrip("+~").startswith("resume")]
    return [*kept, f"resume={Path(run_dir).resolve()}"]


def _is_resume_flag(resume: Any) -> bool | None:
    """True/False for boolean-like values, None for a path."""
    if isinstance(resume, bool):
        return resume
    if resume is None:
        return False
    text = str(resume).strip().lower()
    if text in {"true", "yes", "1"}:
        return True
    if text in {"false", "no", "0", "", "none", "null"}:
        return False
    return None


def latest_run(output_root: str | os.PathLike, experiment: str) -> Path | None:
    """The newest run directory of an experiment that has a manifest, or None."""
    root = Path(output_root) / experiment
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file()]
    return max(runs, key=lambda p: p.name) if runs else None


def resolve_run_dir(output_root: str, experiment: str, resume: Any) -> str:
    """The run directory for ``hydra.run.dir``: the run being resumed, or a new timestamped folder."""
    flag = _is_resume_flag(resume)
    if flag is None:
        path = Path(str(resume)).expanduser()
        if not (path / MANIFEST).is_file():
            raise ResumeError(
                f"resume={resume}: no run directory there (no {MANIFEST}). "
                f"Give a folder under {output_root}/<experiment>/, or resume=true for the latest run."
            )
        return str(path.resolve())
    if flag:
        found = latest_run(output_root, experiment)
        if found is None:
            raise ResumeError(
                f"resume=true: experiment '{experiment}' has no earlier run under {output_root}/{experiment}. "
                "Start a new run (resume=false) or give resume=<run dir>."
            )
        return str(found.resolve())
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return str(Path(output_root) / experiment / stamp)


class GitError(RuntimeError):
    """git is missing, or the folder is not a usable work tree."""


def _git_checked(args: list[str], cwd: Path) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=True)
    except FileNotFoundError as error:
        raise GitError("git was not found; it is needed to record or copy the source") from error
    except subprocess.CalledProcessError as error:
        raise GitError(f"{cwd} is not a usable git work tree: {error.stderr.strip()}") from error
    except subprocess.TimeoutExpired as error:
        raise GitError(f"git {' '.join(args)} in {cwd} did not answer within 60 s") from error
    return out.stdout


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        return _git_checked(args, cwd)
    except GitError:
        return None


def work_tree_root(folder: Path) -> Path | None:
    """The root of the git work tree holding ``folder``, or None when there is none (or no git)."""
    top = _git(["rev-parse", "--show-toplevel"], Path(folder))
    return Path(top.strip()).resolve() if top else None


def commit_and_dirty(root: Path) -> tuple[str, bool]:
    """The commit the work tree is on (``none`` before the first commit) and whether any file differs from it
    (modified, deleted or untracked and not ignored).

    Raises:
        GitError: git is missing or ``root`` is not a work tree.
    """
    status = _git_checked(["status", "--porcelain"], root)
    commit = (_git(["rev-parse", "HEAD"], root) or "none").strip()
    return commit, bool(status.strip())


def source_files(root: Path) -> list[str]:
    """Paths, relative to the work tree ``root``, of the files git tracks or would track: untracked files that
    .gitignore does not exclude are included (a new module ships before it is committed); ignored outputs,
    environments and caches are not, nor tracked files deleted from the work tree.

    Raises:
        GitError: git is missing or ``root`` is not a work tree.
    """
    listing = _git_checked(["ls-files", "--cached", "--others", "--exclude-standard", "-z"], root)
    names = sorted({name for name in listing.split("\0") if name})
    return [name for name in names if (root / name).is_file() or (root / name).is_symlink()]


def git_state(repo: Path) -> dict[str, Any]:
    """Commit, branch and uncommitted diff (tracked and untracked files) of the project's checkout."""
    commit = _git(["rev-parse", "HEAD"], repo)
    if commit is None:
        return {"commit": None, "dirty": None, "diff": None}
    diff = _git(["diff", "HEAD", "--no-color"], repo) or ""
    untracked = (_git(["ls-files", "--others", "--exclude-standard"], repo) or "").split()
    return {
        "commit": commit.strip(),
        "branch": (_git(["rev-parse", "--abbrev-ref", "HEAD"], repo) or "").strip(),
        "dirty": bool(diff or untracked),
        "diff": diff,
        "untracked": untracked,
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide what a run computes."""
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def project_root() -> Path:
    """The checkout this code runs from."""
    return Path(__file__).resolve().parent.parent


def source_state(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The code a run executes: the snapshot a launcher took at submission (its folder, the commit and whether it
    held uncommitted changes), else the git state of this checkout."""
    env = os.environ if environ is None else environ
    snapshot = env.get(SOURCE_SNAPSHOT_ENV)
    if not snapshot:
        return {"git": git_state(project_root())}
    # The copy is no work tree of its own (git would answer for whatever repository holds the folder).
    commit = env.get(SOURCE_COMMIT_ENV) or None
    dirty = env.get(SOURCE_DIRTY_ENV)
    return {
        "git": {"commit": commit, "dirty": None if dirty is None else dirty == "1", "diff": None},
        "source_snapshot": {"path": snapshot, "commit": commit, "dirty": dirty == "1"},
    }


def build_manifest(*, seed: int, device: str, launcher: str, overrides: list[str]) -> dict[str, Any]:
    """What reproduces a run: code state, packages, machine, seed, device and command line."""
    return {
        **source_state(),
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv],
        "overrides": overrides,
        "cwd": os.getcwd(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "seed": seed,
        "device": device,
        "launcher": launcher,
    }


def writer_tag() -> str:
    """This process among all writers of a folder, a shared file system's included: its host and process id (two
    nodes can run processes of one id)."""
    return f"{socket.gethostname()}.{os.getpid()}"


def write_npz_atomic(path: Path, arrays: dict[str, Any]) -> None:
    """Write ``arrays`` as one NumPy ``.npz`` file (creating its folder) that a reader sees whole or not at all;
    raises OSError where the folder cannot take it."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file so that a reader sees either the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{writer_tag()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write text so that a reader sees either the old file or the whole new one."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that a reader sees either the old file or the whole new one."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=str))
