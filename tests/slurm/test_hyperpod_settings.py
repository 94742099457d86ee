"""`launcher=hyperpod` without a cluster: composed settings, sbatch script, resume decision, submit-host checks."""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import replace
from pathlib import Path

import pytest

from core import rundir
from launchers import hyperpod, slurm_job
from launchers.settings import HyperPodSettings, settings_from_config
from rlforge_testing import run_train, srun_on_path


def plugin_settings(compose_cfg, *overrides: str) -> HyperPodSettings:
    """The typed settings the plugin reads from the composed config's `launcher` node."""
    cfg = compose_cfg(["launcher=hyperpod", "task=toy", *overrides], return_hydra_config=True)
    return settings_from_config(cfg, HyperPodSettings)


def test_launcher_settings_reach_the_slurm_plugin(compose_cfg):
    cfg = compose_cfg(["launcher=hyperpod", "launcher.output_root=/fsx/runs"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.output_root == "/fsx/runs"
    # The `hydra/launcher` node names the plugin and nothing else: the plugin reads the `launcher` node.
    assert dict(cfg.hydra.launcher) == {"_target_": "hydra_plugins.hyperpod_launcher.launcher.HyperPodLauncher"}
    settings = plugin_settings(
        compose_cfg,
        "launcher.nodes=4",
        "launcher.gpus_per_node=8",
        "launcher.time_limit_min=90",
        "launcher.partition=p5",
        "launcher.setup=[module load cuda]",
    )
    parameters = hyperpod.executor_parameters(settings, "toy", code_dir=Path("/code"), workdir=Path("/work"))
    assert parameters["nodes"] == 4 and parameters["gpus_per_node"] == 8 and parameters["time"] == 90
    assert parameters["partition"] == "p5" and "module load cuda" in parameters["setup"]


def test_a_typo_in_a_launcher_setting_fails_at_composition(compose_cfg):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_cfg(["launcher=hyperpod", "launcher.node=2"])
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["launcher=hyperpod", "launcher.nodes=two"])


def test_sbatch_script_has_one_task_per_gpu_memory_per_task_and_the_requeue_lines(compose_cfg, tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    settings = plugin_settings(
        compose_cfg,
        "launcher.nodes=2",
        "launcher.gpus_per_node=8",
        "launcher.mem_per_task_gb=32",
        "launcher.cpus_per_task=12",
        "launcher.auto_resume=false",
        "launcher.max_requeues=3",
        "+launcher.sbatch_params={exclusive: true}",
    )
    parameters = hyperpod.executor_parameters(settings, "toy", code_dir=Path("/code"), workdir=Path("/work"))
    assert parameters["ntasks_per_node"] == 8 and parameters["gpus_per_node"] == 8
    assert parameters["mem"] == f"{32 * 1024 * 8}MB"
    script = _make_sbatch_string(command="python -m submitit.core._submit /x", folder=tmp_path, **parameters)
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --cpus-per-task=12",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --requeue",
        "#SBATCH --exclusive",
        "export PYTHONPATH=/code",
    ):
        assert line in script
    teardown = script.split("# teardown")[1]
    assert '"${SLURM_RESTART_COUNT:-0}" -lt 3' in teardown and 'scontrol requeue "$SLURM_JOB_ID"' in teardown


def submission_script(settings: HyperPodSettings, folder: Path) -> str:
    """The batch script submitit writes for these launcher settings (its own text, as sbatch would get it)."""
    with srun_on_path(folder):
        executor = hyperpod.make_executor(
            settings, job_name="toy", sweep_dir=str(folder), code_dir=Path("/code"), workdir=folder
        )
    return executor._make_submission_file_text(executor._submitit_command_str, "uid")


def test_with_auto_resume_a_killed_step_is_restarted_by_hyperpod_alone(compose_cfg, tmp_path):
    """HyperPod restarts the step after a node failure; the script must not requeue the job for it as well."""
    with_auto_resume = submission_script(plugin_settings(compose_cfg, "launcher.auto_resume=true"), tmp_path)
    command, teardown = with_auto_resume.split("# command")[1].split("# teardown")
    assert "--auto-resume=1" in command
    assert "scontrol requeue" not in teardown and "SLURM_RESTART_COUNT" not in teardown
    assert "step_ran_out_of_memory" in teardown  # a memory kill is still reported

    without = submission_script(plugin_settings(compose_cfg, "launcher.auto_resume=false"), tmp_path)
    command, teardown = without.split("# command")[1].split("# teardown")
    assert "--auto-resume" not in command
    assert 'scontrol requeue "$SLURM_JOB_ID"' in teardown


def run_teardown(tmp_path: Path, step_status: int, *, restarts: int = 1, srun_said: str = "", sacct_says: str = ""):
    """Run the batch-script teardown in bash with fake `scontrol` and `sacct`; return (requeued, exit status).

    `srun_said` is what this attempt's srun printed to the script's stderr, `sacct_says` the step states that
    accounting reports.
    """
    import subprocess

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    called = tmp_path / "called"
    called.unlink(missing_ok=True)
    (fake_bin / "scontrol").write_text(f'#!/bin/sh\necho "$@" > {called}\n')
    (fake_bin / "sacct").write_text(f"#!/bin/sh\nprintf '%s\\n' {sacct_says!r}\n")
    for tool in ("scontrol", "sacct"):
        (fake_bin / tool).chmod(0o755)
    stderr_file = tmp_path / "job.err"
    # An earlier attempt's report of a memory kill is in the file before this attempt's mark.
    stderr_file.write_text("srun: error: node1: task 0: Out Of Memory\n")
    script = "\n".join(
        [
            f"exec 2>>{stderr_file}",
            *hyperpod.STDERR_MARK,
            f"printf '%s\\n' {' '.join(shlex.quote(line) for line in srun_said.splitlines()) or repr('')} >&2",
            f"(exit {step_status})",
            *hyperpod.killed_step_teardown(max_requeues=2),
        ]
    )
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "SLURM_JOB_ID": "42", "SLURM_RESTART_COUNT": str(restarts)}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    if called.exists():
        assert called.read_text().split() == ["requeue", "42"]
    return called.exists(), result.returncode, stderr_file.read_text()


