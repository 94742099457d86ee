"""`launcher=hyperpod` against a real Slurm cluster: runs, sweeps, two nodes, preemption, killed steps, bad configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlforge_testing import SMALL_TOY, wait_for

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
# The toy task starts in seconds; gpus_per_node=0 trains on the CPU with gloo, as this cluster has no GPUs.
BASE = ["launcher=hyperpod", "launcher.gpus_per_node=0", "device=cpu", "logger=tensorboard"]
# Small toy iterations keep each test short on a two-core machine shared with other work.
TOY = list(SMALL_TOY)


def train(
    cluster,
    output_root: Path,
    *overrides: str,
    task: str = "toy",
    multirun: bool = False,
    timeout: float = 180,
    checkout: Path = REPO,
    env: dict[str, str] | None = None,
):
    """`python train.py launcher=hyperpod ...` as a user runs it on the submit host (in `checkout`); `env` is
    added to the environment, which sbatch passes on to the jobs."""
    command = [
        sys.executable,
        "train.py",
        *(["-m"] if multirun else []),
        *BASE,
        f"task={task}",
        *(TOY if task == "toy" else []),
        f"launcher.output_root={output_root}",
        *overrides,
    ]
    return subprocess.run(
        command, cwd=checkout, env={**cluster.env, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def submitted(output_root: Path) -> list[dict]:
    """Runs recorded by the launcher in `<output_root>/multirun/<time>/slurm_jobs.json`."""
    manifests = sorted(output_root.glob("multirun/*/slurm_jobs.json"))
    assert len(manifests) == 1, f"expected one submission record under {output_root}, found {manifests}"
    return json.loads(manifests[0].read_text())


def ledger(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def summary_iterations(run_dir: str | Path) -> int:
    return json.loads((Path(run_dir) / "summary.json").read_text())["iterations"]


def checkpoint_iterations(run_dir: str | Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in Path(run_dir).glob("checkpoints/model_*.pt"))


def test_single_run_is_submitted_returns_at_once_and_completes_with_a_checkpoint(slurm_cluster, tmp_path):
    started = time.monotonic()
    result = train(slurm_cluster, tmp_path, "algo.max_iterations=4", "algo.save_interval=2")
    submit_seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    # Submission returns while the job is still queued or running, and says how to follow it.
    assert slurm_cluster.job_states(run["job_id"]).get(run["job_id"]) in {"PENDING", "RUNNING", None}
    assert f"job {run['job_id']}" in result.stdout and run["run_dir"] in result.stdout
    assert f"squeue -j {run['job_id']}" in result.stdout and f"tail -f {run['log']}" in result.stdout

    states = slurm_cluster.wait_until_done(run["job_id"])
    assert states == {run["job_id"]: "COMPLETED"}, Path(run["log"]).read_text()[-3000:]
    assert checkpoint_iterations(run["run_dir"])[-1] == 4
    assert summary_iterations(run["run_dir"]) == 4
    assert submit_seconds < 60


def test_wait_true_blocks_until_the_run_ends(slurm_cluster, tmp_path):
    result = train(slurm_cluster, tmp_path, "algo.max_iterations=2", "launcher.wait=true", "launcher.poll_interval_s=1")
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    assert f"job {run['job_id']}: COMPLETED" in result.stdout
    assert slurm_cluster.job_states(run["job_id"]) == {run["job_id"]: "COMPLETED"}
    assert summary_iterations(run["run_dir"]) == 2


def test_sweep_of_three_points_is_one_job_array_with_distinct_run_dirs(slurm_cluster, tmp_path):
    result = train(
        slurm_cluster, tmp_path, "algo.max_iterations=2", "algo.algorithm.entropy_coef=0.0,0.005,0.01", multirun=True
    )
    assert result.returncode == 0, result.stderr
    runs = submitted(tmp_path)
    assert len(runs) == 3
    array_ids = {run["job_id"].split("_")[0] for run in runs}
    assert len(array_ids) == 1, f"one job array expected, got {[run['job_id'] for run in runs]}"
    assert sorted(run["job_id"].split("_")[1] for run in runs) == ["0", "1", "2"]
    assert len({run["run_dir"] for run in runs}) == 3

    states = slurm_cluster.wait_until_done(array_ids.pop(), timeout=300)
    assert sorted(states.values()) == ["COMPLETED"] * 3, states
    for run, coefficient in zip(runs, (0.0, 0.005, 0.01), strict=True):
        config = (Path(run["run_dir"]) / "config.yaml").read_text()
        assert f"entropy_coef: {coefficient}" in config
        assert summary_iterations(run["run_dir"]) == 2


def test_two_node_run_trains_with_two_ranks_and_rank_zero_alone_writes(slurm_cluster, tmp_path):
    result = train(slurm_cluster, tmp_path, "launcher.nodes=2", "algo.max_iterations=4", "algo.save_interval=2")
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    states = slurm_cluster.wait_until_done(run["job_id"])
    assert states == {run["job_id"]: "COMPLETED"}, Path(run["log"]).read_text()[-3000:]

    assert slurm_cluster.job_history(run["job_id"]) == ["COMPLETED"], "the job ran more than once"
    nodes = slurm_cluster.run("sacct", "-n", "-X", "-P", "-j", run["job_id"], "-o", "NodeList").stdout.strip()
    assert nodes == "127.0.0.[1-2]"
    rank_logs = {rank: Path(run["log"].replace("_0_log.out", f"_{rank}_log.out")).read_text() for rank in (0, 1)}
    assert "rank 0 of 2" in rank_logs[0] and "rank 1 of 2" in rank_logs[1]
    # Both ranks rendezvous at the first node's address.
    assert "rendezvous 127.0.0.1:" in rank_logs[1]

    run_dir = Path(run["run_dir"])
    assert json.loads((run_dir / "manifest.json").read_text())["world_size"] == 2
    events = ledger(run_dir)
    assert {event["world_size"] for event in events} == {2}
    assert len({event["pid"] for event in events if event["event"] == "process_start"}) == 1
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 4
    assert checkpoint_iterations(run_dir) == [2, 4]
    assert summary_iterations(run_dir) == 4


def preempt_once_and_finish(slurm_cluster, tmp_path, *overrides: str) -> tuple[dict, Path]:
    """Submit a run, send it SIGUSR2 (preemption) after 3 iterations, and wait until its requeued job completes.

    Returns the submitted run's record and its metrics file.
    """
    result = train(slurm_cluster, tmp_path, *overrides, "algo.save_interval=1000")
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    metrics = Path(run["run_dir"]) / "metrics.jsonl"
    wait_for(
        lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, "training to start", interval=0.05
    )
    slurm_cluster.run("scancel", "--signal=USR2", run["job_id"])
    states = slurm_cluster.wait_until_done(run["job_id"], timeout=300)
    assert states == {run["job_id"]: "COMPLETED"}, Path(run["log"]).read_text()[-3000:]
    assert slurm_cluster.job_history(run["job_id"]) == ["REQUEUED", "COMPLETED"]
    return run, metrics


def test_preempted_run_is_requeued_and_ends_at_the_exact_iteration_count(slurm_cluster, tmp_path):
    # No periodic checkpoint before the end: the only one in the middle is the one written at the signal.
    run, _ = preempt_once_and_finish(slurm_cluster, tmp_path, "algo.max_iterations=100")
    events = ledger(run["run_dir"])
    (stopped,) = [event for event in events if event["event"] == "end" and event["how"] == "interrupted"]
    assert "SIGUSR2" in stopped["reason"] and 3 <= stopped["iteration"] < 100
    assert any(event["event"] == "requeued" for event in events)
    resumes = [event for event in events if event["event"] == "resume"]
    assert len(resumes) == 1, "\n".join(map(str, events)) + Path(run["log"]).read_text()[-3000:]
    resumed = resumes[0]
    assert resumed["iteration"] == stopped["iteration"]
    assert resumed["checkpoint"] == f"model_{stopped['iteration']}.pt"
    assert events[-1]["event"] == "end" and events[-1]["how"] == "completed" and events[-1]["iteration"] == 100
    assert summary_iterations(run["run_dir"]) == 100
    # The requeued job ran the same run directory with an explicit resume of it.
    overrides = (Path(run["run_dir"]) / ".hydra" / "overrides.yaml").read_text()
    assert f"resume={run['run_dir']}" in overrides


def test_preempted_two_node_run_stops_both_ranks_at_one_iteration_and_resumes_with_two(slurm_cluster, tmp_path):
    run, metrics = preempt_once_and_finish(slurm_cluster, tmp_path, "launcher.nodes=2", "algo.max_iterations=60")
    events = ledger(run["run_dir"])
    (stopped,) = [event for event in events if event["event"] == "end" and event["how"] == "interrupted"]
    (resumed,) = [event for event in events if event["event"] == "resume"]
    assert resumed["iteration"] == stopped["iteration"] and resumed["world_size"] == 2
    assert summary_iterations(run["run_dir"]) == 60
    # Every iteration is logged once: the ranks stopped together and nothing was trained twice.
    iterations = [json.loads(line)["iteration"] for line in metrics.read_text().splitlines()]
    assert sorted(iterations) == sorted(set(iterations)) and len(iterations) == 60


def test_killed_training_step_is_requeued_and_resumes_from_its_latest_checkpoint(slurm_cluster, tmp_path):
    result = train(slurm_cluster, tmp_path, "algo.max_iterations=100", "algo.save_interval=10")
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    run_dir = run["run_dir"]
    seen = wait_for(lambda: checkpoint_iterations(run_dir), "a first checkpoint", interval=0.05)
    (start,) = [event for event in ledger(run_dir) if event["event"] == "process_start"]
    os.kill(start["pid"], signal.SIGKILL)  # As the OOM killer or a lost node would end it: no checkpoint now.
    on_disk_at_kill = checkpoint_iterations(run_dir)

    states = slurm_cluster.wait_until_done(run["job_id"], timeout=300)
    assert states == {run["job_id"]: "COMPLETED"}, Path(run["log"]).read_text()[-3000:]
    assert slurm_cluster.job_history(run["job_id"]) == ["REQUEUED", "COMPLETED"]
    events = ledger(run_dir)
    assert not any(event["event"] == "end" and event["how"] == "interrupted" for event in events)
    (resumed,) = [event for event in events if event["event"] == "resume"]
    # The latest checkpoint when the step died (at most one more may have landed while the kill was delivered).
    assert resumed["iteration"] >= seen[-1] and resumed["iteration"] % 10 == 0
    assert resumed["iteration"] in on_disk_at_kill + [on_disk_at_kill[-1] + 10]
    assert summary_iterations(run_dir) == 100


def rank_process(job_id: str, rank: int) -> int:
    """Pid of the training process of ``rank`` in the running job ``job_id`` (the task srun started there)."""
    table = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    for line in table.splitlines():
        pid, _, args = line.strip().partition(" ")
        if "submitit" not in args:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SLURM_JOB_ID={job_id}".encode() in environ and f"SLURM_PROCID={rank}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no training process of rank {rank} in job {job_id}:\n{table}")


def test_a_rank_killed_on_one_node_ends_the_step_and_the_job_resumes_with_both_ranks(slurm_cluster, tmp_path):
    """One rank dies (the OOM killer, a lost GPU): the other must not wait in a collective for it. The step ends at
    once (Slurm's ``--kill-on-bad-exit``; on this CPU cluster gloo also sees the peer gone), counts as killed from
    outside and the job is requeued; it resumes from the latest checkpoint with two ranks and trains every iteration
    once."""
    result = train(slurm_cluster, tmp_path, "launcher.nodes=2", "algo.max_iterations=80", "algo.save_interval=10")
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    run_dir = run["run_dir"]
    wait_for(lambda: checkpoint_iterations(run_dir), "a first checkpoint", interval=0.05)
    os.kill(rank_process(run["job_id"], rank=1), signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: slurm_cluster.job_history(run["job_id"])[:1] == ["REQUEUED"], "the requeue", timeout=120)
    # Rank 0 did not wait out a collective timeout (gloo's and NCCL's are minutes) before the job came back.
    assert time.monotonic() - killed_at < 60
    states = slurm_cluster.wait_until_done(run["job_id"], timeout=300)
    assert states == {run["job_id"]: "COMPLETED"}, Path(run["log"]).read_text()[-3000:]
    assert slurm_cluster.job_history(run["job_id"]) == ["REQUEUED", "COMPLETED"]
    (resumed,) = [event for event in ledger(run_dir) if event["event"] == "resume"]
    assert resumed["world_size"] == 2 and resumed["iteration"] % 10 == 0 and resumed["iteration"] > 0
    assert summary_iterations(run_dir) == 80


def run_with_a_failing_rank(cluster, tmp_path: Path, failing: str, *overrides: str) -> tuple[dict, str, str]:
    """A two-node run of the toy task whose rank fails as ``RLFORGE_TEST_FAILING_RANK=failing`` says (``R:STEPS``,
    see tests/slurm/failing_rank), waited for: its record, its final state and the failing rank 1's stderr."""
    env = {"PYTHONPATH": str(REPO / "tests" / "slurm" / "failing_rank"), "RLFORGE_TEST_FAILING_RANK": failing}
    result = train(cluster, tmp_path, "launcher.nodes=2", "task.kind=failing_rank_toy", *overrides, env=env)
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    states = cluster.wait_until_done(run["job_id"], timeout=120)
    rank_one_log = Path(run["log"].replace("_0_log.out", "_1_log.err")).read_text()
    return run, states[run["job_id"]], rank_one_log


def test_a_rank_that_fails_ends_the_step_and_the_job_fails_without_a_requeue(slurm_cluster, tmp_path):
    """A Python error on one rank (a bug, not a lost machine): Slurm ends the other rank at once and the job fails
    with that error in its rank's log; it is not requeued, where the same error would come back."""
    overrides = ("algo.max_iterations=1000", "algo.save_interval=10")
    run, state, rank_one_log = run_with_a_failing_rank(slurm_cluster, tmp_path, "1:200", *overrides)
    assert state == "FAILED", Path(run["log"]).read_text()[-3000:] + rank_one_log[-3000:]
    assert slurm_cluster.job_history(run["job_id"]) == ["FAILED"]
    assert "rank 1 fails at step 201 (test)" in rank_one_log
    # Rank 0 trained on only until its peer failed: far from the 1,000 iterations it would have run alone.
    assert not (Path(run["run_dir"]) / "summary.json").exists()
    assert len((Path(run["run_dir"]) / "metrics.jsonl").read_text().splitlines()) < 100


def test_a_rank_that_fails_at_start_up_ends_the_step_instead_of_leaving_its_peer_waiting(slurm_cluster, tmp_path):
    """Rank 1 fails before it joins the process group: without Slurm ending the step, rank 0 would wait for it at
    the rendezvous until torch.distributed's timeout (30 minutes with gloo), holding both nodes."""
    run, state, rank_one_log = run_with_a_failing_rank(slurm_cluster, tmp_path, "1:0")
    assert state == "FAILED", rank_one_log[-3000:]
    assert "rank 1 fails at start-up (test)" in rank_one_log
    assert slurm_cluster.job_history(run["job_id"]) == ["FAILED"]


def test_lost_node_requeues_the_job_which_resumes_on_another_node(slurm_cluster, tmp_path):
    result = train(slurm_cluster, tmp_path, "algo.max_iterations=150", "algo.save_interval=10")
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    run_dir = run["run_dir"]
    wait_for(lambda: checkpoint_iterations(run_dir), "a first checkpoint", interval=0.05)
    node = slurm_cluster.run("squeue", "-h", "-j", run["job_id"], "-o", "%N").stdout.strip()
    slurm_cluster.lose_node(node, run["job_id"])
    on_disk_at_loss = checkpoint_iterations(run_dir)
    try:
        states = slurm_cluster.wait_until_done(run["job_id"], timeout=300)
    finally:
        slurm_cluster.restore_node(node)
    assert states == {run["job_id"]: "COMPLETED"}, Path(run["log"]).read_text()[-3000:]

    def both_attempts() -> list[list[str]] | None:
        history = slurm_cluster.run("sacct", "-n", "-X", "-D", "-P", "-j", run["job_id"], "-o", "State,NodeList")
        found = [line.split("|") for line in history.stdout.splitlines() if line.strip()]
        return found if len(found) >= 2 else None

    # slurmdbd records the failed attempt asynchronously; under load it can arrive after the job has finished.
    attempts = wait_for(both_attempts, "both attempts of the job in sacct", timeout=30)
    assert [state.split()[0] for state, _ in attempts] == ["NODE_FAIL", "COMPLETED"], attempts
    assert attempts[0][1] == node and attempts[1][1] != node
    (resumed,) = [event for event in ledger(run_dir) if event["event"] == "resume"]
    assert resumed["iteration"] in on_disk_at_loss + [on_disk_at_loss[-1] + 10]
    assert summary_iterations(run_dir) == 150


def events_named(events: list[dict], name: str) -> list[dict]:
    return [event for event in events if event["event"] == name]


def test_job_preempted_by_a_higher_priority_job_comes_back_at_the_iteration_it_stopped(slurm_cluster, tmp_path):
    """PreemptMode=REQUEUE with a GraceTime: Slurm sends SIGTERM, not SIGUSR2, and would kill the job later."""
    # Iterations of 0.12 s on an idle machine and 1.16 s on average beside the other worker's simulator tests (one
    # suite run): the run lasts well beyond the few seconds the preemption takes to arrive, and ends inside the wait below.
    longer = ["task.num_envs=1024", "algo.num_steps_per_env=32", "algo.max_iterations=150", "algo.save_interval=1000"]
    result = train(slurm_cluster, tmp_path, *longer)
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    run_dir = run["run_dir"]
    metrics = Path(run_dir) / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, "training", interval=0.05)
    node = slurm_cluster.run("squeue", "-h", "-j", run["job_id"], "-o", "%N").stdout.strip()
    urgent = slurm_cluster.preempt_node(node)

    states = slurm_cluster.wait_until_done(run["job_id"], timeout=420)
    assert states == {run["job_id"]: "COMPLETED"}, Path(run["log"]).read_text()[-3000:]
    # One requeue, the run's own: Slurm did not requeue it a second time when the grace time was over.
    assert slurm_cluster.job_history(run["job_id"]) == ["REQUEUED", "COMPLETED"]
    assert slurm_cluster.wait_until_done(urgent) == {urgent: "COMPLETED"}
    events = ledger(run_dir)
    (signalled,) = events_named(events, "signal")
    (preempted,) = events_named(events, "preempted")
    (stopped,) = [event for event in events if event["event"] == "end" and event["how"] == "interrupted"]
    assert "SIGTERM" in signalled["reason"] and "SIGTERM" in stopped["reason"]
    assert preempted["signal"] == "SIGTERM" and preempted["preempt_time"] not in (None, "None")
    k = stopped["iteration"]
    assert 3 <= k < 150
    assert {"event": "checkpoint", "iteration": k} in [
        {"event": e["event"], "iteration": e.get("iteration")} for e in events
    ]
    (requeued,) = events_named(events, "requeued")
    assert requeued["by"] == "run" and "preempted" in requeued["why"]
    (resumed,) = events_named(events, "resume")
    assert resumed["iteration"] == k and resumed["checkpoint"] == f"model_{k}.pt"
    assert events[-1]["event"] == "end" and events[-1]["how"] == "completed" and events[-1]["iteration"] == 150
    assert summary_iterations(run_dir) == 150


