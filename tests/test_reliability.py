"""Faults inside one run directory, with real processes, signals and file systems: a second writer, a changed
config on resume, a hard kill before the first checkpoint, a full disk, and a stop while the run starts up."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlforge_testing import ROOT, only_run, run_train, start_train, train_until_then_signal

# Small networks keep checkpoints small (the full-disk test sizes its file system from them) and runs fast.
SMALL = ["algo.actor.hidden_dims=[32,32]", "algo.critic.hidden_dims=[32,32]", "algo.algorithm.num_learning_epochs=1"]


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def metric_iterations(run_dir: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def wait_until(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended before {what}:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def test_second_writer_is_refused_and_takes_over_once_the_holder_is_killed(toy_args, tmp_path):
    runs = tmp_path / "outputs" / "toy"
    holder = start_train([*toy_args, *SMALL, "algo.max_iterations=100000", "algo.save_interval=2"], tmp_path)
    try:
        wait_until(lambda: list(runs.glob("*/checkpoints/model_*.pt")), "a first checkpoint", holder)
        run_dir = only_run(runs)

        second = run_train([*toy_args, *SMALL, "algo.max_iterations=100000", f"resume={run_dir}"], cwd=tmp_path)
        assert second.returncode != 0
        output = second.stdout + second.stderr
        assert "is in use" in output and f"pid {holder.pid} on " in output, output[-2000:]
        assert holder.poll() is None, "the refused writer must leave the holder running"
        assert [e["event"] for e in events(run_dir)].count("process_start") == 1, "the refused writer wrote the ledger"
    finally:
        holder.kill()
        holder.communicate(timeout=60)

    newest = max(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("model_*.pt"))
    third = run_train([*toy_args, *SMALL, f"algo.max_iterations={newest + 2}", f"resume={run_dir}"], cwd=tmp_path)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert f"its last holder, pid {holder.pid} on " in third.stdout and "is gone" in third.stdout
    taken = [e for e in events(run_dir) if e["event"] == "lock_taken_over"]
    assert len(taken) == 1 and taken[0]["previous"]["pid"] == holder.pid
    assert json.loads((run_dir / "summary.json").read_text())["iterations"] == newest + 2
    assert (run_dir / "run.lock").read_text() == "", "a run that ended released its lock"


def test_resume_with_a_changed_config_is_refused_before_the_simulator_starts(toy_args, tmp_path):
    assert run_train([*toy_args, *SMALL, "algo.max_iterations=1"], cwd=tmp_path).returncode == 0
    run_dir = only_run(tmp_path / "outputs" / "toy")
    before = events(run_dir)

    changed = ["algo.actor.hidden_dims=[16,16]", "task.rewards.track_velocity.weight=2.0"]
    refused = run_train([*toy_args, *SMALL, *changed, "algo.max_iterations=2", "resume=true"], cwd=tmp_path)
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert "algo.actor.hidden_dims: [32, 32] -> [16, 16]" in output, output[-3000:]
    assert "task.rewards.track_velocity.weight: 1.0 -> 2.0" in output
    assert "algo.max_iterations" not in output.split("refused")[-1].split("Resume with")[0], "length may change"
    assert "size mismatch" not in output
    assert events(run_dir) == before, "a refused resume must not start an attempt"

    accepted = run_train(
        [*toy_args, *SMALL, changed[1], "algo.max_iterations=2", "resume=true", "accept_config_change=true"],
        cwd=tmp_path,
    )
    assert accepted.returncode == 0, accepted.stdout[-3000:] + accepted.stderr[-3000:]
    change = [e for e in events(run_dir) if e["event"] == "config_changed"]
    assert len(change) == 1 and change[0]["accepted"]
    assert change[0]["learned"] == ["task.rewards.track_velocity.weight: 1.0 -> 2.0"]
    assert any(line.startswith("algo.max_iterations: 1 -> 2") for line in change[0]["operational"])

    # The accepted config is the run's config now: resuming with it again needs no flag.
    again = run_train([*toy_args, *SMALL, changed[1], "algo.max_iterations=3", "resume=true"], cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]


def test_hard_kill_before_the_first_checkpoint_then_resume_counts_each_iteration_once(toy_args, tmp_path):
    runs = tmp_path / "outputs" / "toy"
    args = [*toy_args, *SMALL, "algo.save_interval=1000"]
    run_dir, code = train_until_then_signal(
        [*args, "algo.max_iterations=100000"], tmp_path, runs, iterations=3, sig=signal.SIGKILL
    )
    assert code == -signal.SIGKILL and not list(run_dir.glob("checkpoints/model_*.pt"))
    assert len(metric_iterations(run_dir)) >= 3

    resumed = run_train([*args, "algo.max_iterations=5", "resume=true"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert metric_iterations(run_dir) == [1, 2, 3, 4, 5]
    resume = [e for e in events(run_dir) if e["event"] == "resume"]
    assert resume[-1]["iteration"] == 0 and resume[-1]["metrics_redone"] >= 3
    redone = [json.loads(line)["iteration"] for line in (run_dir / "metrics.redone.jsonl").read_text().splitlines()]
    assert redone == list(range(1, resume[-1]["metrics_redone"] + 1)), "the lost iterations are kept aside"


def test_resume_from_an_older_checkpoint_shows_each_iteration_once_in_the_curves(toy_args, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = [*toy_args, *SMALL, "algo.save_interval=2"]
    assert run_train([*args, "algo.max_iterations=4"], cwd=tmp_path).returncode == 0
    run_dir = only_run(tmp_path / "outputs" / "toy")
    (run_dir / "checkpoints" / "model_4.pt").write_bytes(b"torn")  # the newest checkpoint is lost

    resumed = run_train([*args, "algo.max_iterations=5", "resume=true"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "from model_2.pt at iteration 2" in resumed.stdout
    assert metric_iterations(run_dir) == [1, 2, 3, 4, 5]

    curves = EventAccumulator(str(run_dir))
    curves.Reload()
    steps = [event.step for event in curves.Scalars("Loss/learning_rate")]
    assert steps == [0, 1, 2, 3, 4], steps


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only): a file system that fills up."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    folder = tmp_path / "small_fs"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_checkpoint_write_into_a_full_file_system_keeps_the_previous_checkpoint(toy_args, tmp_path, small_tmpfs):
    args = [*toy_args, *SMALL, "algo.save_interval=1"]
    assert run_train([*args, "algo.max_iterations=2"], cwd=tmp_path).returncode == 0
    run_dir = only_run(tmp_path / "outputs" / "toy")
    checkpoints = run_dir / "checkpoints"
    size = (checkpoints / "model_2.pt").stat().st_size
    # The run's checkpoints move to the small file system, which is then filled to within half a checkpoint.
    shutil.copy2(checkpoints / "model_2.pt", small_tmpfs / "model_2.pt")
    shutil.rmtree(checkpoints)
    checkpoints.symlink_to(small_tmpfs)
    free = shutil.disk_usage(small_tmpfs).free
    (small_tmpfs / "filler").write_bytes(b"\0" * max(free - size // 2, 0))

    full = run_train([*args, "algo.max_iterations=4", "resume=true"], cwd=tmp_path)
    assert full.returncode != 0
    output = full.stdout + full.stderr
    assert "could not write checkpoint" in output and "the newest checkpoint, model_2.pt, is intact" in output
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler", "model_2.pt"], "no partial file is left"
    assert torch.load(small_tmpfs / "model_2.pt", weights_only=False)["iter"] == 2
    failed = [e["iteration"] for e in events(run_dir) if e["event"] == "checkpoint_failed"]
    assert failed == [3, 4], "a periodic checkpoint that fails is reported and training goes on; the last one ends it"
    assert events(run_dir)[-1]["event"] == "end" and events(run_dir)[-1]["how"] == "failed"

    (small_tmpfs / "filler").unlink()
    freed = run_train([*args, "algo.max_iterations=4", "resume=true"], cwd=tmp_path)
    assert freed.returncode == 0, freed.stdout[-3000:] + freed.stderr[-3000:]
    assert "from model_2.pt at iteration 2" in freed.stdout
    assert metric_iterations(run_dir) == [1, 2, 3, 4]


def attempt_started(runs: Path, resuming: bool) -> bool:
    """Whether an attempt (a new run, or a resumed one) has opened its ledger under ``runs``."""
    return any(
        e["event"] == "config_composed" and e["resuming"] == resuming
        for ledger in runs.glob("*/ledger.jsonl")
        for e in events(ledger.parent)
    )


@pytest.mark.parametrize("earlier_iterations", [0, 2])
def test_stop_during_start_up_ends_the_attempt_at_once(toy_args, tmp_path, earlier_iterations):
    runs = tmp_path / "outputs" / "toy"
    args = [*toy_args, *SMALL, "algo.save_interval=1"]
    resume = []
    if earlier_iterations:
        assert run_train([*args, f"algo.max_iterations={earlier_iterations}"], cwd=tmp_path).returncode == 0
        resume = ["resume=true", "accept_config_change=true"]  # the start-up delay is a change of the task
    starting = start_train(
        [*args, *resume, "algo.max_iterations=10", "+task.env_overrides.startup_delay_s=600"], tmp_path
    )
    try:
        wait_until(lambda: attempt_started(runs, resuming=bool(earlier_iterations)), "the attempt to start", starting)
        starting.send_signal(signal.SIGTERM)
        output = starting.communicate(timeout=60)[0]  # without the start-up stop, the build waits 600 s
    finally:
        starting.kill()
    assert starting.returncode != 0, output[-3000:]
    run_dir = only_run(runs)
    attempt = events(run_dir)
    last_start = max(i for i, e in enumerate(attempt) if e["event"] == "process_start")
    kinds = [e["event"] for e in attempt[last_start:]]
    assert "simulator_ready" not in kinds and "signal" in kinds
    assert attempt[-1]["event"] == "end" and attempt[-1]["how"] == "interrupted"
    assert attempt[-1]["iteration"] == earlier_iterations and attempt[-1]["reason"] == "SIGTERM"
    assert (run_dir / "run.lock").read_text() == "", "the interrupted attempt released its lock"


def test_checkpoint_write_killed_midway_leaves_the_previous_one_and_the_next_run_cleans_up(toy_args, tmp_path):
    args = [*toy_args, *SMALL, "algo.save_interval=1"]
    assert run_train([*args, "algo.max_iterations=2"], cwd=tmp_path).returncode == 0
    run_dir = only_run(tmp_path / "outputs" / "toy")
    checkpoints = run_dir / "checkpoints"
    # A writer killed while it writes model_3: a large state keeps it writing long enough to be caught midway.
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, torch; from core.checkpoint import save_atomic; "
            "save_atomic({'iter': 3, 'big': torch.ones(2**28)}, sys.argv[1] + '/model_3.pt')",
            str(checkpoints),
        ],
        cwd=ROOT,
    )
    partial = wait_until(
        lambda: [p for p in checkpoints.glob(".model_3.pt.*.tmp") if p.stat().st_size > 0], "the write", writer
    )
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=60)
    assert partial[0].exists() and not (checkpoints / "model_3.pt").exists()

    resumed = run_train([*args, "algo.max_iterations=3", "resume=true"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"removed {partial[0].name}, a checkpoint whose write was cut off" in resumed.stdout
    assert "from model_2.pt at iteration 2" in resumed.stdout
    assert not list(checkpoints.glob(".*.tmp"))
    assert torch.load(checkpoints / "model_3.pt", weights_only=False)["iter"] == 3


def test_stop_requested_before_the_run_begins_ends_it_before_the_simulator_starts(compose_cfg, tmp_path):
    from core import lifecycle
    from runner.train import run

    cfg = compose_cfg(["task=toy", f"output_root={tmp_path / 'outputs'}", "summary=false"])
    lifecycle.request_stop("SIGUSR2")  # as a launcher's handler records it before calling run()
    with pytest.raises(lifecycle.Interrupted) as stopped:
        run(cfg)
    assert stopped.value.iteration == 0
    run_dir = only_run(tmp_path / "outputs" / "toy")
    kinds = [e["event"] for e in events(run_dir)]
    assert "simulator_ready" not in kinds and kinds[-1] == "end" and events(run_dir)[-1]["how"] == "interrupted"
    # The request came before the ledger existed; the ledger still says a stop was asked, once, and why.
    assert kinds.count("signal") == 1 and kinds[-2] == "signal" and events(run_dir)[-2]["reason"] == "SIGUSR2"
    assert lifecycle.stop_requested() is None, "the next run of this process starts without the old request"


def test_a_stop_signal_that_library_code_turned_into_another_error_still_ends_the_attempt_as_stopped(
    compose_cfg, tmp_path, monkeypatch
):
    """A stop signal raises from its handler wherever the main thread is. Inside OmegaConf (the run writes its
    config right after the ledger starts taking signals) the stop surfaces as OmegaConf's own error, not as the
    stop; the attempt must still end as a stopped one, and a second signal while that end is written must not cut
    it short. Real signals to this process, real OmegaConf (the failure seen under load: the ledger ended at
    the signal, with no end)."""
    from omegaconf import OmegaConf

    from core import ledger, lifecycle
    from runner import train

    cfg = compose_cfg(["task=toy", f"output_root={tmp_path / 'outputs'}", "summary=false"])
    OmegaConf.register_new_resolver(
        "rlforge_test_sigterm", lambda: os.kill(os.getpid(), signal.SIGTERM) or 0, replace=True
    )
    real_manifest, real_record = train.build_manifest, ledger.RunLedger.record

    def manifest_written_as_the_signal_comes(**fields):
        OmegaConf.to_yaml(OmegaConf.create({"written": "${rlforge_test_sigterm:}"}), resolve=True)
        return real_manifest(**fields)

    def record_with_a_second_signal(self, event, **fields):
        if event == "end":
            os.kill(os.getpid(), signal.SIGTERM)
        real_record(self, event, **fields)

    monkeypatch.setattr(train, "build_manifest", manifest_written_as_the_signal_comes)
    monkeypatch.setattr(ledger.RunLedger, "record", record_with_a_second_signal)
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(lifecycle.Interrupted) as stopped:
            train.run(cfg)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert (stopped.value.reason, stopped.value.iteration) == ("SIGTERM", 0)
    attempt = events(only_run(tmp_path / "outputs" / "toy"))
    kinds = [e["event"] for e in attempt]
    assert "simulator_ready" not in kinds and kinds.count("signal") == 1 and kinds[-2:] == ["signal", "end"]
    assert attempt[-1]["how"] == "interrupted" and attempt[-1]["reason"] == "SIGTERM" and attempt[-1]["iteration"] == 0
    assert "InterpolationResolutionError" in attempt[-1]["surfaced_as"], attempt[-1]
    assert lifecycle.stop_requested() is None, "the next run of this process starts without the old request"


def test_a_stop_during_start_up_that_library_code_swallowed_is_raised_again():
    """A stop signal during start-up raises from its handler wherever the main thread is, possibly inside a
    library's ``try: import optional / except Exception``, which swallows it. The run must still stop at the
    start-up's next checkpoint (seen on the Slurm cluster: a time-limit signal recorded during the imports, then a
    600 s start-up ran on into the time limit, and the job timed out instead of being requeued)."""
    from core import lifecycle

    lifecycle.clear()
    lifecycle.begin_startup(3)
    try:
        try:
            lifecycle.request_stop("SIGUSR2")  # what the signal handler does
        except Exception:  # noqa: BLE001 - what such library code does with it
            pass
        with pytest.raises(lifecycle.Interrupted) as again:
            lifecycle.stop_now_if_starting()  # the next checkpoint of the start-up
        assert (again.value.reason, again.value.iteration) == ("SIGUSR2", 3)
        with pytest.raises(lifecycle.Interrupted):
            lifecycle.end_startup()  # and the last one, before the first iteration
    finally:
        lifecycle.clear()
    lifecycle.stop_now_if_starting()  # once the run has ended, nothing is pending


def test_writers_on_two_hosts_with_one_process_id_write_through_distinct_temporary_files(tmp_path, monkeypatch):
    """Caches on a shared file system are written by processes of several nodes, whose ids can coincide."""
    import socket

    from core import rundir

    seen = []
    real_replace = os.replace

    def replace(source, target):
        seen.append(Path(source).name)
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    for host in ("node-a", "node-b"):
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        rundir.write_bytes_atomic(tmp_path / "entry.npz", host.encode())
    assert len(set(seen)) == 2 and all(".4242." in name for name in seen)
    assert (tmp_path / "entry.npz").read_bytes() == b"node-b"
    assert [p.name for p in tmp_path.iterdir()] == ["entry.npz"], "no temporary file left behind"
