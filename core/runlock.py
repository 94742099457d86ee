"""One writer per run directory: a lock held while a process trains in it.

The lock is an advisory ``flock`` on ``<run dir>/run.lock``, whose content names the holder (host, pid, Slurm
or SageMaker job). The kernel releases it when the holder's process dies however it dies, so a later process
takes it over; the content left behind by a holder that did not release it says who that was.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCK_FILE = "run.lock"


class RunLocked(RuntimeError):
    """Another live process trains in this run directory."""


def holder_identity(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Who this process is, as a second writer would want to read it: host, pid, start time, job ids."""
    env = os.environ if environ is None else environ
    identity: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    job = env.get("SLURM_JOB_ID")
    if job:
        array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
        identity["slurm_job_id"] = f"{array_job}_{array_task}" if array_job and array_task else job
    if env.get("TRAINING_JOB_NAME"):
        identity["sagemaker_job"] = env["TRAINING_JOB_NAME"]
    return identity


def describe(holder: dict[str, Any]) -> str:
    """``pid 123 on host-a (Slurm job 42) since 10:02:03``, from a holder record."""
    parts = [f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"]
    if holder.get("slurm_job_id"):
        parts.append(f"(Slurm job {holder['slurm_job_id']})")
    if holder.get("sagemaker_job"):
        parts.append(f"(SageMaker job {holder['sagemaker_job']})")
    if holder.get("since"):
        parts.append("since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder["since"]))))
    return " ".join(parts)


@dataclass
class RunLock:
    """The held lock of one run directory; ``previous`` is the record of a holder that died holding it."""

    path: Path
    fd: int
    previous: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def release(self) -> None:
        """Empty the holder record (a clean release) and drop the lock."""
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return {"unreadable": raw[:200].decode(errors="replace")}


def _is_held_elsewhere(error: OSError) -> bool:
    return error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def current_holder(run_dir: Path) -> dict[str, Any] | None:
    """The record of the process holding the run directory's lock now (an empty dict if it wrote none yet), or
    None when nobody holds it."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as error:
            if not _is_held_elsewhere(error):
                raise
            return _read_holder(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def acquire(run_dir: Path, identity: dict[str, Any] | None = None) -> RunLock:
    """Take the run directory's lock, or raise :class:`RunLocked` naming the live holder.

    A record left by a holder that died without releasing is reported in ``previous``: the lock is taken over.
    On a file system without ``flock`` (some NFS mounts) the run goes on unlocked, with a warning."""
    path = Path(run_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    warnings: list[str] = []
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if _is_held_elsewhere(error):
            holder = _read_holder(fd) or {}
            os.close(fd)
            raise RunLocked(
                f"run directory {run_dir} is in use: {describe(holder)} is training in it. Wait for that run to "
                "end or stop it, or start a new run (resume=false)."
            ) from None
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            warnings.append(
                f"the file system of {run_dir} does not support locks ({error.strerror}); a second process "
                "training in this run directory would not be refused"
            )
        else:
            os.close(fd)
            raise
    previous = _read_holder(fd)
    record = json.dumps(identity or holder_identity()).encode()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, record)
    os.fsync(fd)
    return RunLock(path=path, fd=fd, previous=previous, warnings=warnings)
