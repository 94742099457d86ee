"""Every launcher setting does something: each field of a launcher's settings reaches the sbatch script or the
SageMaker request, or is listed here with what it does instead (`launcher=local`'s `runs_per_gpu`:
tests/test_local_pack.py).

A setting is set on the command line (`launcher.<field>=<value>`), composed, read by the launcher's own code and
rendered; the result must differ from the default's. A field added to a settings dataclass fails here until it
reaches its launcher's output or is listed with its reason.
"""

from __future__ import annotations

import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from launchers import hyperpod, sagemaker
from launchers.sagemaker_plan import LaunchError, PlannedJob, dry_run_location, plan_jobs
from launchers.settings import HyperPodSettings, SageMakerSettings, settings_from_config
from rlforge_testing import run_train, srun_on_path

# ---------------------------------------------------------------------------------------------------------- HyperPod

# Field: (the override that sets it, the overrides both renders share so that it applies). A dict setting takes `+`
# to add keys.
HYPERPOD_CHANGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "nodes": ("launcher.nodes=2", ()),
    "gpus_per_node": ("launcher.gpus_per_node=4", ()),
    "tasks_per_node": ("launcher.tasks_per_node=2", ("launcher.gpus_per_node=0",)),
    "cpus_per_task": ("launcher.cpus_per_task=12", ()),
    "mem_per_task_gb": ("launcher.mem_per_task_gb=8", ()),
    "partition": ("launcher.partition=p5", ()),
    "account": ("launcher.account=research", ()),
    "qos": ("launcher.qos=high", ()),
    "instance_type": ("launcher.instance_type=ml.p5.48xlarge", ()),
    "time_limit_min": ("launcher.time_limit_min=90", ()),
    "signal_delay_s": ("launcher.signal_delay_s=300", ()),
    "max_requeues": ("launcher.max_requeues=3", ()),
    "setup": ("launcher.setup=[module load cuda]", ()),
    "efa": ("launcher.efa=false", ()),
    "efa_device_rdma": ("launcher.efa_device_rdma=true", ()),
    "output_root": ("launcher.output_root={tmp}/elsewhere", ()),
    "python": ("launcher.python=/opt/venv/bin/python", ()),
    "container_image": ("launcher.container_image=/fsx/images/train.sqsh", ()),
    "container_mounts": ("launcher.container_mounts=[/fsx:/fsx]", ("launcher.container_image=/fsx/images/train.sqsh",)),
    "srun_args": ("launcher.srun_args=['--mpi=pmix']", ()),
    "sbatch_params": ("+launcher.sbatch_params={exclusive: true}", ()),
    "auto_resume": ("launcher.auto_resume=true", ()),
    "requeue_failed_steps": ("launcher.requeue_failed_steps=false", ()),
    "source_snapshot": ("launcher.source_snapshot=false", ()),
    "array_parallelism": ("launcher.array_parallelism=1", ()),
    "runs_per_gpu": ("launcher.runs_per_gpu=2", ()),
}
# Fields that do not shape the batch script, and what they do instead.
HYPERPOD_ELSEWHERE = {
    "name": "names the launcher in the run's manifest and ledger, which the run writes from cfg.launcher.name",
    "dry_run": "prints the batch script and the estimated cost instead of submitting "
    "(tests/slurm/test_hyperpod_settings.py::test_a_dry_run_of_a_three_point_sweep_prints_the_script_and_its_most_cost)",
    "wait": "the submit host follows the jobs to their end (tests/slurm/test_hyperpod_cluster.py submits with it)",
    "poll_interval_s": "seconds between two state checks of the submit host while it follows the jobs (`wait`)",
}


def git_work_tree(folder: Path, content: str) -> Path:
    """A small git work tree holding a train.py, committed."""
    folder.mkdir(parents=True)
    (folder / "train.py").write_text(content)
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "source"]):
        subprocess.run(["git", *identity, *command], cwd=folder, check=True, capture_output=True)
    return folder


