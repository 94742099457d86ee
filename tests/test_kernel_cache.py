"""The shared Warp kernel cache: its key, which entries move (only new, complete ones, `.meta` last), and failures
that leave the job to train without it. Stores are real folders; the S3 side runs in the sagemaker tier."""

from __future__ import annotations

import json
import os
import stat
import time
from importlib import metadata
from pathlib import Path

import pytest

from launchers.kernel_cache import (
    KEY_PACKAGES,
    FolderStore,
    SharedKernels,
    cache_key,
    complete_entries,
    device_arch,
    fetch,
    gpu_arch,
    local_files,
    open_store,
    package_versions,
    upload_new,
    warp_version,
)

VERSIONS = {"warp-lang": "1.17.0", "newton": "1.6.1", "mujoco-warp": "3.12.0", "isaaclab": "3.0.0"}


def test_the_key_names_every_version_and_the_target():
    key = cache_key(VERSIONS, "sm90", "x86_64")
    assert key == "warp-lang-1.17.0_newton-1.6.1_mujoco-warp-3.12.0_isaaclab-3.0.0/sm90-x86_64"
    # Any version, the architecture or the machine changes the key; nothing else does.
    changed = [
        cache_key({**VERSIONS, "warp-lang": "1.18.0"}, "sm90", "x86_64"),
        cache_key({**VERSIONS, "newton": "1.7.0"}, "sm90", "x86_64"),
        cache_key({**VERSIONS, "mujoco-warp": "3.13.0"}, "sm90", "x86_64"),
        cache_key({**VERSIONS, "isaaclab": "3.0.1"}, "sm90", "x86_64"),
        cache_key(VERSIONS, "sm80", "x86_64"),
        cache_key(VERSIONS, "cpu", "x86_64"),
        cache_key(VERSIONS, "sm90", "aarch64"),
    ]
    assert len({key, *changed}) == len(changed) + 1
    # Characters S3 keys and folder names handle badly are replaced.
    assert cache_key({"warp-lang": "1.17.0+cu128"}, "sm90", "x86_64") == "warp-lang-1.17.0-cu128/sm90-x86_64"


def test_the_key_of_this_machine_reads_the_installed_packages_without_importing_warp():
    versions = package_versions()
    assert list(versions) == list(KEY_PACKAGES)
    assert versions["warp-lang"] == metadata.version("warp-lang")
    import warp  # only to compare: the cache module reads the folder name from Warp's files

    assert warp_version() == warp.config.version


