"""The loop's speed settings compute what rsl-rl computes: the sync-free update, the NaN watch, the graphed policy."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from algos import speed

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (none on CI machines)")


@contextmanager
def toy_trainer(
    compose_cfg, tmp_path: Path, device: str = "cpu", overrides: list[str] | None = None, log_dir: Path | None = None
):
    """A PPOTrainer on the toy task (64 envs, 16 steps), its environment closed on leaving; with ``log_dir`` it
    writes curves there (and keeps episode figures, which rsl-rl keeps only with a writer)."""
    from algos.ppo import build_trainer
    from core.distributed import dist_info
    from tasks import build_env

    cfg = compose_cfg(["task=toy", "task.num_envs=64", "algo.num_steps_per_env=16", *(overrides or [])])
    torch.manual_seed(0)
    handle = build_env(cfg.task, device, 0)
    trainer = build_trainer(
        handle.env,
        cfg,
        device=device,
        dist=dist_info(),
        run_dir=tmp_path,
        seed=0,
        logger={"kind": "tensorboard"},
        log_dir=None if log_dir is None else str(log_dir),
    )
    try:
        yield trainer
    finally:
        handle.close()


def _rollout(trainer) -> None:
    trainer.alg.train_mode()
    obs = trainer.env.get_observations().to(trainer.device)
    with torch.inference_mode():
        obs = trainer.collect(obs)
        trainer.alg.compute_returns(obs)


def test_sync_free_update_matches_rsl_rl_update(compose_cfg, tmp_path):
    with toy_trainer(compose_cfg, tmp_path, overrides=["algo.speed.sync_free_update=false"]) as trainer:
        _rollout(trainer)
        # Make the adaptive schedule act: a KL target far below what one update moves, so the rate drops.
        trainer.alg.desired_kl = 1e-6
        theirs, ours = copy.deepcopy(trainer.alg), copy.deepcopy(trainer.alg)
        start_lr = trainer.alg.learning_rate

    torch.manual_seed(7)
    their_losses = theirs.update()
    speed.use_fused_optimizer(ours.optimizer)
    torch.manual_seed(7)
    our_losses = speed.sync_free_update(ours)

    assert theirs.learning_rate < start_lr  # the schedule did change the rate, mini-batch by mini-batch
    assert ours.learning_rate == pytest.approx(theirs.learning_rate, rel=1e-5)
    assert set(our_losses) == set(their_losses)
    for key, value in their_losses.items():
        assert our_losses[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for mine, reference in zip(ours.actor.parameters(), theirs.actor.parameters(), strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-5)
    for mine, reference in zip(ours.critic.parameters(), theirs.critic.parameters(), strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-5)
    # The optimizer keeps a plain number as its rate, so checkpoints look as rsl-rl's do.
    assert all(isinstance(g["lr"], float) for g in ours.optimizer.param_groups)
    assert ours.storage.step == 0  # storage cleared, as rsl-rl's update leaves it


@pytest.mark.parametrize(
    ("lr", "kl", "expected"),
    [
        (1e-3, 0.05, 1e-3 / 1.5),  # above twice the target: slower
        (1e-3, 0.001, 1e-3 * 1.5),  # below half the target: faster
        (1e-3, 0.01, 1e-3),  # in between: kept
        (1e-3, 0.0, 1e-3),  # zero KL: kept (rsl-rl asks for kl > 0)
        (1.2e-5, 0.05, 1e-5),  # floor
        (9e-3, 0.0001, 1e-2),  # ceiling
    ],
)
def test_adaptive_rate_on_the_device_follows_rsl_rl(lr, kl, expected):
    rate = torch.tensor(lr)
    speed._adapt_learning_rate(rate, torch.tensor(kl), desired_kl=0.01)
    assert float(rate) == pytest.approx(expected, rel=1e-6)


def test_nan_watch_names_the_output_and_starts_over():
    watch = speed.NanWatch()
    clean = TensorDict({"policy": torch.zeros(4, 3)}, batch_size=[4])
    watch.add(clean, torch.zeros(4), torch.zeros(4, dtype=torch.long))
    watch.check()  # nothing found
    bad = TensorDict({"policy": torch.tensor([[0.0, float("nan"), 0.0]] * 4)}, batch_size=[4])
    watch.add(bad, torch.zeros(4), torch.zeros(4, dtype=torch.long))
    watch.add(clean, torch.tensor([0.0, float("nan"), 0.0, 0.0]), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"observation group 'policy', rewards"):
        watch.check()
    watch.add(clean, torch.zeros(4), torch.zeros(4, dtype=torch.long))
    watch.check()  # flags were reset


def test_unsupported_update_falls_back_to_rsl_rl(compose_cfg, tmp_path):
    with toy_trainer(compose_cfg, tmp_path) as trainer:
        assert trainer.sync_free
        trainer.alg.rnd = object()  # any RND module makes the update rsl-rl's
        assert speed.sync_free_supported(trainer.alg) == "random network distillation"


def test_a_distributed_learner_is_graphed_with_its_gradient_mean_inside_the_step(compose_cfg, tmp_path):
    """Distribution no longer keeps the update out of a graph: the step averages the gradients itself, over actor and
    critic in rsl-rl's order; one process has nothing to average."""
    from core.distributed import GradientMean

    with toy_trainer(compose_cfg, tmp_path) as trainer:
        alg = trainer.alg
        _rollout(trainer)
        assert speed.UpdateData(alg).reduce_gradients is None
        alg.is_multi_gpu, alg.gpu_world_size, alg.device = True, 2, "cuda:0"
        assert speed.graph_update_unsupported(alg) is None
        reduce = speed.UpdateData(alg).reduce_gradients
        assert isinstance(reduce, GradientMean) and reduce.world_size == 2
        expected = [*alg.actor.parameters(), *alg.critic.parameters()]
        assert len(reduce.params) == len(expected)
        assert all(mine is theirs for mine, theirs in zip(reduce.params, expected, strict=True))