def batch_script(compose_cfg, overrides: list[str], code_dir: Path, runs: int = 2) -> str:
    """The batch script submitit writes for a sweep of `runs` runs with these settings, as sbatch would get it."""
    cfg = compose_cfg(
        ["launcher=hyperpod", "task=toy", "hydra.sweep.dir=${output_root}/multirun/sweep", *overrides],
        return_hydra_config=True,
    )
    settings = settings_from_config(cfg, HyperPodSettings)
    sweep_dir = str(cfg.hydra.sweep.dir)
    with srun_on_path(code_dir):
        executor = hyperpod.make_executor(
            settings,
            job_name=str(cfg.task.name),
            sweep_dir=sweep_dir,
            code_dir=code_dir,
            workdir=code_dir,
            source=hyperpod.source_for(settings, code_dir, Path(sweep_dir).resolve()),
        )
    # What submitit's map_array adds for a job array: a task per run, or per `runs_per_gpu` runs when packed.
    executor.parameters["map_count"] = hyperpod.array_tasks(settings, runs)
    return executor._make_submission_file_text(executor._submitit_command_str, "uid")


@pytest.mark.parametrize("name", [setting.name for setting in fields(HyperPodSettings)])
def test_every_hyperpod_setting_reaches_the_batch_script(compose_cfg, tmp_path, monkeypatch, name):
    if name in HYPERPOD_ELSEWHERE:
        assert name not in HYPERPOD_CHANGES
        return
    assert name in HYPERPOD_CHANGES, (
        f"launcher.{name} is new: make it reach the batch script (and add it to HYPERPOD_CHANGES), "
        "or list it in HYPERPOD_ELSEWHERE with what it does"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hyperpod, "HYPERPOD_MARKER", tmp_path / "not-a-hyperpod-node")
    code_dir = git_work_tree(tmp_path / "code", "")
    override, shared = HYPERPOD_CHANGES[name]
    override = override.replace("{tmp}", str(tmp_path))
    assert override.lstrip("+").startswith(f"launcher.{name}=")

    default = batch_script(compose_cfg, list(shared), code_dir)
    changed = batch_script(compose_cfg, [*shared, override], code_dir)
    assert changed != default, f"{override} changes nothing in the batch script"


def _exported_after_efa_setup(tmp_path: Path, driver: str, environment: dict[str, str], preset: dict[str, str]):
    """What a node whose RDMA device is bound to ``driver`` exports after the EFA lines of the batch script."""
    devices = tmp_path / "infiniband"
    (devices / "rdmap0s6" / "device").mkdir(parents=True)
    (tmp_path / "drivers" / driver).mkdir(parents=True)
    (devices / "rdmap0s6" / "device" / "driver").symlink_to(tmp_path / "drivers" / driver)
    script = "\n".join([*hyperpod.efa_setup(environment, str(devices)), "env"])
    clean = {"PATH": "/usr/bin:/bin", **preset}
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=clean, check=True)
    exported = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return exported, result.stdout


