"""Submitting runs and sweeps with `launcher=sagemaker` creates the right Training Jobs in the emulator."""

from __future__ import annotations

import copy
import io
import json
import re
import shlex
import tarfile

import pytest
from sagemaker_emulator import BUCKET, IMAGE, ROLE, command_of, run_train, sagemaker_args

from launchers.sagemaker_plan import JOB_NAME_LIMIT, container_overrides, job_stem

pytestmark = pytest.mark.sagemaker

JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def overrides_of(aws, request) -> list[str]:
    command = command_of(aws, request)
    return command[command.index("--") + 1 :]


def test_single_run_creates_one_job_with_its_settings(aws, monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("WANDB_API_KEY", "secret-value-from-submitter")
    status = run_train(
        sagemaker_args(
            "algo.max_iterations=2",
            "seed=7",
            "launcher.instance_type=ml.g5.12xlarge",
            "launcher.instance_count=2",
            "launcher.volume_size_gb=200",
            "launcher.max_runtime_s=7200",
            "launcher.spot=true",
            "launcher.max_wait_s=10800",
            "+launcher.tags={team: locomotion}",
            "+launcher.environment={NCCL_DEBUG: INFO}",
            "launcher.secret_env=[WANDB_API_KEY]",
            "launcher.subnets=[subnet-1]",
            "launcher.security_group_ids=[sg-1]",
        ),
        monkeypatch,
        tmp_path,
    )
    output = capfd.readouterr()
    assert status == 0, output.err
    assert len(aws.created_jobs) == 1
    request = aws.created_jobs[0]
    name = request["TrainingJobName"]
    assert JOB_NAME.match(name) and len(name) <= JOB_NAME_LIMIT
    assert name.startswith("rlforge-toy-")
    assert request["RoleArn"] == ROLE
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.12xlarge", "InstanceCount": 2, "VolumeSizeInGB": 200}
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 10800}
    assert request["VpcConfig"] == {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]}
    stem = name.rsplit("-", 1)[0]
    assert request["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/rlforge/{stem}/checkpoints",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/rlforge/{stem}/output"
    assert request["Environment"]["WANDB_API_KEY"] == "secret-value-from-submitter"
    assert request["Environment"]["NCCL_DEBUG"] == "INFO"
    tags = {tag["Key"]: tag["Value"] for tag in request["Tags"]}
    assert tags["team"] == "locomotion" and tags["task"] == "toy" and "git-commit" in tags

    # The job runs train.py with exactly the run's overrides, minus those that chose the launcher, through an
    # entry that replaces sm_train.sh's shell, so that it is the container's PID 1 and receives SageMaker's stop.
    assert overrides_of(aws, request) == ["task=toy", "algo.max_iterations=2", "seed=7"]
    assert command_of(aws, request)[:4] == ["exec", "python3", "-m", "launchers.sagemaker_entry"]

    # The job exists in the emulator, and the source it names was uploaded.
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert described["ResourceConfig"]["InstanceCount"] == 2
    code = next(c for c in request["InputDataConfig"] if c["ChannelName"] == "code")
    source_key = code["DataSource"]["S3DataSource"]["S3Uri"].split(f"s3://{BUCKET}/", 1)[1]
    with tarfile.open(fileobj=io.BytesIO(aws.read(source_key))) as archive:
        names = set(archive.getnames())
    assert {"train.py", "launchers/sagemaker_entry.py", "conf/train.yaml", "runner/train.py"} <= names
    assert not any(n.startswith((".venv/", "outputs/", ".git/")) or "__pycache__" in n for n in names)

    # Submission prints where to look, and the secret is in no file the launcher wrote.
    assert name in output.err + output.out
    assert f"console.aws.amazon.com/sagemaker/home?region=us-east-1#/jobs/{name}" in output.err + output.out
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "sagemaker_job.json" for p in written)
    assert all("secret-value-from-submitter" not in p.read_text(errors="replace") for p in written)


