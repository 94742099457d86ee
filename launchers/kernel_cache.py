"""Warp's compiled kernels shared between jobs: fetched into a job's kernel cache before it trains, new ones written
back after its first iteration and when it ends.

A store is an S3 prefix (`s3://bucket/prefix`) or a folder (`file:///path`, or a plain path). Under it, one folder
per key, the key naming what decides which kernels a run builds (`cache_key`):

    <store>/<warp-lang-V_newton-V_mujoco-warp-V_isaaclab-V>/<sm90|cpu>-<machine>/<Warp module folder>/<files>

A key's folder mirrors Warp's versioned cache folder, `<warp_cache_dir>/<warp version>/`: one folder per module,
named by the hash of the module's code and build options, holding the source, the binary (`.o` on the CPU, `.ptx` or
`.cubin` for a GPU architecture) and a `.meta` file. Warp loads a module from its cache only when the binary and the
`.meta` file are both there, and compiles it otherwise.

Consistency without locks: every file is written whole (an S3 PUT is atomic; in a folder, a temporary file is
renamed into place), a module folder's `.meta` file after its other files, and a reader takes a module folder only
once its `.meta` file is listed. A reader therefore never takes half a module, and a writer that dies midway leaves a
folder that readers skip and a later writer completes. Two jobs that compile the same module produce the same names,
so concurrent writers of a sweep only write a file twice. Only files not already in the store are written; nothing is
ever deleted or overwritten.

    python -m launchers.kernel_cache key -- device=cpu                 # the key this machine would use
    python -m launchers.kernel_cache bake --to s3://bucket/rlforge/kernel-cache -- task=h1_rough
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.rundir import writer_tag

KEY_PACKAGES = ("warp-lang", "newton", "mujoco-warp", "isaaclab")
"""Packages whose versions decide which kernels a run builds: Warp (code generation and compilers) and the packages
that define the simulator's kernels. Kernels of other packages' versions simply do not match and are built again."""

TRANSFER_WORKERS = 16
"""Files moved at once; a cache holds hundreds of small files, so requests in flight matter more than bandwidth."""

META_SUFFIX = ".meta"
"""Warp's per-module metadata file; its presence marks a module folder as complete."""

MODULE_PREFIX = "wp_"
"""Warp names every module folder of its cache with this prefix."""

FIRST_ITERATION_POLL_S = 1.0
"""How often the run's ledger is read for its `first_iteration` event."""

_BUILD_FOLDER = re.compile(r"_p\d+_t\d+$")
"""Warp builds a module in `<module folder>_p<pid>_t<thread>` and then renames it: work in progress, never shared."""

_KEY_TEXT = re.compile(r"[^A-Za-z0-9._-]+")


class KernelCacheError(RuntimeError):
    """The store cannot be used (bad address, no permission, no bucket); the job goes on without it."""


# --------------------------------------------------------------------------------------
# The key: what decides which kernels a run builds.
# --------------------------------------------------------------------------------------


def package_versions(packages: Sequence[str] = KEY_PACKAGES) -> dict[str, str]:
    """Installed version of each package (`none` when absent), read from package metadata without importing it."""
    from importlib import metadata

    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "none"
    return versions


def warp_version() -> str:
    """The name of the versioned folder Warp keeps its kernels in (`warp.config.version`), read without importing
    Warp (whose import loads its native library)."""
    import importlib.util

    spec = importlib.util.find_spec("warp")
    if spec is not None and spec.origin:
        config = Path(spec.origin).with_name("config.py")
        if config.is_file():
            match = re.search(r'^version\s*(?::\s*str)?\s*=\s*"([^"]+)"', config.read_text(), re.MULTILINE)
            if match:
                return match.group(1)
    return package_versions(("warp-lang",))["warp-lang"]


def arch_of_compute_capabilities(text: str) -> str | None:
    """`sm90` from nvidia-smi's `compute_cap` column (`9.0` per GPU); several kinds joined (`sm80-sm90`); None if none."""
    found = {line.strip() for line in text.splitlines() if re.fullmatch(r"\d+\.\d+", line.strip())}
    ordered = sorted(found, key=lambda cap: tuple(int(part) for part in cap.split(".")))
    return "-".join("sm" + cap.replace(".", "") for cap in ordered) or None