def test_cancelled_job_stops_with_a_checkpoint_and_is_not_requeued(slurm_cluster, tmp_path):
    result = train(slurm_cluster, tmp_path, "algo.max_iterations=5000", "algo.save_interval=1000")
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    metrics = Path(run["run_dir"]) / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, "training", interval=0.05)
    slurm_cluster.run("scancel", run["job_id"])
    # Out of the queue for good: a requeued job would wait in it as PENDING.
    states = slurm_cluster.wait_until_done(run["job_id"])
    assert states == {run["job_id"]: "CANCELLED"}
    assert slurm_cluster.job_history(run["job_id"]) == ["CANCELLED"]
    events = ledger(run["run_dir"])
    (stopped,) = [event for event in events if event["event"] == "end" and event["how"] == "interrupted"]
    assert "SIGTERM" in stopped["reason"] and stopped["iteration"] in checkpoint_iterations(run["run_dir"])
    assert not events_named(events, "requeued") and not events_named(events, "preempted")
    assert len(events_named(events, "process_start")) == 1


def test_time_limit_before_the_first_iteration_requeues_the_job_instead_of_timing_out(slurm_cluster, tmp_path):
    """The time limit's SIGUSR2 comes while the first attempt is still starting up (a slow simulator build)."""
    result = train(
        slurm_cluster,
        tmp_path,
        "task.kind=slow_start_toy",
        "algo.max_iterations=6",
        "algo.save_interval=2",
        "launcher.time_limit_min=1",
        # slurmctld checks time limits every 30 s and signals at the first check that finds at most the delay plus
        # 30 s left: here 20 to 50 s after the start, when the first attempt is inside its slow build even on a
        # busy machine (with a delay of 55 s it came at the first check, before the build on a loaded one).
        "launcher.signal_delay_s=10",
        env={"PYTHONPATH": str(REPO / "tests" / "slurm" / "slow_start"), "RLFORGE_TEST_SLOW_START_S": "600"},
    )
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    states = slurm_cluster.wait_until_done(run["job_id"], timeout=400)
    log = Path(run["log"]).read_text()
    assert states == {run["job_id"]: "COMPLETED"}, log[-3000:]
    history = slurm_cluster.job_history(run["job_id"])
    # Each attempt may meet the early signal again; none may reach the time limit, which Slurm never requeues.
    assert "TIMEOUT" not in history and history[0] == "REQUEUED" and history[-1] == "COMPLETED", history
    events = ledger(run["run_dir"])
    first_attempt = [event for event in events if event["attempt"] == events[0]["attempt"]]
    assert "first_iteration" not in [event["event"] for event in first_attempt]
    # The run writes its start-up output (the slow build's line among it) to the run's startup.log.
    startup = (Path(run["run_dir"]) / "startup.log").read_text()
    assert "[slow start]" in log + startup
    (stopped,) = [event for event in first_attempt if event["event"] == "end"]
    assert stopped["how"] == "interrupted" and stopped["iteration"] == 0 and "SIGUSR2" in stopped["reason"]
    assert events_named(first_attempt, "requeued")
    # Nothing was saved before the stop: the next attempt started the same run from its beginning.
    resumed = events_named(events, "resume")[0]
    assert resumed["iteration"] == 0 and resumed["checkpoint"] is None
    assert events[-1]["event"] == "end" and events[-1]["how"] == "completed" and events[-1]["iteration"] == 6
    assert summary_iterations(run["run_dir"]) == 6