def test_sweep_creates_one_job_per_point_with_distinct_names_and_checkpoints(aws, monkeypatch, tmp_path):
    status = run_train(
        sagemaker_args("algo.max_iterations=2", "task.rewards.action_magnitude.weight=-0.01,-0.02,-0.05"),
        monkeypatch,
        tmp_path,
    )
    assert status == 0
    assert len(aws.created_jobs) == 3
    names = [r["TrainingJobName"] for r in aws.created_jobs]
    assert len(set(names)) == 3 and all(JOB_NAME.match(n) for n in names)
    checkpoints = [r["CheckpointConfig"]["S3Uri"] for r in aws.created_jobs]
    assert len(set(checkpoints)) == 3
    weights = [overrides_of(aws, r)[-1] for r in aws.created_jobs]
    assert weights == [f"task.rewards.action_magnitude.weight={w}" for w in ("-0.01", "-0.02", "-0.05")]
    # One source package serves the whole sweep.
    sources = {
        c["DataSource"]["S3DataSource"]["S3Uri"]
        for r in aws.created_jobs
        for c in r["InputDataConfig"]
        if c["ChannelName"] == "code"
    }
    assert len(sources) == 1 and len(aws.keys("rlforge/source/")) == 1
    listed = aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert sorted(j["TrainingJobName"] for j in listed) == sorted(names)


def printed_requests(text: str) -> list[dict]:
    """The requests a dry run printed: the JSON object after each "dry run, nothing sent" message."""
    decoder = json.JSONDecoder()
    requests = []
    for part in text.split("dry run, nothing sent")[1:]:
        request, _ = decoder.raw_decode(part[part.index("{") :])
        requests.append(request)
    return requests


def command_line(request: dict) -> str:
    """The command line sm_train.sh runs for a request, written as the SDK writes it."""
    source_code = request["source_code"]
    return " ".join([source_code["command"], *(shlex.quote(argument) for argument in source_code["args"])])


def test_dry_run_prints_the_request_and_sends_nothing(aws, monkeypatch, tmp_path, capfd):
    status = run_train(sagemaker_args("launcher.dry_run=true", "seed=1,2"), monkeypatch, tmp_path)
    output = capfd.readouterr()
    assert status == 0
    assert output.out.count("dry run, nothing sent") + output.err.count("dry run, nothing sent") == 2
    first = printed_requests(output.out + output.err)[0]
    assert (
        command_line(first) == "exec python3 -m launchers.sagemaker_entry --checkpoint-dir /opt/ml/checkpoints "
        f"--kernel-cache s3://{BUCKET}/rlforge/kernel-cache -- task=toy seed=1"
    )
    assert aws.created_jobs == []
    assert aws.keys() == []


def test_the_dry_run_prints_the_very_request_a_submission_hands_the_sdk(aws, monkeypatch, tmp_path, capfd):
    from launchers import sagemaker_aws

    handed = []
    real_create = sagemaker_aws.create_training_job

    def create_and_keep(sdk_session, request):
        handed.append(copy.deepcopy(request))
        return real_create(sdk_session, request)

    monkeypatch.setattr(sagemaker_aws, "create_training_job", create_and_keep)
    monkeypatch.setenv("WANDB_API_KEY", "secret-value-from-submitter")
    settings = ("launcher.spot=true", "launcher.secret_env=[WANDB_API_KEY]", "launcher.processes_per_instance=2")
    (tmp_path / "dry").mkdir()
    (tmp_path / "sent").mkdir()
    assert run_train(sagemaker_args("launcher.dry_run=true", *settings), monkeypatch, tmp_path / "dry") == 0
    (printed,) = printed_requests("".join(capfd.readouterr()))
    assert run_train(sagemaker_args(*settings), monkeypatch, tmp_path / "sent") == 0
    (sent,) = handed

    # The two launches differ only in what each launch draws anew: its token (in the job name and a tag), its
    # submission time, and the secret's value, which the dry run masks.
    assert printed["environment"].pop("WANDB_API_KEY") == "***"
    assert sent["environment"].pop("WANDB_API_KEY") == "secret-value-from-submitter"
    for request in (printed, sent):
        token = request["base_job_name"].rsplit("-", 2)[1]
        request["environment"].pop("RLFORGE_SUBMITTED_AT")
        request.update(json.loads(json.dumps(request).replace(token, "<token>")))
    assert printed == sent
    # ... and the request is the one SageMaker received.
    (created,) = aws.created_jobs
    assert (
        created["StoppingCondition"]["MaxWaitTimeInSeconds"] == sent["stopping_condition"]["max_wait_time_in_seconds"]
    )
    assert command_of(aws, created) == shlex.split(command_line(sent))


