"""In-container side of the SageMaker launcher: maps SM_* variables to torch.distributed and runs train.py.

SageMaker runs `python3 -m launchers.sagemaker_entry --checkpoint-dir /opt/ml/checkpoints -- <overrides>`
from the unpacked source. The run directory lives in the checkpoint folder, which SageMaker
syncs to the job's checkpoint S3 URI and restores into a restarted (Spot) job; a folder that
already holds checkpoints is resumed. After a successful run the final policy, exported
models and summary files are copied to SM_MODEL_DIR, which SageMaker uploads as model.tar.gz.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]
"""The unpacked source; train.py lies here."""

RUN_DIR_NAME = "run"
"""Name of the run directory inside the checkpoint folder."""

FAILURE_TAIL_LINES = 15
"""Lines of train.py output quoted in the failure file SageMaker shows as FailureReason."""

FAILURE_REASON_LIMIT = 1000
"""SageMaker truncates FailureReason to 1024 characters."""

MANIFEST = "manifest.json"
"""The file whose presence marks a run directory that can be continued (see core/rundir.py)."""

# Files and folders of a finished run shipped in the model artifact besides the latest
# checkpoint; missing ones are skipped.
MODEL_ARTIFACTS = (
    "summary.json",
    "manifest.json",
    "config.yaml",
    "overrides.yaml",
    "metrics.jsonl",
    "ledger.jsonl",
    "exported",
)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest iteration in `run_dir/checkpoints`, or None."""
    found = []
    for path in (run_dir / "checkpoints").glob("model_*.pt"):
        stem = path.stem.removeprefix("model_")
        if stem.isdigit():
            found.append((int(stem), path))
    return max(found)[1] if found else None


def distributed_layout(environ: Mapping[str, str], processes_per_instance: int | None) -> dict[str, int | str]:
    """Node count, node rank, master address/port and processes per node from SageMaker's variables."""
    gpus = int(environ.get("SM_NUM_GPUS", "0") or 0)
    return {
        "nnodes": int(environ.get("SM_HOST_COUNT", "1") or 1),
        "node_rank": int(environ.get("SM_CURRENT_HOST_RANK", "0") or 0),
        "master_addr": environ.get("SM_MASTER_ADDR", "127.0.0.1"),
        "master_port": int(environ.get("SM_MASTER_PORT", "7777") or 7777),
        "nproc_per_node": processes_per_instance or max(gpus, 1),
    }


WARP_CACHE_NAME = "warp-cache"


def training_command(
    overrides: Sequence[str], checkpoint_dir: Path, layout: Mapping[str, int | str], python: str = sys.executable
) -> tuple[list[str], dict[str, str]]:
    """The command that runs train.py with `overrides`, and the variables to add to its environment.

    One process in all: train.py directly, with the torch.distributed variables of a world of
    one. Otherwise one torchrun per instance, which sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* for
    each process it starts.
    """
    run_dir = checkpoint_dir / RUN_DIR_NAME
    arguments = [*overrides, f"hydra.run.dir={run_dir}"]
    if not any(override.startswith("warp_cache_dir=") for override in overrides):
        # Inside the synced checkpoint folder, compiled kernels come back with a restarted Spot job.
        arguments.append(f"warp_cache_dir={checkpoint_dir / WARP_CACHE_NAME}")
    if (run_dir / MANIFEST).is_file():
        # A restarted Spot job, or a new job given the checkpoint URI of an earlier run.
        arguments.append(f"resume={run_dir}")
    train_script = str(SOURCE_ROOT / "train.py")
    world_size = int(layout["nnodes"]) * int(layout["nproc_per_node"])
    if world_size == 1:
        extra_env = {
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(layout["master_port"]),
        }
        return [python, train_script, *arguments], extra_env
    command = [
        python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={layout['nnodes']}",
        f"--nproc_per_node={layout['nproc_per_node']}",
        f"--node_rank={layout['node_rank']}",
        f"--master_addr={layout['master_addr']}",
        f"--master_port={layout['master_port']}",
        train_script,
        *arguments,
    ]
    return command, {}


def export_model(run_dir: Path, model_dir: Path) -> list[str]:
    """Copy the latest checkpoint (as policy.pt too) and the run's summary files into `model_dir`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        shutil.copy2(checkpoint, model_dir / checkpoint.name)
        shutil.copy2(checkpoint, model_dir / "policy.pt")
        copied += [checkpoint.name, "policy.pt"]
    for name in MODEL_ARTIFACTS:
        source = run_dir / name
        if source.is_dir():
            shutil.copytree(source, model_dir / name, dirs_exist_ok=True)
            copied.append(name)
        elif source.is_file():
            shutil.copy2(source, model_dir / name)
            copied.append(name)
    return copied


def write_failure(output_dir: Path, status: int, tail: Sequence[str]) -> str:
    """Write the reason SageMaker reports for a failed job: the exit status and the last output.

    SageMaker keeps the first 1024 characters, so the output is cut from its start, keeping
    its end, where the error is.
    """
    header = f"train.py exited with status {status}; last output:\n"
    output = "\n".join(tail)[-(FAILURE_REASON_LIMIT - len(header)) :]
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "failure").write_text(header + output)
    return header + output


def run_training(command: list[str], extra_env: Mapping[str, str]) -> tuple[int, list[str]]:
    """Run the command with its output passed through; return its exit status and last lines.

    SIGTERM (SageMaker's stop and Spot interruption), SIGINT and SIGUSR2 are forwarded, so the
    training loop can save a checkpoint before the instance goes away.
    """
    environment = {**os.environ, **extra_env}
    child = subprocess.Popen(
        command, env=environment, cwd=str(SOURCE_ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def forward(signum, _frame):
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
        signal.signal(signum, forward)
    tail: collections.deque[str] = collections.deque(maxlen=FAILURE_TAIL_LINES)
    assert child.stdout is not None
    for line in child.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        tail.append(line.rstrip("\n"))
    return child.wait(), list(tail)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("/opt/ml/checkpoints"))
    parser.add_argument("--processes-per-instance", type=int, default=None)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for train.py (after --)")
    args = parser.parse_args(argv)

    layout = distributed_layout(os.environ, args.processes_per_instance)
    run_dir = args.checkpoint_dir / RUN_DIR_NAME
    command, extra_env = training_command(args.overrides, args.checkpoint_dir, layout)
    print(f"sagemaker_entry: {' '.join(command)}", flush=True)
    status, tail = run_training(command, extra_env)

    output_dir = Path(os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output"))
    if status != 0:
        write_failure(output_dir, status, tail)
        return status if status > 0 else 128 - status
    if int(layout["node_rank"]) == 0:
        model_dir = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
        copied = export_model(run_dir, model_dir)
        print(f"sagemaker_entry: exported {copied} to {model_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