def test_step_killed_for_exceeding_its_memory_fails_once_instead_of_requeueing(slurm_cluster, tmp_path):
    result = train(slurm_cluster, tmp_path, "algo.max_iterations=5000", "launcher.mem_per_task_gb=0.2")
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    states = slurm_cluster.wait_until_done(run["job_id"])
    errors = Path(run["log"].replace("_log.out", "_log.err")).read_text()
    # Out of the queue for good: a requeued job would wait in it as PENDING.
    assert states[run["job_id"]] in {"FAILED", "OUT_OF_MEMORY"}, errors[-3000:]
    assert len(slurm_cluster.job_history(run["job_id"])) == 1
    assert "Exceeded job memory limit" in errors  # Slurm's own report, which the batch script read
    assert "ran out of memory" in errors and "not requeueing" in errors
    assert len(events_named(ledger(run["run_dir"]), "process_start")) <= 1


def test_a_file_changed_after_submission_does_not_change_what_a_requeued_job_runs(slurm_cluster, tmp_path):
    checkout = tmp_path / "checkout"
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listing.split("\0")):
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            (checkout / name).write_bytes((REPO / name).read_bytes())
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "submitted"]):
        subprocess.run(["git", *identity, *command], cwd=checkout, check=True, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout.strip()

    output_root = tmp_path / "runs"
    result = train(slurm_cluster, output_root, "algo.max_iterations=60", "algo.save_interval=5", checkout=checkout)
    assert result.returncode == 0, result.stderr
    (run,) = submitted(output_root)
    source = run["source"]
    assert source["commit"] == commit and source["dirty"] is False
    assert Path(source["path"]).parent == Path(run["run_dir"]).parent
    wait_for(lambda: checkpoint_iterations(run["run_dir"]), "a first checkpoint", interval=0.05)

    # Edits the requeued job would fail on, were it to run the checkout: in the code and in the config.
    with (checkout / "runner" / "train.py").open("a") as code:
        code.write("\nraise RuntimeError('edited after submission')\n")
    with (checkout / "conf" / "train.yaml").open("a") as config:
        config.write("\nsetting_added_after_submission: 1\n")
    slurm_cluster.run("scontrol", "requeue", run["job_id"])

    states = slurm_cluster.wait_until_done(run["job_id"], timeout=300)
    log = Path(run["log"]).read_text()
    errors = Path(run["log"].replace("_log.out", "_log.err")).read_text()
    assert states == {run["job_id"]: "COMPLETED"}, errors[-3000:]
    assert slurm_cluster.job_history(run["job_id"]) == ["REQUEUED", "COMPLETED"]
    assert "edited after submission" not in errors
    assert log.count(f"code from {source['path']} (source snapshot of commit {commit})") == 2
    # The run's manifest and every attempt's start name the snapshot (core reads RLFORGE_SOURCE_*).
    manifest = json.loads((Path(run["run_dir"]) / "manifest.json").read_text())
    assert manifest["source_snapshot"] == {"path": source["path"], "commit": commit, "dirty": False}
    events = ledger(run["run_dir"])
    assert [event["source"]["path"] for event in events_named(events, "process_start")] == [source["path"]] * 2
    (requeued,) = events_named(events, "requeued")
    assert requeued["by"] == "slurm"  # `scontrol requeue`: Slurm requeued it, the run only left
    (resumed,) = events_named(events, "resume")
    assert resumed["iteration"] > 0 and resumed["checkpoint"] == f"model_{resumed['iteration']}.pt"
    assert summary_iterations(run["run_dir"]) == 60


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["launcher.nodes=0"], "launcher.nodes=0"),
        (["launcher.nodes=3"], "partition debug has 2 node(s)"),
        (["launcher.gpus_per_node=8"], "has no GPUs"),
        (["launcher.partition=gpu-large"], "launcher.partition=gpu-large does not exist; partitions: debug, urgent"),
        (["launcher.time_limit_min=1", "launcher.signal_delay_s=120"], "launcher.signal_delay_s=120"),
        (["algo.max_iterations=many"], "algo.max_iterations"),
        (["task.num_envs=lots"], "task.num_envs"),
    ],
)
def test_bad_config_fails_on_the_submit_host_and_queues_nothing(slurm_cluster, tmp_path, overrides, message):
    before = slurm_cluster.all_job_ids()
    result = train(slurm_cluster, tmp_path, *overrides, timeout=120)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert slurm_cluster.all_job_ids() == before
    assert not list(tmp_path.glob("multirun/*/slurm_jobs.json"))


