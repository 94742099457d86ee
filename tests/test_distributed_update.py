"""The distributed PPO update (one flat gradient all-reduce per mini-batch) learns what rsl-rl's multi-GPU update
learns: two ranks, each with its own rollout, both updates on the same data and seeds.

The two ranks run this file under torchrun (its ``__main__`` part); each writes what it found, and the tests compare
in this process. On the CPU (gloo, always) the update runs eagerly: the very mini-batch step that NCCL records in a
CUDA graph. Where two GPUs are present the same comparison also runs on NCCL, with the graphed update beside it.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlforge_testing import CONF, ROOT

WORLD_SIZE = 2
EPOCHS, MINI_BATCHES = 2, 4
TOY = [
    "task=toy",
    "algo.speed.tf32=false",
    "task.num_envs=32",
    "algo.num_steps_per_env=16",
    f"algo.algorithm.num_learning_epochs={EPOCHS}",
    f"algo.algorithm.num_mini_batches={MINI_BATCHES}",
]


def _updates(out_dir: Path, device_kind: str) -> None:
    """One rank's part: a toy trainer in a group of two (gloo on ``cpu``, NCCL on ``cuda``), one rollout of its own
    (each rank's environments are seeded by its rank), then rsl-rl's update, the project's sync-free update and, on
    CUDA, its graphed update, on copies of the same learner."""
    import torch.distributed as dist
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from algos import speed
    from algos.ppo import build_trainer
    from core.distributed import GradientMean, dist_info
    from runner.setup import register
    from tasks import build_env

    info = dist_info()
    device = f"cuda:{info.local_rank}" if device_kind == "cuda" else "cpu"
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=TOY)
    torch.manual_seed(info.rank)
    handle = build_env(cfg.task, device, info.rank)
    trainer = build_trainer(
        handle.env,
        cfg,
        device=device,
        dist=info,
        run_dir=out_dir / f"rank-{info.rank}",
        seed=0,
        logger={"kind": "tensorboard"},
    )
    alg = trainer.alg
    alg.train_mode()
    alg.broadcast_parameters()  # as training starts: rank 0's networks everywhere
    with torch.inference_mode():
        obs = trainer.collect(trainer.env.get_observations())
        alg.compute_returns(obs)
    handle.close()
    # The adaptive schedule acts (a KL target far below one update's), so the all-reduced KL matters. Adam's eps is
    # raised in both learners so that a step depends on the gradients' scale: with 1e-8 Adam divides the scale away
    # and a sum left undivided by the world size would go unseen.
    alg.desired_kl = 1e-6
    for group in alg.optimizer.param_groups:
        group["eps"] = 1e-2
    theirs, ours, graphed = copy.deepcopy(alg), copy.deepcopy(alg), copy.deepcopy(alg)
    vars(theirs).pop("reduce_parameters", None)  # the trainer's timing wrapper reduces `alg`; the copy runs its own
    speed.use_fused_optimizer(ours.optimizer)

    gradient_numel = sum(p.numel() for p in ours.actor.parameters()) + sum(p.numel() for p in ours.critic.parameters())
    all_reduce = dist.all_reduce
    calls: list[int] = []

    def counted(tensor, *args, **kwargs):
        calls.append(tensor.numel())
        return all_reduce(tensor, *args, **kwargs)

    dist.all_reduce = counted
    try:
        torch.manual_seed(7)
        their_losses = theirs.update()
        their_calls, calls[:] = list(calls), []
        torch.manual_seed(7)
        our_losses = speed.sync_free_update(ours)
        our_calls = list(calls)
    finally:
        dist.all_reduce = all_reduce
    graphed_params = None
    if device_kind == "cuda":
        replay = speed.GraphedUpdate(graphed)
        torch.manual_seed(7)
        replay()
        graphed_params = [p.detach().clone().cpu() for p in [*graphed.actor.parameters(), *graphed.critic.parameters()]]
        replay.release()  # NCCL destroys no communicator while a graph holding its collectives lives
    trainer.release_graphs()

    # The flat mean on its own: rank r's gradients are r + 1 everywhere (two shapes), their mean (W + 1) / 2.
    weights = [torch.zeros(3, 2, device=device, requires_grad=True), torch.zeros(5, device=device, requires_grad=True)]
    for weight in weights:
        weight.grad = torch.full_like(weight, float(info.rank + 1))
    GradientMean(weights, info.world_size)()

    def params(learner) -> list[torch.Tensor]:
        return [p.detach().cpu().clone() for p in [*learner.actor.parameters(), *learner.critic.parameters()]]

    torch.save(
        {
            "their_params": params(theirs),
            "our_params": params(ours),
            "start_params": params(alg),
            "graphed_params": graphed_params,
            "their_lr": theirs.learning_rate,
            "our_lr": ours.learning_rate,
            "start_lr": alg.learning_rate,
            "their_losses": their_losses,
            "our_losses": our_losses,
            "their_gradient_calls": sum(1 for n in their_calls if n == gradient_numel),
            "our_gradient_calls": sum(1 for n in our_calls if n == gradient_numel),
            "our_calls": len(our_calls),
            "their_calls": len(their_calls),
            "flat_mean": [w.grad.cpu().clone() for w in weights],
        },
        out_dir / f"rank-{info.rank}.pt",
    )
    dist.destroy_process_group()


TOLERANCE = {"cpu": {"rtol": 1e-6, "atol": 1e-7}, "cuda": {"rtol": 1e-4, "atol": 1e-5}}
"""How close the parameters must be: on the CPU both updates run the same kernels; on CUDA fused and unfused Adam
and the GPU's reduction orders differ in the last bits, as in the single-GPU comparison of tests/test_speed.py."""


@pytest.fixture(
    scope="module",
    params=[
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(torch.cuda.device_count() < WORLD_SIZE, reason="NCCL ranks need two GPUs"),
        ),
    ],
)
def ranks(request, tmp_path_factory) -> tuple[str, list[dict]]:
    """The device kind, and what each of the two ranks found."""
    out_dir = tmp_path_factory.mktemp(f"distributed-update-{request.param}")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD_SIZE}",
        __file__,
        str(out_dir),
        request.param,
    ]
    # The checkout and the helpers go first; packages found through an existing PYTHONPATH stay found.
    path = [str(ROOT / "tests"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path)}
    result = subprocess.run(command, cwd=out_dir, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return request.param, [torch.load(out_dir / f"rank-{rank}.pt") for rank in range(WORLD_SIZE)]


def test_parameters_match_rsl_rl_multi_gpu_update_on_every_rank(ranks):
    device_kind, found_by_rank = ranks
    for rank, found in enumerate(found_by_rank):
        for index, (mine, reference, start) in enumerate(
            zip(found["our_params"], found["their_params"], found["start_params"], strict=True)
        ):
            assert not torch.equal(reference, start), f"rank {rank}: parameter {index} did not move"
            torch.testing.assert_close(
                mine,
                reference,
                **TOLERANCE[device_kind],
                msg=lambda text, where=f"rank {rank}, parameter {index}": f"{where}: {text}",
            )


def test_graphed_update_matches_the_eager_one_on_every_rank(ranks):
    device_kind, found_by_rank = ranks
    if device_kind != "cuda":
        pytest.skip("CUDA graphs need GPUs; on the CPU the same step runs eagerly")
    for found in found_by_rank:
        for mine, reference in zip(found["graphed_params"], found["our_params"], strict=True):
            torch.testing.assert_close(mine, reference, **TOLERANCE[device_kind])


def test_ranks_end_with_the_same_parameters_and_rate(ranks):
    _, (first, second) = ranks
    for mine, other in zip(first["our_params"], second["our_params"], strict=True):
        assert torch.equal(mine, other)
    assert first["our_lr"] == second["our_lr"]


def test_adaptive_rate_and_losses_match_rsl_rl(ranks):
    _, found_by_rank = ranks
    for found in found_by_rank:
        assert found["their_lr"] < found["start_lr"], "the all-reduced KL moved the rate"
        assert found["our_lr"] == pytest.approx(found["their_lr"], rel=1e-6)
        for key, value in found["their_losses"].items():
            assert found["our_losses"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    # Each rank's losses are its own rollout's: the ranks did learn from different data.
    assert found_by_rank[0]["our_losses"]["value"] != found_by_rank[1]["our_losses"]["value"]


def test_one_flat_gradient_all_reduce_per_mini_batch(ranks):
    _, found_by_rank = ranks
    for found in found_by_rank:
        assert found["our_gradient_calls"] == EPOCHS * MINI_BATCHES
        assert found["their_gradient_calls"] == EPOCHS * MINI_BATCHES  # rsl-rl's buckets hold this model whole too
        # Besides the gradients' and the KL's per mini-batch, only the normalizers' after the update: as rsl-rl.
        assert found["our_calls"] == found["their_calls"]


def test_flat_mean_divides_the_sum_by_the_world_size(ranks):
    expected = (WORLD_SIZE + 1) / 2
    _, found_by_rank = ranks
    for found in found_by_rank:
        for grad in found["flat_mean"]:
            assert torch.equal(grad, torch.full_like(grad, expected))


if __name__ == "__main__":
    _updates(Path(sys.argv[1]), sys.argv[2])