def gpu_arch(nvidia_smi: str = "nvidia-smi") -> str | None:
    """The architecture of this machine's GPUs from `nvidia-smi` (no CUDA library is loaded), or None without one."""
    try:
        answer = subprocess.run(
            [nvidia_smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return arch_of_compute_capabilities(answer.stdout) if answer.returncode == 0 else None


def requested_device(overrides: Sequence[str]) -> str | None:
    """The value of the run's last `device=` override, or None."""
    device = None
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "device":
            device = value.strip()
    return device


def device_arch(overrides: Sequence[str], nvidia_smi: str = "nvidia-smi") -> str:
    """What the run compiles for: `cpu` when it is told `device=cpu` or the machine has no GPU, else the GPU's
    architecture (`sm90`)."""
    device = requested_device(overrides)
    if device is not None and device.startswith("cpu"):
        return "cpu"
    return gpu_arch(nvidia_smi) or "cpu"


def cache_key(versions: Mapping[str, str], arch: str, machine: str | None = None) -> str:
    """`<package>-<version>_..._<package>-<version>/<arch>-<machine>`: one folder per software stack, one per target.

    The machine (`x86_64`, `aarch64`) is part of it because a GPU run also builds some modules for the CPU."""
    stack = "_".join(f"{name}-{version}" for name, version in versions.items())
    target = f"{arch}-{machine or platform.machine() or 'unknown'}"
    return f"{_KEY_TEXT.sub('-', stack)}/{_KEY_TEXT.sub('-', target)}"


# --------------------------------------------------------------------------------------
# Stores: an S3 prefix or a folder.
# --------------------------------------------------------------------------------------


def _copy_atomically(source: Path, target: Path) -> None:
    """Copy through a temporary file in the target's folder renamed into place: the target appears whole or not."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{writer_tag()}.{threading.get_ident()}.part")
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _write_atomically(data: bytes, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{writer_tag()}.{threading.get_ident()}.part")
    try:
        partial.write_bytes(data)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


class FolderStore:
    """A store in a folder (local, or a mounted shared file system). An absent folder is an empty store."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __str__(self) -> str:
        return f"file://{self.root}"

    def list(self) -> dict[str, int]:
        """Every complete file by its path relative to the store, with its size in bytes."""
        if self.root.exists() and not self.root.is_dir():
            raise KernelCacheError(f"{self.root} is not a folder")
        return local_files(self.root)

    def get(self, relative: str, destination: Path) -> int:
        """Copy one file out of the store; returns its size."""
        _copy_atomically(self.root / relative, destination)
        return destination.stat().st_size

    def put(self, source: Path, relative: str) -> int:
        """Copy one file into the store; returns its size."""
        _copy_atomically(source, self.root / relative)
        return source.stat().st_size


class S3Store:
    """A store under an S3 prefix. boto3 is imported when the store is opened."""

    def __init__(self, bucket: str, prefix: str, client: Any = None, workers: int = TRANSFER_WORKERS) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client if client is not None else s3_client(workers)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def list(self) -> dict[str, int]:
        """Every object under the prefix by its path relative to it, with its size in bytes."""
        found = {}
        start = f"{self.prefix}/" if self.prefix else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", []):
                relative = item["Key"][len(start) :]
                if relative and not relative.endswith("/"):
                    found[relative] = int(item["Size"])
        return found

    def get(self, relative: str, destination: Path) -> int:
        """Download one object into a temporary file renamed into place; returns its size."""
        data = self.client.get_object(Bucket=self.bucket, Key=self._key(relative))["Body"].read()
        _write_atomically(data, destination)
        return len(data)

    def put(self, source: Path, relative: str) -> int:
        """Upload one file (one PUT: the object appears whole); returns its size."""
        data = source.read_bytes()
        self.client.put_object(Bucket=self.bucket, Key=self._key(relative), Body=data)
        return len(data)


def s3_client(workers: int = TRANSFER_WORKERS):
    """An S3 client of the default credential chain (a job's role) with room for `workers` requests at once and
    bounded retries, so that an unreachable store fails in seconds rather than holding the job."""
    import boto3
    from botocore.config import Config

    config = Config(
        max_pool_connections=workers + 4,
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client("s3", config=config)


def open_store(source: str, key: str, workers: int = TRANSFER_WORKERS) -> FolderStore | S3Store:
    """The store of `key` under `source`: `s3://bucket/prefix`, `file:///folder` or a folder path."""
    if source.startswith("s3://"):
        match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?", source)
        if not match:
            raise KernelCacheError(f"not an S3 URI of the form s3://bucket/prefix: {source!r}")
        prefix = "/".join(part for part in ((match.group(2) or "").strip("/"), key) if part)
        return S3Store(match.group(1), prefix, workers=workers)
    if "://" in source and not source.startswith("file://"):
        raise KernelCacheError(f"a kernel cache is an s3:// URI, a file:// URI or a folder, not {source!r}")
    return FolderStore(Path(source.removeprefix("file://")).expanduser() / key)


# --------------------------------------------------------------------------------------
# What moves: complete entries, files not at the destination yet, `.meta` files last.
# --------------------------------------------------------------------------------------


def local_files(folder: Path) -> dict[str, int]:
    """Files of a kernel cache folder by path relative to it, with their sizes, less Warp's builds in progress and
    this module's partial files (names starting with a dot)."""
    folder = Path(folder)
    found: dict[str, int] = {}
    if not folder.is_dir():
        return found
    for root, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not _BUILD_FOLDER.search(name) and not name.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            path = Path(root) / name
            try:
                found[path.relative_to(folder).as_posix()] = path.stat().st_size
            except OSError:
                continue  # removed while walking
    return found


def entry_of(relative: str) -> str:
    """The entry (top-level folder: a Warp module, or Warp's `lto` folder) a file belongs to."""
    return relative.split("/", 1)[0]


def complete_entries(files: Iterable[str]) -> set[str]:
    """Entries a reader may take: a Warp module folder once it holds a `.meta` file; another folder (Warp's LTO
    cache, whose files Warp writes one by one by rename) as it is. Files outside a folder are no entry."""
    has_meta: dict[str, bool] = {}
    for relative in files:
        if "/" not in relative:
            continue
        entry = entry_of(relative)
        has_meta[entry] = has_meta.get(entry, False) or relative.endswith(META_SUFFIX)
    return {entry for entry, meta in has_meta.items() if meta or not entry.startswith(MODULE_PREFIX)}


@dataclass
class Transfer:
    """What one fetch (store to folder) or upload (folder to store) did."""

    direction: str
    """`fetch` or `upload`."""
    store: str
    """The store's address, key included."""
    entries: int = 0
    """Complete entries at the source: in the store (fetch) or in the local cache (upload)."""
    already_there: int = 0
    """Of those, entries the destination already held in full."""
    moved: int = 0
    """Entries of which at least one file was moved."""
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    """Why the transfer stopped short, or None."""
    moved_files: list[str] = field(default_factory=list)
    """Relative paths moved, in the order they completed."""

    def fields(self) -> dict[str, Any]:
        """The figures as a ledger event's fields."""
        figures = {
            "store": self.store,
            "entries": self.entries,
            "already_there": self.already_there,
            "moved": self.moved,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }
        if self.error is not None:
            figures["error"] = self.error
        return figures

    def describe(self) -> str:
        """One line for the job's log."""
        if self.direction == "fetch":
            text = f"{self.entries} entries found, {self.already_there} already here, {self.moved} fetched"
        else:
            text = f"{self.entries} local entries, {self.already_there} already shared, {self.moved} uploaded"
        text += f" ({self.files} files, {self.bytes / 1e6:.1f} MB) in {self.seconds:.1f} s"
        return text + (f"; stopped: {self.error}" if self.error else "")


class TransferCancelled(RuntimeError):
    """A stop was asked for while files were moving."""


def _move(
    action: Callable[[str], int],
    relatives: Sequence[str],
    workers: int,
    cancelled: Callable[[], bool] | None,
    transfer: Transfer,
) -> None:
    """Run `action` on every relative path, `workers` at a time: every other file first, then the `.meta` files, so
    that an entry becomes complete at the destination only once everything else of it is there."""
    halt = threading.Event()

    def one(relative: str) -> tuple[str, int]:
        if halt.is_set():
            raise TransferCancelled("stopped")
        return relative, action(relative)

    waves = [
        [relative for relative in relatives if not relative.endswith(META_SUFFIX)],
        [relative for relative in relatives if relative.endswith(META_SUFFIX)],
    ]
    for wave in waves:
        if not wave:
            continue
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(wave)))) as pool:
            pending = {pool.submit(one, relative) for relative in wave}
            try:
                while pending:
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                    for future in done:
                        relative, size = future.result()
                        transfer.moved_files.append(relative)
                        transfer.files += 1
                        transfer.bytes += size
                    if cancelled is not None and cancelled():
                        raise TransferCancelled("a stop was asked for")
            except BaseException:
                halt.set()
                for future in pending:
                    future.cancel()
                raise


