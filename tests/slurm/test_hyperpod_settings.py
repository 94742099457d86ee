"""`launcher=hyperpod` without a cluster: composed settings, sbatch script, resume decision, submit-host checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from launchers import hyperpod, slurm_job


def plugin_params(compose_cfg, *overrides: str) -> dict:
    """The resolved `hydra.launcher` node, as the launcher receives it."""
    from omegaconf import OmegaConf

    cfg = compose_cfg(["launcher=hyperpod", "task=toy", *overrides], return_hydra_config=True)
    node = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    return {key: value for key, value in node.items() if key != "_target_"}


def test_launcher_settings_reach_the_slurm_plugin(compose_cfg):
    cfg = compose_cfg(["launcher=hyperpod", "launcher.output_root=/fsx/runs"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.output_root == "/fsx/runs"
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hyperpod_launcher.launcher.HyperPodLauncher"
    params = plugin_params(
        compose_cfg,
        "launcher.nodes=4",
        "launcher.gpus_per_node=8",
        "launcher.time_limit_min=90",
        "launcher.partition=p5",
        "launcher.setup=[module load cuda]",
    )
    assert params["nodes"] == 4 and params["gpus_per_node"] == 8 and params["timeout_min"] == 90
    assert params["partition"] == "p5" and params["setup_lines"] == ["module load cuda"]


def test_a_typo_in_a_launcher_setting_fails_at_composition(compose_cfg):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_cfg(["launcher=hyperpod", "launcher.node=2"])
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["launcher=hyperpod", "launcher.nodes=two"])


def test_sbatch_script_has_one_task_per_gpu_memory_per_task_and_the_requeue_lines(compose_cfg, tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    params = plugin_params(
        compose_cfg,
        "launcher.nodes=2",
        "launcher.gpus_per_node=8",
        "launcher.mem_per_task_gb=32",
        "launcher.cpus_per_task=12",
        "launcher.auto_resume=true",
        "launcher.max_requeues=3",
        "+launcher.sbatch_params={exclusive: true}",
    )
    parameters = hyperpod.executor_parameters(params, code_dir=Path("/code"), workdir=Path("/work"))
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
    assert "--auto-resume=1" in script.split("# command")[1]
    teardown = script.split("# teardown")[1]
    assert '"${SLURM_RESTART_COUNT:-0}" -lt 3' in teardown and 'scontrol requeue "$SLURM_JOB_ID"' in teardown


@pytest.mark.parametrize(("step_status", "requeued"), [(0, False), (1, False), (134, False), (137, True), (135, True)])
def test_only_a_step_killed_from_outside_is_requeued(tmp_path, step_status, requeued):
    """Run the batch-script teardown in bash with a fake `scontrol` that records its arguments."""
    import subprocess

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "called"}\n')
    (fake_bin / "scontrol").chmod(0o755)
    script = "\n".join([f"(exit {step_status})", *hyperpod.requeue_on_killed_step(max_requeues=2)])
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "SLURM_JOB_ID": "42", "SLURM_RESTART_COUNT": "1"}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert (tmp_path / "called").exists() == requeued
    if requeued:
        assert (tmp_path / "called").read_text().split() == ["requeue", "42"] and result.returncode == 0
    else:
        assert result.returncode == step_status
    env["SLURM_RESTART_COUNT"] = "2"  # The limit is reached: no more requeues.
    (tmp_path / "called").unlink(missing_ok=True)
    subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert not (tmp_path / "called").exists()


def test_cpu_nodes_run_the_asked_number_of_tasks_without_gpu_flags(compose_cfg):
    params = plugin_params(compose_cfg, "launcher.gpus_per_node=0", "launcher.tasks_per_node=2")
    parameters = hyperpod.executor_parameters(params, code_dir=Path("/code"), workdir=Path("/work"))
    assert parameters["ntasks_per_node"] == 2 and "gpus_per_node" not in parameters


def test_container_image_and_mounts_go_to_srun(compose_cfg):
    params = plugin_params(
        compose_cfg,
        "launcher.container_image=/fsx/images/train.sqsh",
        "launcher.container_mounts=[/fsx:/fsx,/opt/data:/data]",
        "launcher.auto_resume=false",
    )
    arguments = hyperpod.srun_arguments(params, workdir=Path("/fsx/code"))
    assert arguments == [
        "--container-image=/fsx/images/train.sqsh",
        "--container-workdir=/fsx/code",
        "--container-mounts=/fsx:/fsx,/opt/data:/data",
    ]


def test_auto_resume_follows_the_hyperpod_marker_unless_set(compose_cfg, tmp_path, monkeypatch):
    params = plugin_params(compose_cfg)
    monkeypatch.setattr(hyperpod, "HYPERPOD_MARKER", tmp_path / "absent")
    assert "--auto-resume=1" not in hyperpod.srun_arguments(params, workdir=tmp_path)
    monkeypatch.setattr(hyperpod, "HYPERPOD_MARKER", tmp_path)
    assert "--auto-resume=1" in hyperpod.srun_arguments(params, workdir=tmp_path)
    assert "--auto-resume=1" not in hyperpod.srun_arguments({**params, "auto_resume": False}, workdir=tmp_path)


def test_a_run_dir_with_a_checkpoint_is_continued(tmp_path):
    run_dir = tmp_path / "run"
    assert slurm_job.with_resume(["seed=1", "resume=false"], run_dir) == ["seed=1", "resume=false"]
    (run_dir / "checkpoints").mkdir(parents=True)
    for iteration in (5, 40, 10):
        (run_dir / "checkpoints" / f"model_{iteration}.pt").write_bytes(b"")
    assert slurm_job.latest_checkpoint(run_dir).name == "model_40.pt"
    assert slurm_job.with_resume(["seed=1", "resume=false"], run_dir) == ["seed=1", f"resume={run_dir.resolve()}"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nodes": 0}, "launcher.nodes=0"),
        ({"gpus_per_node": 64}, "launcher.gpus_per_node=64"),
        ({"gpus_per_node": 8, "tasks_per_node_override": 2}, "launcher.tasks_per_node=2"),
        ({"timeout_min": 0}, "launcher.time_limit_min=0"),
        ({"timeout_min": 2, "signal_delay_s": 120}, "launcher.signal_delay_s=120"),
        ({"mem_per_task_gb": -1}, "launcher.mem_per_task_gb=-1"),
    ],
)
def test_insane_requests_are_refused_with_the_setting_to_fix(compose_cfg, tmp_path, change, message):
    params = {**plugin_params(compose_cfg), **change}
    with pytest.raises(hyperpod.SubmitCheckError, match="nothing was submitted") as error:
        hyperpod.check_before_submit(params, tmp_path)
    assert message in str(error.value)


def test_an_unwritable_output_root_is_refused(compose_cfg, tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(hyperpod.SubmitCheckError, match="is not writable"):
        hyperpod.check_before_submit(plugin_params(compose_cfg), tmp_path / "a-file" / "outputs")


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