@pytest.mark.parametrize(("step_status", "requeued"), [(0, False), (1, False), (134, False), (137, True), (135, True)])
def test_only_a_step_killed_from_outside_is_requeued(tmp_path, step_status, requeued):
    was_requeued, status, _ = run_teardown(tmp_path, step_status, srun_said="srun: error: node1: task 0: Killed")
    assert was_requeued == requeued
    assert status == (0 if requeued else step_status)
    # The limit is reached: no more requeues.
    assert run_teardown(tmp_path, step_status, restarts=2)[:2] == (False, step_status)


@pytest.mark.parametrize(
    ("srun_said", "requeued"),
    [
        # one rank's Python error first: srun's --kill-on-bad-exit killed the other, and srun reports the kill
        ("srun: error: node2: task 1: Exited with exit code 1\nsrun: error: node1: task 0: Killed", False),
        # a rank killed first; the other then failed in a collective with the peer gone
        ("srun: error: node2: task 1: Killed\nsrun: error: node1: task 0: Exited with exit code 1", True),
    ],
)
def test_the_first_task_that_ended_decides_whether_a_killed_step_is_requeued(tmp_path, srun_said, requeued):
    was_requeued, status, stderr = run_teardown(tmp_path, 137, srun_said=srun_said)
    assert (was_requeued, status) == (requeued, 0 if requeued else 1)
    if not requeued:
        assert "failed with an error (node2: task 1: Exited with exit code 1)" in stderr
        assert "not requeueing" in stderr


@pytest.mark.parametrize(
    ("srun_said", "sacct_says"),
    [
        ("slurmstepd-node1: error: Exceeded job memory limit", "RUNNING"),  # jobacct_gather OverMemoryKill
        ("srun: error: node1: task 0: Out Of Memory", ""),  # the kernel's cgroup OOM killer, no accounting
        ("slurmstepd: error: Detected 1 oom_kill event in StepId=42.0.", ""),
        ("srun: error: node1: task 0: Killed", "RUNNING\nOUT_OF_MEMORY"),  # accounting has the step's state
    ],
)
def test_a_step_killed_for_memory_fails_with_the_reason_instead_of_requeueing(tmp_path, srun_said, sacct_says):
    requeued, status, stderr = run_teardown(tmp_path, 137, srun_said=srun_said, sacct_says=sacct_says)
    assert not requeued and status == 137
    assert "ran out of memory" in stderr and "launcher.mem_per_task_gb" in stderr