def fetch(
    store: FolderStore | S3Store,
    folder: Path,
    workers: int = TRANSFER_WORKERS,
    cancelled: Callable[[], bool] | None = None,
) -> Transfer:
    """Copy the store's complete entries that `folder` lacks into it, file by file (only files not there yet).

    Whatever stops it (no permission, no bucket, a stop asked for) is in the result's `error`; what was fetched by
    then is whole files only, `.meta` files after the rest."""
    transfer = Transfer("fetch", str(store))

    def plan() -> list[str]:
        remote = store.list()
        entries = complete_entries(remote)
        local = local_files(folder)
        missing = [relative for relative in sorted(remote) if entry_of(relative) in entries and relative not in local]
        transfer.entries = len(entries)
        transfer.already_there = len(entries - {entry_of(relative) for relative in missing})
        return missing

    return _run(transfer, plan, lambda relative: store.get(relative, Path(folder) / relative), workers, cancelled)


def upload_new(
    store: FolderStore | S3Store,
    folder: Path,
    workers: int = TRANSFER_WORKERS,
    cancelled: Callable[[], bool] | None = None,
) -> Transfer:
    """Write the complete entries of `folder` that the store lacks, file by file (only files not there yet), each
    module's `.meta` file after its other files. Module folders without a `.meta` file (still being built) wait for
    the next upload. Whatever stops it is in the result's `error`."""
    transfer = Transfer("upload", str(store))

    def plan() -> list[str]:
        local = local_files(folder)
        entries = complete_entries(local)
        remote = store.list()
        new = [relative for relative in sorted(local) if entry_of(relative) in entries and relative not in remote]
        transfer.entries = len(entries)
        transfer.already_there = len(entries - {entry_of(relative) for relative in new})
        return new

    return _run(transfer, plan, lambda relative: store.put(Path(folder) / relative, relative), workers, cancelled)


