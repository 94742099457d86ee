"""Jobs of a sweep share Warp's compiled kernels through the kernel cache prefix in the emulated S3.

Each job is played in a fresh container folder (fresh home, fresh /opt/ml, no warm pool), as a new instance starts:
the second job of a sweep finds the kernels the first one compiled and compiles none of them again."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sagemaker_emulator import BUCKET, REGION, command_of, play_job, run_train, sagemaker_args

from launchers.kernel_cache import cache_key, complete_entries, entry_of, local_files, package_versions, warp_version

pytestmark = pytest.mark.sagemaker

# A real Isaac Lab H1 run on the CPU, at its smallest: what it compiles is what a real start compiles.
H1_FLAT = ("device=cpu", "task.num_envs=4", "algo.num_steps_per_env=4", "algo.max_iterations=1")
# Warp's line for a module it had to build; a module found in the cache prints "(cached)" or nothing.
COMPILED = re.compile(r"^Module \S+ \S+ load on device '[^']+' took [\d.]+ ms\s+\(compiled\)", re.MULTILINE)


def compiled_modules(played, job_dir: Path) -> list[str]:
    """Warp's lines for modules compiled in a job: in the container's output, or in the run's startup.log where the
    compact console put the start-up's output."""
    startup = job_dir / "opt_ml/checkpoints/run/startup.log"
    return COMPILED.findall(played.stdout + (startup.read_text() if startup.is_file() else ""))


def ledger_events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def only(events: list[dict], name: str, **fields) -> dict:
    found = [e for e in events if e["event"] == name and all(e.get(k) == v for k, v in fields.items())]
    assert len(found) == 1, (name, fields, events)
    return found[0]


def container_to_first_iteration(events: list[dict]) -> float:
    return only(events, "first_iteration")["time"] - only(events, "container_start")["at"]


@pytest.mark.slow
def test_a_second_job_of_a_sweep_starts_with_the_kernels_the_first_compiled(aws, monkeypatch, tmp_path):
    submit = tmp_path / "submit"
    submit.mkdir()
    assert run_train(sagemaker_args(*H1_FLAT, "seed=1,2", task="h1_flat"), monkeypatch, submit) == 0
    first, second = aws.created_jobs
    for request in (first, second):
        assert f"--kernel-cache s3://{BUCKET}/rlforge/kernel-cache --" in " ".join(command_of(aws, request))
        assert request["Environment"]["AWS_DEFAULT_REGION"] == REGION  # the container's S3 client's region
    shared_prefix = f"rlforge/kernel-cache/{cache_key(package_versions(), 'cpu')}/"
    assert aws.keys(shared_prefix) == []

    # The first job finds nothing, compiles, and writes its kernels back after its first iteration.
    played = play_job(aws, first, tmp_path / "job1")
    assert played.returncode == 0, played.stdout[-3000:] + played.stderr[-3000:]
    assert "0 entries found, 0 already here, 0 fetched" in played.stdout
    assert compiled_modules(played, tmp_path / "job1")
    events = ledger_events(tmp_path / "job1/opt_ml/checkpoints/run")
    assert only(events, "kernel_cache_fetch")["entries"] == 0
    after_first_iteration = only(events, "kernel_cache_upload", when="first_iteration")
    compiled = complete_entries(local_files(tmp_path / "job1/.cache/warp" / warp_version()))
    shared = {entry_of(key.removeprefix(shared_prefix)) for key in aws.keys(shared_prefix)}
    assert shared == compiled and after_first_iteration["moved"] > 0
    assert after_first_iteration["moved"] + only(events, "kernel_cache_upload", when="exit")["moved"] == len(compiled)
    first_figures = (container_to_first_iteration(events), len(compiled_modules(played, tmp_path / "job1")))

    # The second job, on a fresh instance, starts with all of them and compiles none again.
    played = play_job(aws, second, tmp_path / "job2")
    assert played.returncode == 0, played.stdout[-3000:] + played.stderr[-3000:]
    events = ledger_events(tmp_path / "job2/opt_ml/checkpoints/run")
    fetched = only(events, "kernel_cache_fetch")
    assert fetched["entries"] == fetched["moved"] == len(shared) and fetched["already_there"] == 0
    assert fetched["seconds"] >= 0 and fetched["files"] == len(aws.keys(shared_prefix))
    assert f"{len(shared)} entries found, 0 already here, {len(shared)} fetched" in played.stdout
    assert compiled_modules(played, tmp_path / "job2") == []
    assert complete_entries(local_files(tmp_path / "job2/.cache/warp" / warp_version())) == shared
    assert [e["moved"] for e in events if e["event"] == "kernel_cache_upload"] == [0, 0]
    # The kernels never travel with the checkpoint folder SageMaker syncs.
    assert not [key for key in aws.keys("rlforge/") if "/checkpoints/" in key and "/wp_" in key]

    print(
        f"\ncontainer start to first iteration: first job {first_figures[0]:.1f} s ({first_figures[1]} modules "
        f"compiled), second job {container_to_first_iteration(events):.1f} s ({len(shared)} entries fetched "
        f"in {fetched['seconds']:.2f} s, none compiled)"
    )


def test_a_kernel_cache_that_cannot_be_reached_leaves_the_job_to_train(aws, monkeypatch, tmp_path):
    submit = tmp_path / "submit"
    submit.mkdir()
    missing = "s3://no-such-bucket-for-kernels/cache"
    toy = ("device=cpu", "task.num_envs=16", "algo.max_iterations=2", f"launcher.kernel_cache_s3_uri={missing}")
    assert run_train(sagemaker_args(*toy), monkeypatch, submit) == 0
    played = play_job(aws, aws.created_jobs[-1], tmp_path / "job")
    assert played.returncode == 0, played.stdout[-3000:] + played.stderr[-3000:]
    assert "WARNING: kernel cache fetch" in played.stdout and "NoSuchBucket" in played.stdout
    assert "Training Container Execution Completed" in played.stdout
    events = ledger_events(tmp_path / "job/opt_ml/checkpoints/run")
    assert "NoSuchBucket" in only(events, "kernel_cache_fetch")["error"]
    assert "NoSuchBucket" in only(events, "kernel_cache_upload", when="exit")["error"]
    assert only(events, "end")["how"] == "completed"


def test_the_kernel_cache_can_be_turned_off_or_moved(aws, monkeypatch, tmp_path):
    submit = tmp_path / "submit"
    submit.mkdir()
    assert run_train(sagemaker_args("launcher.kernel_cache_s3_uri=null"), monkeypatch, submit) == 0
    assert "--kernel-cache" not in command_of(aws, aws.created_jobs[-1])
    elsewhere = f"s3://{BUCKET}/shared/kernels"
    assert run_train(sagemaker_args(f"launcher.kernel_cache_s3_uri={elsewhere}/"), monkeypatch, submit) == 0
    command = command_of(aws, aws.created_jobs[-1])
    assert command[command.index("--kernel-cache") + 1] == elsewhere
    assert run_train(sagemaker_args("launcher.kernel_cache_s3_uri=file:///tmp/kernels"), monkeypatch, submit) != 0
    assert len(aws.created_jobs) == 2