def test_efa_settings_are_exported_on_a_node_with_an_efa_device_only(tmp_path):
    environment = {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1"}
    exported, printed = _exported_after_efa_setup(tmp_path / "efa", "efa", environment, {})
    assert exported["FI_PROVIDER"] == "efa" and exported["FI_EFA_USE_DEVICE_RDMA"] == "1"
    assert "[hyperpod] EFA device found: FI_PROVIDER=efa FI_EFA_USE_DEVICE_RDMA=1" in printed
    exported, printed = _exported_after_efa_setup(tmp_path / "mellanox", "mlx5_core", environment, {})
    assert "FI_PROVIDER" not in exported and "EFA device found" not in printed


def test_a_value_the_job_already_holds_is_kept(tmp_path):
    exported, _ = _exported_after_efa_setup(tmp_path, "efa", {"FI_PROVIDER": "efa"}, {"FI_PROVIDER": "tcp"})
    assert exported["FI_PROVIDER"] == "tcp"


def test_the_batch_script_exports_fi_provider_on_efa_nodes_unless_efa_is_off(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hyperpod, "HYPERPOD_MARKER", tmp_path / "not-a-hyperpod-node")
    code_dir = git_work_tree(tmp_path / "code", "")
    script = batch_script(compose_cfg, [], code_dir)
    assert "\n".join(hyperpod.efa_setup({"FI_PROVIDER": "efa"})) in script
    rdma = batch_script(compose_cfg, ["launcher.efa_device_rdma=true"], code_dir)
    assert "\n".join(hyperpod.efa_setup({"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1"})) in rdma
    assert "rlforge_efa" not in batch_script(compose_cfg, ["launcher.efa=false"], code_dir)


def test_packed_runs_make_fewer_array_tasks_each_asking_for_the_resources_of_its_runs(
    compose_cfg, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hyperpod, "HYPERPOD_MARKER", tmp_path / "not-a-hyperpod-node")
    code_dir = git_work_tree(tmp_path / "code", "")
    per_run = ["launcher.mem_per_task_gb=8", "launcher.cpus_per_task=4"]
    alone = batch_script(compose_cfg, per_run, code_dir, runs=4)
    packed = batch_script(compose_cfg, [*per_run, "launcher.runs_per_gpu=2"], code_dir, runs=4)
    assert "#SBATCH --array=0-3" in alone and "#SBATCH --array=0-1" in packed
    assert "#SBATCH --mem=8192MB" in alone and "#SBATCH --mem=16384MB" in packed
    assert "#SBATCH --cpus-per-task=4" in alone and "#SBATCH --cpus-per-task=8" in packed
    # One Slurm task per array task still: the task starts its runs' processes itself, sharing its one GPU.
    assert "#SBATCH --ntasks-per-node=1" in packed and "#SBATCH --gpus-per-node=1" in packed
    assert hyperpod.pack(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"runs_per_gpu": 0}, "launcher.runs_per_gpu=0: give 1"),
        ({"runs_per_gpu": 2, "nodes": 2}, "needs launcher.nodes=1 and launcher.gpus_per_node=1"),
        ({"runs_per_gpu": 2, "gpus_per_node": 8}, "set launcher.runs_per_gpu=1 for multi-GPU or multi-node runs"),
        ({"runs_per_gpu": 2, "gpus_per_node": 0, "tasks_per_node": 2}, "with tasks_per_node null or 1"),
    ],
)
def test_packing_that_cannot_work_is_refused_with_what_to_change(tmp_path, change, message):
    settings = HyperPodSettings(dry_run=True, **change)
    with pytest.raises(hyperpod.SubmitCheckError, match="nothing was submitted") as error:
        hyperpod.check_before_submit(settings, tmp_path)
    assert message in str(error.value)
    # Packing one run per GPU task on one node, or on CPU nodes, passes.
    for fine in ({"gpus_per_node": 1}, {"gpus_per_node": 0}):
        hyperpod.check_before_submit(HyperPodSettings(dry_run=True, runs_per_gpu=2, **fine), tmp_path)


def test_a_packed_task_passes_stop_signals_on_and_ends_as_a_killed_step_when_a_point_was_killed():
    import os
    import signal

    from core import lifecycle
    from launchers import slurm_job

    lifecycle.clear()
    passed_on: list[int] = []
    with slurm_job.StopSignals(job_id="", restarts_before=0, on_signal=passed_on.append) as signals:
        os.kill(os.getpid(), signal.SIGUSR2)
    # The task's own process trains nothing: the signal goes on to its points, whose runs take it.
    assert signals.received == ["SIGUSR2"] and passed_on == [signal.SIGUSR2]
    assert lifecycle.stop_requested() is None
    assert signals.decision().kind is slurm_job.StopKind.REQUEUE
    # What the batch script's teardown then sees: a lost process is requeued, a crash of the code is not.
    assert slurm_job.killed_points_status([signal.SIGKILL]) == 137
    assert slurm_job.killed_points_status([signal.SIGKILL, signal.SIGSEGV]) == 139