def test_cpu_nodes_run_the_asked_number_of_tasks_without_gpu_flags(compose_cfg):
    settings = plugin_settings(compose_cfg, "launcher.gpus_per_node=0", "launcher.tasks_per_node=2")
    parameters = hyperpod.executor_parameters(settings, "toy", code_dir=Path("/code"), workdir=Path("/work"))
    assert parameters["ntasks_per_node"] == 2 and "gpus_per_node" not in parameters


def test_container_image_and_mounts_go_to_srun(compose_cfg):
    settings = plugin_settings(
        compose_cfg,
        "launcher.container_image=/fsx/images/train.sqsh",
        "launcher.container_mounts=[/fsx:/fsx,/opt/data:/data]",
        "launcher.auto_resume=false",
    )
    arguments = hyperpod.srun_arguments(settings, workdir=Path("/fsx/code"))
    assert arguments == [
        "--kill-on-bad-exit=1",
        "--container-image=/fsx/images/train.sqsh",
        "--container-workdir=/fsx/code",
        "--container-mounts=/fsx:/fsx,/opt/data:/data",
    ]


def test_auto_resume_follows_the_hyperpod_marker_unless_set(compose_cfg, tmp_path, monkeypatch):
    settings = plugin_settings(compose_cfg)
    monkeypatch.setattr(hyperpod, "HYPERPOD_MARKER", tmp_path / "absent")
    assert "--auto-resume=1" not in hyperpod.srun_arguments(settings, workdir=tmp_path)
    monkeypatch.setattr(hyperpod, "HYPERPOD_MARKER", tmp_path)
    assert "--auto-resume=1" in hyperpod.srun_arguments(settings, workdir=tmp_path)
    assert "--auto-resume=1" not in hyperpod.srun_arguments(replace(settings, auto_resume=False), workdir=tmp_path)


def test_a_run_dir_with_a_checkpoint_is_continued(tmp_path):
    run_dir = tmp_path / "run"
    assert rundir.continuation_overrides(["seed=1", "resume=false"], run_dir) == ["seed=1", "resume=false"]
    (run_dir / "checkpoints").mkdir(parents=True)
    for iteration in (5, 40, 10):
        (run_dir / "checkpoints" / f"model_{iteration}.pt").write_bytes(b"")
    assert rundir.latest_checkpoint(run_dir)[1].name == "model_40.pt"
    assert rundir.continuation_overrides(["seed=1", "resume=false"], run_dir) == [
        "seed=1",
        f"resume={run_dir.resolve()}",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nodes": 0}, "launcher.nodes=0"),
        ({"gpus_per_node": 64}, "launcher.gpus_per_node=64"),
        ({"gpus_per_node": 8, "tasks_per_node": 2}, "launcher.tasks_per_node=2"),
        ({"time_limit_min": 0}, "launcher.time_limit_min=0"),
        ({"time_limit_min": 2, "signal_delay_s": 120}, "launcher.signal_delay_s=120"),
        ({"mem_per_task_gb": -1}, "launcher.mem_per_task_gb=-1"),
    ],
)
def test_insane_requests_are_refused_with_the_setting_to_fix(compose_cfg, tmp_path, change, message):
    settings = replace(plugin_settings(compose_cfg), **change)
    with pytest.raises(hyperpod.SubmitCheckError, match="nothing was submitted") as error:
        hyperpod.check_before_submit(settings, tmp_path)
    assert message in str(error.value)