def test_unwritable_output_root_fails_before_anything_is_queued(slurm_cluster, tmp_path):
    before = slurm_cluster.all_job_ids()
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    result = train(slurm_cluster, blocked / "outputs")
    assert result.returncode != 0
    assert "is not writable" in result.stdout + result.stderr
    assert slurm_cluster.all_job_ids() == before


@pytest.mark.slow
def test_real_h1_flat_task_trains_through_slurm(slurm_cluster, tmp_path):
    result = train(
        slurm_cluster,
        tmp_path,
        "task.num_envs=8",
        "algo.num_steps_per_env=4",
        "algo.max_iterations=2",
        "algo.save_interval=1",
        task="h1_flat",
    )
    assert result.returncode == 0, result.stderr
    (run,) = submitted(tmp_path)
    states = slurm_cluster.wait_until_done(run["job_id"], timeout=900)
    assert states == {run["job_id"]: "COMPLETED"}, Path(run["log"]).read_text()[-3000:]
    assert checkpoint_iterations(run["run_dir"]) == [1, 2]
    assert summary_iterations(run["run_dir"]) == 2
    # The converted robot is kept on the shared file system, beside the kernel cache, for every node and attempt.
    assert list((tmp_path / ".rlforge-cache" / "robots").glob("*/h1.usda")), "robot not converted into cache_dir"
    assert (tmp_path / ".warp-cache").is_dir()