def test_the_dry_run_of_a_packed_sweep_shows_each_tasks_runs_and_counts_the_cost_in_array_tasks(tmp_path):
    from core.accounting import load_prices

    result = run_train(
        [
            "-m",
            "launcher=hyperpod",
            "task=toy",
            "launcher.dry_run=true",
            "launcher.instance_type=ml.p5.48xlarge",
            "launcher.time_limit_min=60",
            "launcher.runs_per_gpu=2",
            f"launcher.output_root={tmp_path}",
            "seed=1,2,3,4",
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout
    assert "4 run(s) packed 2 per array task (launcher.runs_per_gpu), as one job array of 2 task(s)" in printed
    assert "  task 0: #0 seed=1 | #1 seed=2\n  task 1: #2 seed=3 | #3 seed=4\n" in printed
    assert "#SBATCH --array=0-1" in printed
    expected = 2 * 1 * 1.0 * load_prices()["hyperpod"]["ml.p5.48xlarge"]  # array tasks x nodes x hours x price
    assert "2 array task(s) x 1 ml.p5.48xlarge x 1 h" in printed and f"= {expected:,.2f} USD" in printed
    assert not list(tmp_path.glob("multirun/*/slurm_jobs.json"))


def test_device_rdma_without_efa_is_refused(tmp_path):
    settings = HyperPodSettings(efa=False, efa_device_rdma=True, dry_run=True)
    with pytest.raises(hyperpod.SubmitCheckError, match="launcher.efa_device_rdma=true needs launcher.efa=true"):
        hyperpod.check_before_submit(settings, tmp_path)


# --------------------------------------------------------------------------------------------------------- SageMaker

ROLE = "arn:aws:iam::123456789012:role/SageMakerTraining"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/rlforge:test"

# Field: (the override that sets it, the overrides both requests share so that it applies).
SAGEMAKER_CHANGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "role": ("launcher.role=arn:aws:iam::123456789012:role/Other", ()),
    "region": ("launcher.region=eu-west-1", ()),
    "image_uri": ("launcher.image_uri=123456789012.dkr.ecr.us-east-1.amazonaws.com/rlforge:other", ()),
    "instance_type": ("launcher.instance_type=ml.p4d.24xlarge", ()),
    "instance_count": ("launcher.instance_count=2", ()),
    "processes_per_instance": ("launcher.processes_per_instance=2", ()),
    "volume_size_gb": ("launcher.volume_size_gb=200", ()),
    "max_runtime_s": ("launcher.max_runtime_s=3600", ()),
    "spot": ("launcher.spot=true", ()),
    "max_wait_s": ("launcher.max_wait_s=200000", ("launcher.spot=true",)),
    "output_path": ("launcher.output_path=s3://other-bucket/runs", ()),
    "checkpoint_s3_uri": ("launcher.checkpoint_s3_uri=s3://other-bucket/checkpoints", ()),
    "base_job_name": ("launcher.base_job_name=mine", ()),
    "project_name": ("launcher.project_name=other", ()),
    "tags": ("+launcher.tags={team: locomotion}", ()),
    "environment": ("+launcher.environment={NCCL_DEBUG: INFO}", ()),
    "secret_env": ("launcher.secret_env=[RLFORGE_TEST_SECRET]", ()),
    "subnets": ("launcher.subnets=[subnet-2]", ("launcher.subnets=[subnet-1]", "launcher.security_group_ids=[sg-1]")),
    "security_group_ids": (
        "launcher.security_group_ids=[sg-2]",
        ("launcher.subnets=[subnet-1]", "launcher.security_group_ids=[sg-1]"),
    ),
    "keep_alive_s": ("launcher.keep_alive_s=600", ()),
    "kernel_cache_s3_uri": ("launcher.kernel_cache_s3_uri=null", ()),
    "source_dir": ("launcher.source_dir={tmp}/other-source", ()),
}
# Fields that do not shape the request, and what they do instead.
SAGEMAKER_ELSEWHERE = {
    "name": "names the launcher in the composed config kept next to each job's record",
    "profile": "the AWS credentials the submit host sends with (checked below)",
    "max_parallel_jobs": "how many jobs of a sweep the submit host lets run at once "
    "(tests/sagemaker/test_sagemaker_follow.py::test_max_parallel_jobs_holds_back_further_sweep_points)",
    "wait": "the submit host follows the jobs to their end (tests/sagemaker/test_sagemaker_follow.py)",
    "poll_interval_s": "seconds between two status checks while following (tests/sagemaker/test_sagemaker_follow.py)",
    "dry_run": "prints the request instead of sending it "
    "(tests/sagemaker/test_sagemaker_submission.py::test_the_dry_run_prints_the_very_request_a_submission_hands_the_sdk)",
    "max_source_mb": "refuses a larger source package before anything is sent (checked below)",
}


def sagemaker_request(compose_cfg, overrides: list[str], source_dir: Path) -> dict:
    """The request (ModelTrainer's arguments) of a run with these settings, planned as a dry run plans it."""
    cfg = compose_cfg(
        [
            "launcher=sagemaker",
            "task=toy",
            f"launcher.role={ROLE}",
            f"launcher.image_uri={IMAGE}",
            f"launcher.source_dir={source_dir}",
            *overrides,
        ]
    )
    planned = [PlannedJob(job_num=0, settings=settings_from_config(cfg, SageMakerSettings), overrides=["task=toy"])]
    source = sagemaker.package(planned, source_dir.parent / "staging")
    environ = {"RLFORGE_TEST_SECRET": "secret"}
    region, output_path = dry_run_location(planned[0].settings, environ)
    (job,) = plan_jobs(
        planned,
        region=region,
        output_path=output_path,
        source=source,
        launch_token="abc123",
        submitted_at=0.0,
        environ=environ,
    )
    return job.request


@pytest.mark.parametrize("name", [setting.name for setting in fields(SageMakerSettings)])
def test_every_sagemaker_setting_reaches_the_request(compose_cfg, tmp_path, name):
    if name in SAGEMAKER_ELSEWHERE:
        assert name not in SAGEMAKER_CHANGES
        return
    assert name in SAGEMAKER_CHANGES, (
        f"launcher.{name} is new: make it reach the request (and add it to SAGEMAKER_CHANGES), "
        "or list it in SAGEMAKER_ELSEWHERE with what it does"
    )
    source_dir = git_work_tree(tmp_path / "source", "")
    git_work_tree(tmp_path / "other-source", "# other\n")
    override, shared = SAGEMAKER_CHANGES[name]
    override = override.replace("{tmp}", str(tmp_path))
    assert override.lstrip("+").startswith(f"launcher.{name}=")

    default = sagemaker_request(compose_cfg, list(shared), source_dir)
    changed = sagemaker_request(compose_cfg, [*shared, override], source_dir)
    assert changed != default, f"{override} changes nothing in the request"


def test_a_source_package_over_max_source_mb_is_refused(compose_cfg, tmp_path):
    source_dir = git_work_tree(tmp_path / "source", "x = 1\n" * 1000)
    with pytest.raises(LaunchError, match="launcher.max_source_mb"):
        sagemaker_request(compose_cfg, ["launcher.max_source_mb=0.0001"], source_dir)


def test_the_profile_is_the_one_the_submit_host_sends_with(tmp_path, monkeypatch):
    from launchers.sagemaker_aws import open_boto_session

    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    with pytest.raises(LaunchError, match="launcher.profile"):
        open_boto_session(SageMakerSettings(profile="no-such-profile", region="us-east-1"))


def test_hyperpod_keeps_every_cache_on_the_shared_file_system(compose_cfg):
    cfg = compose_cfg(["launcher=hyperpod", "launcher.output_root=/fsx/alice/runs"], return_hydra_config=True)
    assert cfg.warp_cache_dir == "/fsx/alice/runs/.warp-cache"
    assert cfg.cache_dir == "/fsx/alice/runs/.rlforge-cache"
    assert compose_cfg(["launcher=hyperpod", "cache_dir=/fsx/shared/rlforge"], return_hydra_config=True).cache_dir == (
        "/fsx/shared/rlforge"
    )
    assert compose_cfg([]).cache_dir is None


def test_cache_dir_moves_robots_terrains_and_mesh_analysis(tmp_path, monkeypatch):
    from runner.train import use_cache_dir
    from tasks import mesh_topology, terrain_cache
    from tasks.robots.usd_writer import cache_root

    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path / "elsewhere"))
    use_cache_dir(str(tmp_path / "shared" / "cache"))
    shared = (tmp_path / "shared" / "cache").resolve()
    assert shared.is_dir()
    assert cache_root() == shared / "robots"
    assert terrain_cache.cache_dir() == shared / "terrains"
    assert mesh_topology.cache_dir() == shared / "mesh_topology"