def test_an_unwritable_output_root_is_refused(compose_cfg, tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(hyperpod.SubmitCheckError, match="is not writable"):
        hyperpod.check_before_submit(plugin_settings(compose_cfg), tmp_path / "a-file" / "outputs")


def test_rendezvous_port_is_fixed_per_job_and_below_the_ephemeral_range(tmp_path, monkeypatch):
    monkeypatch.delenv("RLFORGE_MASTER_PORT", raising=False)
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("32768\t60999\n")
    ports = {job: slurm_job.rendezvous_port(job, str(ranges)) for job in ("6", "45548", "123_4", "123_5")}
    assert all(10000 <= port < 32768 for port in ports.values()), ports
    assert ports["123_4"] != ports["123_5"]  # tasks of one array rendezvous apart
    assert slurm_job.rendezvous_port("6", str(ranges)) == ports["6"]  # a requeued job finds the same port
    ranges.write_text("20000\t60999\n")
    assert all(10000 <= slurm_job.rendezvous_port(job, str(ranges)) < 20000 for job in ("6", "99999"))
    monkeypatch.setenv("RLFORGE_MASTER_PORT", "29400")
    assert slurm_job.rendezvous_port("6", str(ranges)) == 29400


# `scontrol show job` fields as Slurm 22.05 reported them when each signal arrived (tests/slurm measured them).
PREEMPTED = {
    "JobState": "RUNNING",
    "Restarts": "0",
    "PreemptTime": "2026-11-30T19:23:14",
    "EndTime": "2026-11-30T19:23:44",
}
CANCELLED = {"JobState": "COMPLETING", "Restarts": "0", "PreemptTime": "None", "EndTime": "2026-11-30T19:24:22"}
REQUEUED = {"JobState": "COMPLETING", "Restarts": "1", "EndTime": "Unknown"}


@pytest.mark.parametrize(
    ("signal_name", "job", "kind"),
    [
        ("SIGTERM", PREEMPTED, slurm_job.StopKind.REQUEUE),
        ("SIGTERM", CANCELLED, slurm_job.StopKind.STOP),
        ("SIGTERM", REQUEUED, slurm_job.StopKind.REQUEUED_BY_SLURM),
        ("SIGTERM", {}, slurm_job.StopKind.STOP),  # no answer from the controller: never requeue a cancel
        ("SIGUSR2", {"JobState": "RUNNING", "Restarts": "0", "PreemptTime": "None"}, slurm_job.StopKind.REQUEUE),
        ("SIGUSR2", {}, slurm_job.StopKind.REQUEUE),
    ],
)
def test_a_stop_signal_is_read_from_the_job_state_when_it_came(signal_name, job, kind):
    decision = slurm_job.classify_stop(signal_name, job, restarts_before=0)
    assert decision.kind is kind and signal_name in decision.explanation
    if slurm_job.is_preemption(job):
        assert "preempted by Slurm" in decision.explanation


def git(repo: Path, *args: str) -> str:
    import subprocess

    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    return subprocess.run(["git", *identity, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def test_the_source_snapshot_holds_the_work_tree_as_submitted(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "module.py").write_text("VALUE = 1\n")
    (repo / "train.py").write_text("")
    (repo / ".gitignore").write_text("outputs/\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    commit = git(repo, "rev-parse", "HEAD").strip()

    clean = hyperpod.snapshot_source(repo, repo / "outputs" / "sweep")
    assert (clean.commit, clean.dirty) == (commit, False)
    assert clean.code_dir == clean.path and clean.path.parent == repo / "outputs" / "sweep"
    assert (clean.path / "pkg" / "module.py").read_text() == "VALUE = 1\n"
    assert not (clean.path / "outputs").exists()  # ignored files are not source
    assert hyperpod.snapshot_source(repo, repo / "outputs" / "sweep") == clean  # same source, same copy

    (repo / "pkg" / "module.py").write_text("VALUE = 2\n")
    (repo / "pkg" / "new.py").write_text("")
    dirty = hyperpod.snapshot_source(repo, repo / "outputs" / "sweep")
    assert dirty.dirty and dirty.path != clean.path and (dirty.path / "pkg" / "new.py").exists()
    assert dirty.environment() == {
        "RLFORGE_SOURCE_SNAPSHOT": str(dirty.path),
        "RLFORGE_SOURCE_COMMIT": commit,
        "RLFORGE_SOURCE_DIRTY": "1",
    }
    # The first copy is unchanged, and read-only.
    assert (clean.path / "pkg" / "module.py").read_text() == "VALUE = 1\n"
    assert not (clean.path / "pkg" / "module.py").stat().st_mode & 0o222


def test_without_a_git_work_tree_the_snapshot_is_refused_before_submitting(compose_cfg, tmp_path):
    settings = plugin_settings(compose_cfg)
    with pytest.raises(hyperpod.SubmitCheckError, match="launcher.source_snapshot=false"):
        hyperpod.check_before_submit(settings, tmp_path / "outputs", code_dir=tmp_path)


def test_the_jobs_read_config_files_from_the_snapshot(tmp_path):
    from hydra_plugins.hyperpod_launcher.launcher import _in_snapshot

    code, snapshot = tmp_path / "code", tmp_path / "runs" / "source-1"
    assert _in_snapshot(f"{code}/conf", code, snapshot) == f"{snapshot}/conf"  # how hydra.main writes it
    assert _in_snapshot(f"file://{code}/conf", code, snapshot) == f"file://{snapshot}/conf"
    assert _in_snapshot("file:///etc/elsewhere", code, snapshot) == "file:///etc/elsewhere"
    assert _in_snapshot("pkg://hydra.conf", code, snapshot) == "pkg://hydra.conf"


def test_stop_signals_ask_the_run_to_stop_and_a_signal_without_a_controller_is_not_requeued():
    import os
    import signal

    from core import lifecycle

    lifecycle.clear()
    try:
        with slurm_job.StopSignals(job_id="", restarts_before=0) as signals:
            os.kill(os.getpid(), signal.SIGTERM)
        assert signals.received == ["SIGTERM"] and lifecycle.stop_requested() == "stopped (SIGTERM)"
        assert signals.decision().kind is slurm_job.StopKind.STOP
        assert signal.getsignal(signal.SIGTERM) != signals._handle  # the previous handler is back
    finally:
        lifecycle.clear()


def test_the_plugins_ledger_events_count_to_the_attempt_this_process_started(tmp_path):
    from core import ledger

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    placement = {"launcher": "hyperpod", "host": "node1", "world_size": 2}
    earlier = ledger.RunLedger(run_dir, {"attempt": "earlier", **placement})
    earlier.record("process_start", at=1.0, pid=os.getpid(), submitted_at=None, source=None)
    earlier.record("end", how="interrupted", iteration=3)
    started = time.time()
    assert ledger.attempt_ledger(run_dir, since=started) is None, "an earlier attempt's start is not this one's"

    this = ledger.RunLedger(run_dir, {"attempt": "this", **placement})
    this.record("process_start", at=started, pid=os.getpid(), submitted_at=None, source=None)
    this.record("config_composed", resuming=True)
    ledger.RunLedger(run_dir, {"attempt": "other process"}).record("process_start", pid=os.getpid() + 1)
    this.record("end", how="interrupted", iteration=5)
    assert ledger.attempt_ledger(run_dir, since=started, pid=os.getpid() + 2) is None

    found = ledger.attempt_ledger(run_dir, since=started)
    assert found is not None and found.context == {"attempt": "this", **placement}
    found.record("requeued", by="run")
    assert ledger.read(run_dir)[-1] | {"time": 0} == {
        "time": 0,
        "event": "requeued",
        "attempt": "this",
        **placement,
        "by": "run",
    }


def test_a_dry_run_of_a_three_point_sweep_prints_the_script_and_its_most_cost(tmp_path):
    from core.accounting import load_prices

    result = run_train(
        [
            "-m",
            "launcher=hyperpod",
            "task=toy",
            "launcher.dry_run=true",
            "launcher.instance_type=ml.p5.48xlarge",
            "launcher.nodes=2",
            "launcher.time_limit_min=90",
            f"launcher.output_root={tmp_path}",
            "seed=1,2,3",
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = 3 * 2 * 1.5 * load_prices()["hyperpod"]["ml.p5.48xlarge"]  # runs x nodes x hours x price
    assert "3 run(s) x 2 ml.p5.48xlarge x 1.5 h" in result.stdout and f"= {expected:,.2f} USD" in result.stdout
    assert "#SBATCH --array=0-2" in result.stdout and "export RLFORGE_INSTANCE_TYPE=ml.p5.48xlarge" in result.stdout
    assert not list(tmp_path.glob("multirun/*/slurm_jobs.json")) and not list(tmp_path.glob("multirun/*/.submitit"))