def fake_nvidia_smi(folder: Path, output: str, status: int = 0) -> str:
    """A real executable standing in for nvidia-smi on a machine without a GPU."""
    script = folder / f"nvidia-smi-{status}-{abs(hash(output))}"
    script.write_text(f"#!/bin/sh\nprintf '{output}'\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_the_architecture_comes_from_nvidia_smi_or_the_device(tmp_path):
    h200s = fake_nvidia_smi(tmp_path, "9.0\\n9.0\\n")
    assert gpu_arch(h200s) == "sm90"
    assert gpu_arch(fake_nvidia_smi(tmp_path, "8.0\\n9.0\\n8.0\\n")) == "sm80-sm90"
    assert gpu_arch(fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed\\n", status=9)) is None
    assert gpu_arch(str(tmp_path / "absent")) is None
    assert device_arch(["task=h1_rough"], h200s) == "sm90"
    assert device_arch(["device=cuda:0"], h200s) == "sm90"
    # A run told to use the CPU compiles CPU kernels on a GPU machine too; the last override wins.
    assert device_arch(["device=cuda", "device=cpu"], h200s) == "cpu"
    assert device_arch(["task=h1_rough"], str(tmp_path / "absent")) == "cpu"


def module(folder: Path, name: str, meta: bool = True, binary: bytes = b"object code") -> list[str]:
    """A Warp module folder as Warp leaves it in its cache: source, binary and (once complete) `.meta`."""
    entry = folder / name
    entry.mkdir(parents=True, exist_ok=True)
    (entry / f"{name}.cpp").write_text(f"// source of {name}")
    (entry / f"{name}.cpu42f17179.o").write_bytes(binary)
    files = [f"{name}/{name}.cpp", f"{name}/{name}.cpu42f17179.o"]
    if meta:
        (entry / f"{name}.meta").write_text(json.dumps({"kernel_smem_bytes": 0}))
        files.append(f"{name}/{name}.meta")
    return files


def test_upload_writes_only_complete_entries_the_store_lacks_with_meta_last(tmp_path):
    cache = tmp_path / "warp" / "1.17.0"
    shared = module(cache, "wp_isaaclab.sensors.kernels_deb2be7")
    new = module(cache, "wp_mujoco_warp._src.smooth_15aab42")
    building = module(cache, "wp_newton._src.sim.collide_4dd4826", meta=False)
    module(cache, "wp_mujoco_warp._src.io_4116dfa_p4242_t140")  # Warp's build folder, renamed when done
    (cache / "wp_mujoco_warp._src.smooth_15aab42" / ".partial.o.1.2.part").write_bytes(b"half")
    store = FolderStore(tmp_path / "store")
    module(store.root, "wp_isaaclab.sensors.kernels_deb2be7", binary=b"written by another job")

    first = upload_new(store, cache)
    assert first.moved_files[-1].endswith(".meta") and sorted(first.moved_files) == sorted(new)
    assert (first.entries, first.already_there, first.moved, first.files) == (2, 1, 1, 3)
    # What the store holds is never written again, the build folder, the partial file and the module without its
    # .meta stay local.
    assert (store.root / shared[1]).read_bytes() == b"written by another job"
    assert sorted(local_files(store.root)) == sorted(shared + new)

    again = upload_new(store, cache)
    assert (again.moved, again.files, again.already_there) == (0, 0, 2)

    # Once Warp has finished the module (its .meta written), the next upload takes it, .meta last.
    (cache / "wp_newton._src.sim.collide_4dd4826" / "wp_newton._src.sim.collide_4dd4826.meta").write_text("{}")
    later = upload_new(store, cache)
    assert sorted(later.moved_files[:2]) == sorted(building)
    assert later.moved_files[2:] == ["wp_newton._src.sim.collide_4dd4826/wp_newton._src.sim.collide_4dd4826.meta"]


def test_fetch_takes_complete_entries_it_lacks_and_never_half_of_one(tmp_path):
    store = FolderStore(tmp_path / "store")
    wanted = module(store.root, "wp_mujoco_warp._src.smooth_15aab42")
    here = module(store.root, "wp_isaaclab.sensors.kernels_deb2be7")
    module(store.root, "wp_newton._src.sim.collide_4dd4826", meta=False)  # its writer died before the .meta
    (store.root / "lto").mkdir()
    (store.root / "lto" / "3f2a.lto").write_bytes(b"lto")  # Warp's LTO files: whole files, no .meta needed
    cache = tmp_path / "warp" / "1.17.0"
    module(cache, "wp_isaaclab.sensors.kernels_deb2be7", binary=b"compiled here")
    assert complete_entries(local_files(store.root)) == {
        "wp_mujoco_warp._src.smooth_15aab42",
        "wp_isaaclab.sensors.kernels_deb2be7",
        "lto",
    }

    fetched = fetch(store, cache)
    assert sorted(fetched.moved_files) == sorted([*wanted, "lto/3f2a.lto"])
    assert fetched.moved_files[-1].endswith(".meta")
    assert (fetched.entries, fetched.already_there, fetched.moved) == (3, 1, 2)
    assert not (cache / "wp_newton._src.sim.collide_4dd4826").exists()
    assert (cache / here[1]).read_bytes() == b"compiled here"
    assert (cache / wanted[1]).read_bytes() == b"object code"
    assert not [path for path in cache.rglob("*") if path.name.endswith(".part")]
    assert fetch(store, cache).files == 0


def test_a_store_that_cannot_be_used_never_stops_the_job(tmp_path, monkeypatch, capsys):
    recorded = []

    def record(event, **fields):
        recorded.append((event, fields))

    # S3 refused: nothing listens on this port of this machine (a bucket that cannot be reached).
    for name, value in {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    unreachable = SharedKernels("s3://kernels/cache", tmp_path / "warp", ["device=cpu"], record, log=print, workers=2)
    assert unreachable.fetch() is None
    module(unreachable.folder, "wp_a_1234567")
    assert unreachable.upload("exit") is None
    # A folder store whose place is taken by a file, and a scheme the cache does not speak.
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    unwritable = SharedKernels(str(blocked / "sub"), tmp_path / "warp", ["device=cpu"], record, log=print)
    assert unwritable.upload("first_iteration") is None
    assert SharedKernels("ftp://host/cache", tmp_path / "warp", ["device=cpu"], record, log=print).fetch() is None

    output = capsys.readouterr().out
    assert output.count("WARNING: kernel cache") == 4 and "training goes on" in output
    assert [(event, fields.get("when")) for event, fields in recorded] == [
        ("kernel_cache_fetch", None),
        ("kernel_cache_upload", "exit"),
        ("kernel_cache_upload", "first_iteration"),
        ("kernel_cache_fetch", None),
    ]
    assert all(fields["error"] for _, fields in recorded)


def test_open_store_reads_every_address_form(tmp_path):
    assert str(open_store(f"file://{tmp_path}/prefix", "a/b")) == f"file://{tmp_path}/prefix/a/b"
    assert str(open_store(str(tmp_path / "prefix"), "a/b")) == f"file://{tmp_path}/prefix/a/b"


def test_kernels_are_written_back_after_the_first_iteration_and_at_the_end(tmp_path):
    recorded = []
    store = tmp_path / "store"
    shared = SharedKernels(str(store), tmp_path / "warp", ["device=cpu"], lambda e, **f: recorded.append((e, f)))
    ledger = tmp_path / "run" / "ledger.jsonl"
    ledger.parent.mkdir()
    ledger.write_text(json.dumps({"event": "first_iteration", "attempt": "earlier"}) + "\n")
    # The first iteration of an earlier attempt (before `events_before`) does not count.
    shared.upload_after_first_iteration(ledger, events_before=1)
    module(shared.folder, "wp_start_up_1111111")
    with ledger.open("a") as lines:
        lines.write(json.dumps({"event": "simulator_ready", "attempt": "this"}) + "\n")
    time.sleep(1.5)  # the watcher reads the ledger every second: no upload without this attempt's first iteration
    assert recorded == []
    with ledger.open("a") as lines:
        lines.write(json.dumps({"event": "first_iteration", "attempt": "this"}) + "\n")
    deadline = time.monotonic() + 60
    while not recorded:
        assert time.monotonic() < deadline, "no upload after the first iteration"
        time.sleep(0.1)
    module(shared.folder, "wp_compiled_later_2222222")
    shared.finish(stopped=False)
    assert [(event, fields["when"], fields["moved"]) for event, fields in recorded] == [
        ("kernel_cache_upload", "first_iteration", 1),
        ("kernel_cache_upload", "exit", 1),
    ]
    assert sorted(os.listdir(store / shared.key)) == ["wp_compiled_later_2222222", "wp_start_up_1111111"]


def test_a_stopped_run_is_not_written_back(tmp_path):
    recorded = []
    shared = SharedKernels(
        str(tmp_path / "store"), tmp_path / "warp", ["device=cpu"], lambda e, **f: recorded.append(e)
    )
    shared.upload_after_first_iteration(tmp_path / "no-ledger-yet.jsonl", events_before=0)
    module(shared.folder, "wp_start_up_1111111")
    shared.finish(stopped=True)
    assert recorded == [] and not (tmp_path / "store").exists()


@pytest.mark.parametrize("write_back", [True, False])
def test_only_the_first_instance_writes_back(tmp_path, write_back):
    shared = SharedKernels(str(tmp_path / "store"), tmp_path / "warp", ["device=cpu"], lambda e, **f: None)
    module(shared.folder, "wp_start_up_1111111")
    shared.finish(stopped=False, write_back=write_back)
    assert (tmp_path / "store").exists() is write_back


def test_fetching_imports_neither_torch_nor_warp(tmp_path):
    """The entry fetches before any training process starts; it must stay a light process."""
    import subprocess
    import sys

    store = tmp_path / "store"
    module(store / cache_key(package_versions(), "cpu"), "wp_start_up_1111111")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from launchers.kernel_cache import SharedKernels\n"
        f"shared = SharedKernels({str(store)!r}, Path({str(tmp_path / 'warp')!r}), ['device=cpu'], lambda *a, **k: None)\n"
        "assert shared.fetch().moved == 1\n"
        "print(sorted(name for name in ('torch', 'warp', 'omegaconf') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