def test_job_names_stay_unique_and_within_the_limit():
    long_base = "a-very-long-project-name-for-humanoid-locomotion-on-rough-terrain"
    stems = {job_stem(long_base, token, num) for token in ("aaaaaa", "bbbbbb") for num in range(200)}
    assert len(stems) == 400
    for stem in stems:
        assert len(stem) + len("-20260101120000") <= JOB_NAME_LIMIT
        assert JOB_NAME.match(stem)


@pytest.mark.parametrize(
    ("overrides", "kept"),
    [
        (["launcher=sagemaker", "launcher.role=x", "task=toy"], ["task=toy"]),
        (["+launcher.tags={a: b}", "hydra.verbose=true", "seed=3", "resume=true"], ["seed=3"]),
        (["~task.rewards.x", "+task.rewards.y={weight: 1}"], ["~task.rewards.x", "+task.rewards.y={weight: 1}"]),
    ],
)
def test_container_overrides_drop_only_launch_settings(overrides, kept):
    assert container_overrides(overrides) == kept


def test_entry_starts_one_train_py_per_process_of_the_instance(tmp_path):
    from launchers.sagemaker_entry import distributed_layout, training_command

    environ = {
        "SM_HOST_COUNT": "2",
        "SM_CURRENT_HOST_RANK": "1",
        "SM_MASTER_ADDR": "algo-1",
        "SM_MASTER_PORT": "7777",
        "SM_NUM_GPUS": "4",
        "HOME": "/root",
    }
    layout = distributed_layout(environ, None)
    command, environments = training_command(["task=toy", "seed=3"], tmp_path, layout, "python3", environ)
    assert command[0] == "python3" and command[1].endswith("train.py"), "train.py itself, no torchrun in between"
    assert command[2:] == [
        "task=toy",
        "seed=3",
        f"hydra.run.dir={tmp_path / 'run'}",
        "warp_cache_dir=/root/.cache/warp",
    ]
    assert [v["RANK"] for v in environments] == ["4", "5", "6", "7"]
    assert {(v["WORLD_SIZE"], v["MASTER_ADDR"], v["MASTER_PORT"]) for v in environments} == {("8", "algo-1", "7777")}

    # One process in all: rank 0 of a world of one, its rendezvous on this machine.
    single, single_env = training_command(["task=toy"], tmp_path, distributed_layout({}, None), "python3", {})
    assert single[1].endswith("train.py") and len(single_env) == 1
    assert (single_env[0]["WORLD_SIZE"], single_env[0]["RANK"], single_env[0]["MASTER_ADDR"]) == ("1", "0", "127.0.0.1")

    # A run directory with a manifest is continued.
    (tmp_path / "run").mkdir()
    (tmp_path / "run/manifest.json").write_text("{}")
    resumed, _ = training_command(["task=toy"], tmp_path, distributed_layout({}, None), "python3", {})
    assert resumed[-1] == f"resume={tmp_path / 'run'}"


def test_a_dry_run_of_a_three_point_sweep_prints_its_most_cost(aws, monkeypatch, tmp_path, capfd):
    from core.accounting import load_prices

    settings = ("launcher.instance_type=ml.g5.2xlarge", "launcher.instance_count=2", "launcher.max_runtime_s=5400")
    assert run_train(sagemaker_args("launcher.dry_run=true", "seed=1,2,3", *settings), monkeypatch, tmp_path) == 0
    output = "".join(capfd.readouterr())
    expected = 3 * 2 * 1.5 * load_prices()["training_job"]["ml.g5.2xlarge"]  # jobs x instances x hours x price
    assert "3 run(s) x 2 ml.g5.2xlarge x 1.5 h" in output and f"= {expected:,.2f} USD" in output
    assert not aws.created_jobs and not aws.keys()
