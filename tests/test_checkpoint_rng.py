"""A checkpoint's random generator states come back wherever the checkpoint is loaded: on the CPU, and on a GPU
(where ``torch.load(map_location=...)`` brings the states back as GPU tensors, which PyTorch refuses to set)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from algos.ppo import restore_rng
from rlforge_testing import only_run, run_train

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (none on CI machines)")


def _saved_then_drawn(path, device: str):
    """Save the generators' states to ``path``, then draw from each: what a restore must draw again."""
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(), "cuda": None}
    if device.startswith("cuda"):
        torch.cuda.manual_seed_all(4)
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"rng": rng}, path)
    return torch.rand(3), torch.rand(3, device=device), np.random.random(3), random.random()


def _drawn(device: str):
    return torch.rand(3), torch.rand(3, device=device), np.random.random(3), random.random()


def _same(a, b) -> bool:
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and np.array_equal(a[2], b[2]) and a[3] == b[3]


def test_generators_restored_from_a_checkpoint_loaded_on_the_cpu(tmp_path):
    expected = _saved_then_drawn(tmp_path / "c.pt", "cpu")
    restore_rng(torch.load(tmp_path / "c.pt", map_location="cpu", weights_only=False)["rng"])
    assert _same(_drawn("cpu"), expected)


@needs_cuda
def test_generators_restored_from_a_checkpoint_loaded_onto_the_gpu(tmp_path):
    expected = _saved_then_drawn(tmp_path / "c.pt", "cuda")
    loaded = torch.load(tmp_path / "c.pt", map_location="cuda:0", weights_only=False)["rng"]
    assert loaded["torch"].is_cuda, "as a GPU run's resume loads it"
    restore_rng(loaded)
    assert _same(_drawn("cuda"), expected)


@needs_cuda
def test_a_gpu_run_resumes(toy_args, tmp_path):
    """Train the toy task on the GPU, then resume it there: the resume loads the checkpoint onto the GPU."""
    first = run_train([*toy_args, "device=cuda", "algo.max_iterations=1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_train([*toy_args, "device=cuda", "algo.max_iterations=2", "resume=true"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "from model_1.pt at iteration 1" in second.stdout
    assert (only_run(tmp_path / "outputs" / "toy") / "checkpoints" / "model_2.pt").is_file()