def test_policy_step_from_separate_networks_equals_rsl_rl_act(compose_cfg, tmp_path):
    """The graphed step's eager half, fed by eager networks, gives rsl-rl's act bit for bit (samples included)."""
    with toy_trainer(compose_cfg, tmp_path) as trainer:
        alg = trainer.alg
        assert speed.graph_unsupported(alg) is None
        obs = trainer.env.get_observations().to(trainer.device)
        with torch.inference_mode():
            torch.manual_seed(3)
            theirs = alg.act(obs).clone()
            their_transition = copy.copy(alg.transition)
            alg.transition = type(alg.transition)()
            torch.manual_seed(3)
            ours = speed.act_with(alg, obs, speed.eager_networks(alg))
        assert torch.equal(ours, theirs)
        for field in ("values", "actions_log_prob"):
            assert torch.equal(getattr(alg.transition, field), getattr(their_transition, field)), field
        for mine, reference in zip(
            alg.transition.distribution_params, their_transition.distribution_params, strict=True
        ):
            assert torch.equal(mine, reference)
        assert alg.transition.observations is obs


@needs_cuda
def test_graphed_policy_matches_eager_and_follows_parameter_updates(compose_cfg, tmp_path):
    with toy_trainer(compose_cfg, tmp_path, device="cuda") as trainer:
        alg = trainer.alg
        alg.train_mode()
        obs = trainer.env.get_observations().to(trainer.device)
        with torch.inference_mode():
            graphed = speed.GraphedAct(alg, obs)
            first = graphed(obs).clone()
            values, mean = alg.transition.values.clone(), alg.transition.distribution_params[0].clone()
            alg.transition.clear()
            alg.act(obs)
            torch.testing.assert_close(alg.transition.values, values)
            torch.testing.assert_close(alg.transition.distribution_params[0], mean)
            alg.transition.clear()
            second = graphed(obs).clone()
            assert not torch.equal(first, second)  # a fresh sample each step
            other = obs.clone()
            other["policy"] += 1.0
            graphed(other)
            assert not torch.equal(alg.transition.values, values)  # reads the new observations
        with torch.no_grad():
            for p in alg.critic.parameters():
                p.add_(0.1)
        with torch.inference_mode():
            graphed(obs)
            changed = alg.transition.values.clone()
            alg.transition.clear()
            alg.act(obs)
            torch.testing.assert_close(alg.transition.values, changed)


@needs_cuda
def test_graphed_update_matches_the_eager_update_over_two_updates(compose_cfg, tmp_path):
    with toy_trainer(compose_cfg, tmp_path, device="cuda") as trainer:
        _rollout(trainer)
        trainer.alg.desired_kl = 1e-4  # the adaptive schedule moves the rate during the updates
        eager, graphed_alg = copy.deepcopy(trainer.alg), copy.deepcopy(trainer.alg)
    speed.use_fused_optimizer(eager.optimizer)
    data = speed.UpdateData(eager)
    graphed = speed.GraphedUpdate(graphed_alg)
    for update in range(2):  # the first replay follows the recording; the second, a real optimizer state
        eager.storage.step = graphed_alg.storage.step = eager.storage.num_transitions_per_env
        torch.manual_seed(update)
        eager_losses = speed.sync_free_update(eager, data)
        torch.manual_seed(update)
        graphed_losses = graphed()
        assert graphed_alg.learning_rate == pytest.approx(eager.learning_rate, rel=1e-6)
        for key, value in eager_losses.items():
            assert graphed_losses[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (update, key)
        for mine, reference in zip(graphed_alg.actor.parameters(), eager.actor.parameters(), strict=True):
            torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-5)
        for mine, reference in zip(graphed_alg.critic.parameters(), eager.critic.parameters(), strict=True):
            torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-5)
    assert eager.learning_rate != trainer.alg.learning_rate