def _run(
    transfer: Transfer,
    plan: Callable[[], list[str]],
    action: Callable[[str], int],
    workers: int,
    cancelled: Callable[[], bool] | None,
) -> Transfer:
    """List what to move (`plan`), move it, and fill in the figures, an error included."""
    started = time.monotonic()
    try:
        _move(action, plan(), workers, cancelled, transfer)
    except Exception as error:  # noqa: BLE001 - reported to the caller in the result
        transfer.error = f"{type(error).__name__}: {error}"[:500]
    finally:
        transfer.moved = len({entry_of(relative) for relative in transfer.moved_files})
        transfer.seconds = time.monotonic() - started
    return transfer


# --------------------------------------------------------------------------------------
# One job's shared kernel cache, as the SageMaker entry runs it.
# --------------------------------------------------------------------------------------


class SharedKernels:
    """A job's side of the shared kernel cache: fetch before training, write back after the first iteration and at
    the end. Nothing here raises: a store that cannot be used is reported and the job trains without it.

    `record(event, **fields)` writes a ledger event (a no-op where this instance holds no run directory)."""

    def __init__(
        self,
        source: str,
        cache_root: Path,
        overrides: Sequence[str],
        record: Callable[..., None],
        log: Callable[[str], None] = print,
        workers: int = TRANSFER_WORKERS,
    ) -> None:
        self.source = source
        self.folder = Path(cache_root) / warp_version()
        self.key = cache_key(package_versions(), device_arch(overrides))
        self.record = record
        self.log = log
        self.workers = workers
        self.store: FolderStore | S3Store | None = None
        self._done = threading.Event()
        """Set when the training processes have ended: the watcher stops waiting for a first iteration."""
        self._abort = threading.Event()
        """Set by a stop signal: transfers under way stop after the files in flight."""
        self._watcher: threading.Thread | None = None
        self._upload_lock = threading.Lock()

    def _open(self) -> FolderStore | S3Store:
        if self.store is None:
            self.store = open_store(self.source, self.key, self.workers)
        return self.store

    def fetch(self, cancelled: Callable[[], bool] | None = None) -> Transfer | None:
        """Bring the store's kernels that the local cache lacks; None when the store could not be used (what was
        fetched before the failure is kept and recorded)."""
        return self._transfer("fetch", "kernel_cache_fetch", {"folder": str(self.folder)}, fetch, cancelled)

    def upload(self, when: str, cancelled: Callable[[], bool] | None = None) -> Transfer | None:
        """Write back the local cache's entries the store lacks; `when` (`first_iteration`, `exit`) goes into the
        ledger event. None when the store could not be used."""
        with self._upload_lock:
            return self._transfer(f"upload ({when})", "kernel_cache_upload", {"when": when}, upload_new, cancelled)

    def _transfer(
        self,
        what: str,
        event: str,
        fields: dict[str, Any],
        move: Callable[..., Transfer],
        cancelled: Callable[[], bool] | None,
    ) -> Transfer | None:
        try:
            transfer = move(self._open(), self.folder, self.workers, cancelled)
        except Exception as error:  # noqa: BLE001 - an unusable store (address, credentials) leaves the job as it is
            transfer = Transfer(what.split()[0], self.source, error=f"{type(error).__name__}: {error}"[:500])
        arrow = f"{transfer.store} -> {self.folder}" if transfer.direction == "fetch" else f"-> {transfer.store}"
        self.log(f"kernel cache {what} {arrow}: {transfer.describe()}")
        if transfer.error is not None:
            self.log(
                f"WARNING: kernel cache {what} with {self.source} failed: {transfer.error}; "
                "training goes on, compiling the kernels it does not find"
            )
        self.record(event, key=self.key, **fields, **transfer.fields())
        return None if transfer.error is not None else transfer

    def upload_after_first_iteration(self, ledger_path: Path, events_before: int) -> None:
        """Watch the run's ledger from a thread; once this attempt's `first_iteration` event is there, upload.

        The start-up compiled nearly every kernel by then, and a sweep's later jobs find them early."""

        def watch() -> None:
            from core import ledger

            while not self._done.wait(FIRST_ITERATION_POLL_S):
                try:
                    events = ledger.read_jsonl(ledger_path)[events_before:]
                except (OSError, UnicodeDecodeError):
                    continue  # being replaced or restored: read it again next time
                if any(event.get("event") == "first_iteration" for event in events):
                    self.upload("first_iteration", cancelled=self._abort.is_set)
                    return

        self._watcher = threading.Thread(target=watch, name="kernel-cache-watch", daemon=True)
        self._watcher.start()

    def finish(self, stopped: bool, write_back: bool = True) -> None:
        """At the end of the training processes: upload what was compiled since the first iteration, unless this
        instance does not write back (`write_back`) or a stop signal ended the run (the seconds left before
        SageMaker's SIGKILL belong to the checkpoint upload; the start-up's kernels went after the first iteration)."""
        self._done.set()
        if stopped:
            self._abort.set()
            if write_back:
                self.log("kernel cache: not written back after a stop signal")
            return
        if self._watcher is not None:
            # An upload under way completes; a watcher still waiting for a first iteration that never came ends.
            self._watcher.join()
        if write_back:
            self.upload("exit")