def test_collector_is_on_again_after_a_run_that_fails_before_training(compose_cfg, tmp_path, monkeypatch):
    import gc

    import tasks
    from runner import train

    def no_simulator(*args, **kwargs):
        raise RuntimeError("no simulator")

    monkeypatch.setattr(tasks, "build_env", no_simulator)
    cfg = compose_cfg(["task=toy", f"output_root={tmp_path}"])
    assert cfg.algo.speed.freeze_gc and gc.isenabled()
    with pytest.raises(RuntimeError, match="no simulator"):
        train.run(cfg)
    assert gc.isenabled()


@needs_cuda
def test_released_graphs_are_destroyed_and_recorded_again_when_training_goes_on(compose_cfg, tmp_path):
    with toy_trainer(compose_cfg, tmp_path, device="cuda") as trainer:
        _rollout(trainer)
        trainer._update()
        recorded = (trainer._graphed_act, trainer._graphed_update)
        assert all(graphed is not None and graphed.graph is not None for graphed in recorded)
        trainer.release_graphs()
        assert all(graphed.graph is None for graphed in recorded)
        assert (trainer._graphed_act, trainer._graphed_update) == (None, None)
        _rollout(trainer)
        losses = trainer._update()
        assert trainer._graphed_act is not None and trainer._graphed_update is not None
        assert all(torch.isfinite(torch.tensor(value)) for value in losses.values())


def _logger_state(num_envs: int):
    """The part of rsl-rl's Logger that ``process_env_step`` reads and writes."""
    from collections import deque
    from types import SimpleNamespace

    return SimpleNamespace(
        writer=object(),
        ep_extras=[],
        rewbuffer=deque(maxlen=100),
        lenbuffer=deque(maxlen=100),
        cur_reward_sum=torch.zeros(num_envs),
        cur_episode_length=torch.zeros(num_envs),
    )


def test_episode_records_hand_over_what_rsl_rls_logger_keeps_step_by_step():
    from rsl_rl.utils.logger import Logger

    generator = torch.Generator().manual_seed(0)
    theirs, ours = _logger_state(32), _logger_state(32)
    records = speed.EpisodeRecords(ours, steps=16)
    for _ in range(5):  # more ended episodes than the buffers' 100 over the rollouts
        for step in range(16):
            rewards = torch.randn(32, generator=generator)
            dones = (torch.rand(32, generator=generator) < 0.15).float()
            extras = {"log": {"Episode_Reward/x": torch.tensor(float(step))}} if step % 5 == 0 else {}
            Logger.process_env_step(theirs, rewards, dones, extras, None)
            assert records.supported(dones)
            records.add(rewards, dones, extras)
        assert list(ours.rewbuffer) != list(theirs.rewbuffer) or not theirs.rewbuffer, "handed over only at flush"
        records.flush()
        assert list(ours.rewbuffer) == list(theirs.rewbuffer)
        assert list(ours.lenbuffer) == list(theirs.lenbuffer)
        assert torch.equal(ours.cur_reward_sum, theirs.cur_reward_sum)
        assert torch.equal(ours.cur_episode_length, theirs.cur_episode_length)
        assert len(ours.ep_extras) == len(theirs.ep_extras)
    assert len(theirs.rewbuffer) == 100


def test_episode_records_keep_nothing_where_rsl_rl_writes_nothing():
    state = _logger_state(4)
    state.writer = None
    records = speed.EpisodeRecords(state, steps=2)
    records.add(torch.ones(4), torch.ones(4), {"log": {}})
    records.flush()
    assert not state.rewbuffer and not state.ep_extras and not state.cur_reward_sum.any()


def test_deferred_episode_stats_train_what_rsl_rls_logger_trains(compose_cfg, tmp_path):
    figures = {}
    for deferred in (True, False):
        overrides = ["task.episode_length_s=0.2", f"algo.speed.deferred_episode_stats={deferred}"]
        run = tmp_path / str(deferred)
        with toy_trainer(compose_cfg, run, overrides=overrides, log_dir=run / "logs") as trainer:
            assert (trainer.episode_records is not None) == deferred
            trainer.logger.init_logging_writer()  # as learn() does: rsl-rl keeps episode figures with a writer only
            for _ in range(3):
                _rollout(trainer)
                trainer._update()
            figures[deferred] = (
                list(trainer.logger.rewbuffer),
                list(trainer.logger.lenbuffer),
                trainer._episode_stats(),
            )
    assert figures[True][0], "episodes ended in the rollouts"
    assert figures[True] == figures[False]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("std_type", ["scalar", "log"])
def test_gaussian_sample_without_the_std_check_draws_rsl_rls_numbers(device, std_type):
    """The policy step's sampling skips torch.normal's device read and still draws what rsl-rl's sample() draws."""
    from rsl_rl.modules.distribution import GaussianDistribution

    distribution = GaussianDistribution(19, init_std=0.7, std_type=std_type).to(device)
    mean = torch.randn(4096, 19, device=device)
    distribution.update(mean)
    torch.manual_seed(5)
    expected = distribution.sample()
    torch.manual_seed(5)
    drawn = speed.sample(distribution)
    assert torch.equal(drawn, expected)
    assert not torch.equal(speed.sample(distribution), expected), "a further draw is a new one"