# --------------------------------------------------------------------------------------
# Command line: show the key, bake a store.
# --------------------------------------------------------------------------------------


def bake(destination: str, overrides: Sequence[str], cache_root: Path | None, python: str = sys.executable) -> int:
    """Fill `destination` with the kernels of one short training run on this machine: fetch what is there, train one
    iteration with the given overrides into the kernel cache folder, upload what is new. Returns train.py's status."""
    from launchers.sagemaker_entry import SOURCE_ROOT

    with tempfile.TemporaryDirectory(prefix="kernel-bake-") as scratch:
        root = Path(cache_root) if cache_root else Path(scratch) / "warp"
        shared = SharedKernels(destination, root, overrides, record=lambda *_, **__: None)
        print(f"kernel cache key {shared.key}, cache folder {shared.folder}", flush=True)
        shared.fetch()
        command = [
            python,
            str(SOURCE_ROOT / "train.py"),
            *overrides,
            "algo.max_iterations=1",
            f"warp_cache_dir={root}",
            f"hydra.run.dir={Path(scratch) / 'run'}",
            "summary=false",
        ]
        print("running", " ".join(command), flush=True)
        status = subprocess.run(command, cwd=SOURCE_ROOT).returncode
        if status == 0:
            shared.upload("bake")
        return status


def main(argv: Sequence[str] | None = None) -> int:
    """`key`: print the key this machine would use; `bake`: fill a store from one short run on this machine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    key = commands.add_parser("key", help="print the key of this machine and installed packages")
    key.add_argument("overrides", nargs="*", help="train.py overrides (a device=cpu makes the key a CPU one)")
    baking = commands.add_parser("bake", help="train one iteration and upload the kernels it compiled")
    baking.add_argument("--to", required=True, help="the store: s3://bucket/prefix, file:///folder or a folder")
    baking.add_argument("--cache-dir", type=Path, help="Warp cache folder to use (default: a fresh temporary one)")
    baking.add_argument("overrides", nargs="*", help="train.py overrides after --, e.g. task=h1_rough")
    args = parser.parse_args(argv)
    if args.command == "key":
        print(cache_key(package_versions(), device_arch(args.overrides)))
        return 0
    return bake(args.to, args.overrides, args.cache_dir)


if __name__ == "__main__":
    sys.exit(main())
