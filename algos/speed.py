"""Faster PPO iterations that learn the same thing: fewer host-device round trips and fewer kernel launches.

A 4096-env H1 rough iteration on one GPU is bound by the host: the device is busy for under half of it
(``scripts/profile_iteration.py``), so what costs time is the host launching small kernels and waiting for the
device to drain. Each piece here removes some of that and keeps rsl-rl's arithmetic:

- :func:`sync_free_update`: rsl-rl's ``PPO.update`` (feed-forward actor and critic, no RND or symmetry), with the
  adaptive learning rate decided on the device and the loss means summed there, so the host never waits for the
  device in the middle of an update (rsl-rl waits four times per mini-batch); Adam runs fused, one kernel per step.
  In a distributed run the gradients are averaged over the ranks with one all-reduce of one flat buffer per
  mini-batch (:class:`~core.distributed.GradientMean`).
- :class:`GraphedUpdate`: that mini-batch step, all-reduces included, recorded once as a CUDA graph and replayed.
- :class:`GraphedAct`: the actor's and critic's forward passes of rsl-rl's ``PPO.act`` recorded once as a CUDA
  graph and replayed each step; sampling stays eager.
- :class:`NanWatch`: the NaN check of every step's observations, rewards and dones kept on the device and read once
  per iteration.
- :class:`EpisodeRecords`: rsl-rl's per-step bookkeeping of finished episodes (their returns and lengths for the
  mean reward and episode length) kept on the device and handed to the logger once per rollout; rsl-rl's logger
  waits for the device three times a step for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from core.distributed import DistInfo, GradientMean, any_rank


def sync_free_supported(alg) -> str | None:
    """Why :func:`sync_free_update` cannot run ``alg``'s update, or None when it can."""
    if alg.actor.is_recurrent or alg.critic.is_recurrent:
        return "recurrent models"
    if alg.rnd is not None:
        return "random network distillation"
    if alg.symmetry is not None:
        return "symmetry augmentation"
    if not isinstance(alg.optimizer, torch.optim.Adam | torch.optim.AdamW):
        return f"optimizer {type(alg.optimizer).__name__} (Adam and AdamW only)"
    return None


def use_fused_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Switch an Adam/AdamW optimizer to its fused kernel (one launch per step), state included.

    Called again after a checkpoint is loaded: loading brings back the saved groups' flags and step counters.
    """
    for group in optimizer.param_groups:
        group["fused"] = True
        group["foreach"] = False
        group["capturable"] = False
        for param in group["params"]:
            state = optimizer.state.get(param)
            step = state.get("step") if state else None
            if isinstance(step, torch.Tensor) and (step.device != param.device or step.dtype != torch.float32):
                state["step"] = step.to(device=param.device, dtype=torch.float32)


def _adapt_learning_rate(lr: torch.Tensor, kl_mean: torch.Tensor, desired_kl: float) -> None:
    """rsl-rl's adaptive schedule on the device: /1.5 above 2x the target KL, x1.5 below half of it (if > 0)."""
    lower = torch.clamp(lr / 1.5, min=1e-5)
    higher = torch.clamp(lr * 1.5, max=1e-2)
    decrease = kl_mean > desired_kl * 2.0
    increase = ~decrease & (kl_mean < desired_kl / 2.0) & (kl_mean > 0.0)
    lr.copy_(torch.where(decrease, lower, torch.where(increase, higher, lr)))


class UpdateData:
    """The rollout as flat tensors at fixed addresses, and the mini-batch step's own state on the device.

    Storage tensors are written in place every rollout, so views of them stay valid; advantages are re-created
    by ``compute_returns`` each iteration and are copied into a buffer of this object by :meth:`load`.
    """

    def __init__(self, alg) -> None:
        st = alg.storage
        device = st.actions.device
        self.observations = {key: value.flatten(0, 1) for key, value in st.observations.items()}
        self.actions = st.actions.flatten(0, 1)
        self.values = st.values.flatten(0, 1)
        self.returns = st.returns.flatten(0, 1)
        self.old_log_prob = st.actions_log_prob.flatten(0, 1)
        self.old_params = tuple(p.flatten(0, 1) for p in st.distribution_params)
        self.advantages = torch.zeros_like(self.values)
        self.mini_batch = st.num_envs * st.num_transitions_per_env // alg.num_mini_batches
        self.idx = torch.zeros(self.mini_batch, dtype=torch.long, device=device)
        self.lr = torch.tensor(float(alg.learning_rate), dtype=torch.float32, device=device)
        self.sums = torch.zeros(3, device=device)
        self.reduce_gradients: Callable[[], None] | None = None
        """Averages the gradients over the ranks after each backward pass (distributed runs only); the trainer may
        wrap it to time it where the update runs eagerly."""
        if alg.is_multi_gpu:
            # rsl-rl's order (actor, then critic), so the flat buffer is laid out alike on every rank.
            params = [*alg.actor.parameters(), *alg.critic.parameters()]
            self.reduce_gradients = GradientMean(params, alg.gpu_world_size)

    def load(self, alg) -> None:
        """This iteration's advantages and the current rate; loss sums start at zero."""
        self.advantages.copy_(alg.storage.advantages.flatten(0, 1))
        self.lr.fill_(float(alg.learning_rate))
        self.sums.zero_()


def _minibatch_step(alg, data: UpdateData) -> None:
    """One PPO mini-batch step of rsl-rl's update on the samples ``data.idx``: losses, the KL-adapted learning rate,
    backward, the gradients' mean over the ranks, gradient clipping, optimizer step; loss values are added to
    ``data.sums``.

    The actor's distribution is set from its network output without drawing the sample rsl-rl draws and discards.
    In a distributed run it makes two all-reduces, the KL's and the gradients' (one flat buffer), and nothing else
    that needs the host: the same function runs eagerly on gloo and is recorded in a CUDA graph on NCCL.
    """
    from tensordict import TensorDict

    idx = data.idx
    obs = TensorDict({key: value[idx] for key, value in data.observations.items()}, batch_size=[idx.shape[0]])
    actions, old_values, returns = data.actions[idx], data.values[idx], data.returns[idx]
    advantages, old_log_prob = data.advantages[idx], data.old_log_prob[idx]
    old_params = tuple(p[idx] for p in data.old_params)
    if alg.normalize_advantage_per_mini_batch:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    actor = alg.actor
    with torch.amp.autocast(device_type=idx.device.type, enabled=alg.use_mixed_precision, dtype=torch.bfloat16):
        actor.distribution.update(actor.mlp(actor.get_latent(obs)))
        log_prob = actor.get_output_log_prob(actions)
        values = alg.critic(obs)
        params = actor.output_distribution_params
        entropy = actor.output_entropy
        if alg.desired_kl is not None and alg.schedule == "adaptive":
            with torch.no_grad():
                kl_mean = torch.mean(actor.get_kl_divergence(old_params, params))
                if alg.is_multi_gpu:
                    torch.distributed.all_reduce(kl_mean, op=torch.distributed.ReduceOp.SUM)
                    kl_mean /= alg.gpu_world_size
                _adapt_learning_rate(data.lr, kl_mean, alg.desired_kl)
        ratio = torch.exp(log_prob - torch.squeeze(old_log_prob))
        advantages = torch.squeeze(advantages)
        surrogate = -advantages * ratio
        surrogate_clipped = -advantages * torch.clamp(ratio, 1.0 - alg.clip_param, 1.0 + alg.clip_param)
        surrogate_loss = torch.max(surrogate, surrogate_clipped).mean()
        if alg.use_clipped_value_loss:
            value_clipped = old_values + (values - old_values).clamp(-alg.clip_param, alg.clip_param)
            value_loss = torch.max((values - returns).pow(2), (value_clipped - returns).pow(2)).mean()
        else:
            value_loss = (returns - values).pow(2).mean()
        entropy_mean = entropy.mean()
        loss = surrogate_loss + alg.value_loss_coef * value_loss - alg.entropy_coef * entropy_mean
    alg.optimizer.zero_grad(set_to_none=False)
    loss.backward()
    if data.reduce_gradients is not None:
        data.reduce_gradients()
    nn.utils.clip_grad_norm_(alg.actor.parameters(), alg.max_grad_norm)
    nn.utils.clip_grad_norm_(alg.critic.parameters(), alg.max_grad_norm)
    alg.optimizer.step()
    data.sums += torch.stack([value_loss.detach(), surrogate_loss.detach(), entropy_mean.detach()]).float()


def _finish_update(alg, data: UpdateData) -> dict[str, float]:
    """Read the rate and loss means back (the update's one wait for the device), update normalizers, clear."""
    alg.learning_rate = float(data.lr)
    for group in alg.optimizer.param_groups:
        group["lr"] = alg.learning_rate  # checkpoints keep a plain number, as rsl-rl's do
    obs = alg.storage.observations.flatten(0, 1)
    alg.actor.update_normalization(obs)
    alg.critic.update_normalization(obs)
    means = (data.sums / (alg.num_learning_epochs * alg.num_mini_batches)).tolist()
    alg.storage.clear()
    return {"value": means[0], "surrogate": means[1], "entropy": means[2]}


def _permutation(alg, data: UpdateData) -> torch.Tensor:
    """Mini-batch order as rsl-rl's generator draws it: one permutation, reused by every epoch."""
    return torch.randperm(alg.num_mini_batches * data.mini_batch, device=data.idx.device)


def _run_update(alg, data: UpdateData, step: Callable[[], None]) -> dict[str, float]:
    """The update's loop: ``step()`` once per mini-batch of each epoch, with ``data.idx`` set to its samples."""
    data.load(alg)
    for group in alg.optimizer.param_groups:
        group["lr"] = data.lr
    try:
        order = _permutation(alg, data)
        for _ in range(alg.num_learning_epochs):
            for i in range(alg.num_mini_batches):
                data.idx.copy_(order[i * data.mini_batch : (i + 1) * data.mini_batch])
                step()
    finally:
        result = _finish_update(alg, data)
    return result


def sync_free_update(alg, data: UpdateData | None = None) -> dict[str, float]:
    """One PPO update of ``alg`` (an rsl-rl ``PPO``), as ``alg.update()`` computes it, waiting for the device once.

    The differences from rsl-rl's loop are where numbers live, not what they are: the learning rate is a device
    scalar that the optimizer reads directly (rsl-rl moves the KL to the host to compare it, per mini-batch), and
    the three loss means are summed on the device and read at the end (rsl-rl reads each with ``.item()``). In a
    distributed run every rank derives the same rate from the all-reduced KL, where rsl-rl broadcasts rank 0's, and
    the gradients are averaged with one all-reduce of one flat buffer, where rsl-rl packs a new one each time.
    """
    data = data or UpdateData(alg)
    return _run_update(alg, data, lambda: _minibatch_step(alg, data))


def graph_update_unsupported(alg) -> str | None:
    """Why :class:`GraphedUpdate` cannot run ``alg``'s update, or None when it can."""
    reason = sync_free_supported(alg) or graph_unsupported(alg)
    if reason:
        return reason
    if alg.use_mixed_precision:
        return "mixed precision"
    if not str(alg.device).startswith("cuda"):
        return "a CPU device"
    return None


class GraphedUpdate:
    """The PPO update as replays of one CUDA graph of the mini-batch step (:func:`_minibatch_step`).

    The graph is recorded at the first update. Recording needs the optimizer's state and the autograd engine set
    up beforehand, which takes a few real steps; those are run on the same rollout and then undone (parameters,
    optimizer state and counters copied back in place), so the first update learns what it would have learned.
    Each update then copies this iteration's advantages and rate in, and per mini-batch its sample indices, and
    replays: no Python per kernel, no wait for the device until the end.

    In a distributed run (NCCL) the graph holds the step's two all-reduces, the KL's and the gradients' flat one, so
    a mini-batch is still one launch on every rank. What recording them needs, and what is done for it here:

    - the NCCL communicator exists before the capture (one cannot be created inside it): the run broadcasts the
      parameters when training starts, and the set-up steps make the step's own collectives eagerly first;
    - the capture is ``thread_local``: ProcessGroupNCCL's watchdog thread queries the events of eager collectives,
      which a global-mode capture would count as a forbidden call from another thread;
    - nothing in the step waits on the host: ``TORCH_NCCL_BLOCKING_WAIT`` and ``TORCH_NCCL_NAN_CHECK`` stay unset
      (the first makes the host wait for every collective, the second reads each collective's input back);
    - every rank decides alike: a graph holding a collective has to be replayed by all ranks or by none, so after
      recording the ranks agree with one eager all-reduce, and when any rank failed every rank raises, and the
      trainer runs the eager sync-free update, whose step is the same function.
    """

    def __init__(self, alg, warmup: int = 3) -> None:
        reason = graph_update_unsupported(alg)
        if reason:
            raise ValueError(reason)
        self.alg = alg
        self.data = data = UpdateData(alg)
        optimizer = alg.optimizer
        for group in optimizer.param_groups:
            group["fused"], group["foreach"], group["capturable"] = True, False, True
            group["lr"] = data.lr
        params = [p for group in optimizer.param_groups for p in group["params"]]
        saved_params = [p.detach().clone() for p in params]
        saved_state = {
            p: {k: v.clone() if torch.is_tensor(v) else v for k, v in optimizer.state[p].items()}
            for p in params
            if p in optimizer.state
        }
        data.load(alg)
        data.idx.copy_(_permutation(alg, data)[: data.mini_batch])
        self.graph: torch.cuda.CUDAGraph | None = None
        error: Exception | None = None
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    _minibatch_step(alg, data)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                _minibatch_step(alg, data)
        except Exception as caught:  # every rank learns of a failure before it is raised
            error = caught
        finally:
            # Undo the set-up steps in place: the graph holds these very tensors.
            with torch.no_grad():
                for param, saved in zip(params, saved_params, strict=True):
                    param.copy_(saved)
                for param in params:
                    state = optimizer.state.get(param, {})
                    before = saved_state.get(param, {})
                    for key, value in state.items():
                        if torch.is_tensor(value):
                            value.copy_(before[key]) if key in before else value.zero_()
            for group in optimizer.param_groups:
                group["lr"] = float(alg.learning_rate)
            torch.cuda.synchronize()
        if alg.is_multi_gpu:
            ranks = DistInfo(rank=alg.gpu_global_rank, world_size=alg.gpu_world_size)
            if any_rank(error is not None, ranks, str(alg.device)) and error is None:
                error = RuntimeError("the update's graph could not be recorded on another rank")
        if error is not None:
            self.release()
            raise error

    def __call__(self) -> dict[str, float]:
        return _run_update(self.alg, self.data, self.graph.replay)

    def release(self) -> None:
        """Destroy the graph once the device is done with it; this object replays nothing afterwards.

        NCCL tears a communicator down only after every graph holding one of its collectives is destroyed (its
        ``ncclCommDestroy`` waits for them), so a distributed run calls this before it leaves the process group.
        """
        _release(self.graph)
        self.graph = None


def act_with(alg, obs, networks: Callable[[Any], tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """rsl-rl's ``PPO.act`` for feed-forward ``MLPModel`` actor and critic, with the two networks' forward passes
    done by ``networks(obs) -> (actor MLP output, critic values)``; sampling and bookkeeping as rsl-rl does them."""
    actor = alg.actor
    mlp_output, values = networks(obs)
    t = alg.transition
    t.hidden_states = (None, None)
    actor.distribution.update(mlp_output)
    t.actions = sample(actor.distribution).detach()
    t.values = values.detach()
    t.actions_log_prob = actor.get_output_log_prob(t.actions).detach()
    t.distribution_params = tuple(p.detach() for p in actor.output_distribution_params)
    t.observations = obs
    return t.actions


def sample(distribution) -> torch.Tensor:
    """``distribution.sample()``; for rsl-rl's Gaussian, without the device read that ``torch.normal`` makes to
    check that no standard deviation is negative (the clamped or exponentiated deviations never are). The same
    numbers from the same random state: ``torch.normal(mean, std)`` is a standard normal draw times ``std`` plus
    ``mean``, computed in that order, which this repeats."""
    from rsl_rl.modules.distribution import GaussianDistribution

    if type(distribution) is not GaussianDistribution:
        return distribution.sample()
    normal = distribution._distribution
    with torch.no_grad():
        return torch.empty_like(normal.loc).normal_().mul_(normal.scale).add_(normal.loc)


def eager_networks(alg) -> Callable[[Any], tuple[torch.Tensor, torch.Tensor]]:
    """The actor's MLP output and the critic's values, computed as rsl-rl's models compute them."""

    def networks(obs):
        return alg.actor.mlp(alg.actor.get_latent(obs)), alg.critic(obs)

    return networks


def graph_unsupported(alg) -> str | None:
    """Why the policy step of ``alg`` cannot be replayed from a graph, or None when it can."""
    from rsl_rl.models import MLPModel

    for name in ("actor", "critic"):
        model = getattr(alg, name)
        if type(model) is not MLPModel:
            return f"the {name} is a {type(model).__name__} (plain MLPModel only)"
    if alg.actor.distribution is None:
        return "the actor has no output distribution"
    return None


class GraphedAct:
    """``alg.act(obs)`` with the actor's and critic's forward passes replayed from one CUDA graph.

    The graph reads a static copy of the observations and writes the networks' outputs into buffers of its own;
    sampling, log-probabilities and the transition's bookkeeping then run as rsl-rl runs them (:func:`act_with`),
    so the random stream is the eager one. Parameters are updated in place by the optimizer and by checkpoint
    loading, so the graph always computes with the current policy.
    """

    def __init__(self, alg, obs, warmup: int = 2) -> None:
        reason = graph_unsupported(alg)
        if reason:
            raise ValueError(reason)
        self.alg = alg
        networks = eager_networks(alg)
        self.static_obs = obs.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # first calls set up cuBLAS handles and allocator pools outside the capture
            for _ in range(warmup):
                networks(self.static_obs)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        # Thread-local: work that other threads (the simulator's, a logger's) submit meanwhile does not void it.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = networks(self.static_obs)

    def release(self) -> None:
        """Destroy the graph once the device is done with it; this object replays nothing afterwards."""
        _release(self.graph)
        self.graph = None

    def networks(self, obs) -> tuple[torch.Tensor, torch.Tensor]:
        self.static_obs.update_(obs)
        self.graph.replay()
        return self.outputs

    def __call__(self, obs) -> torch.Tensor:
        return act_with(self.alg, obs, self.networks)


def _release(graph: torch.cuda.CUDAGraph | None) -> None:
    """Wait for the device, then destroy ``graph`` (if any) now rather than whenever it is collected."""
    if graph is not None:
        torch.cuda.synchronize()
        graph.reset()


class NanWatch:
    """NaN checks of each step's outputs, gathered on the device and read once per iteration."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.flags: torch.Tensor | None = None

    def add(self, obs, rewards: torch.Tensor, dones: torch.Tensor) -> None:
        tensors: list[tuple[str, torch.Tensor]] = [(f"observation group '{k}'", v) for k, v in obs.items()]
        tensors += [("rewards", rewards), ("dones", dones)]
        tensors = [(name, t) for name, t in tensors if t.is_floating_point()]
        step = torch.stack([torch.isnan(t).any() for _, t in tensors])
        if self.flags is None:
            self.names = [name for name, _ in tensors]
            self.flags = step
        else:
            self.flags |= step

    def check(self) -> None:
        """Raise ``ValueError`` naming what returned NaN since the last check; then start over."""
        if self.flags is None:
            return
        found = [name for name, bad in zip(self.names, self.flags.tolist(), strict=True) if bad]
        self.flags = None
        if found:
            raise ValueError(
                f"the environment returned NaN values in {', '.join(found)} during this iteration; this usually "
                "indicates a bug in the environment's step() or reset() (or a simulation that blew up)"
            )


class EpisodeRecords:
    """rsl-rl's ``Logger.process_env_step`` without reading the device at every step.

    rsl-rl adds each step's rewards to the running returns and lengths, then finds the episodes that ended
    (``nonzero``) and copies their returns and lengths to the host, into the logger's last-100 buffers, and zeroes
    them: three waits for the device a step, which keep the host from queueing the next step while the device
    finishes this one. Here the running sums stay the logger's own tensors, updated the same way on the device; each
    step's done mask and the sums before zeroing are kept in a buffer of the rollout's length, and :meth:`flush`
    (once, when the rollout ends) hands the ended episodes to the logger's buffers in rsl-rl's order: step by step,
    environments in ascending order. The buffers then hold the same numbers as rsl-rl's, and the running sums too.
    """

    def __init__(self, logger, steps: int) -> None:
        self.logger = logger
        self.steps = steps
        self._done: torch.Tensor | None = None
        self._returns: torch.Tensor | None = None
        self._lengths: torch.Tensor | None = None
        self._count = 0

    def supported(self, dones: torch.Tensor) -> bool:
        """Whether this step's dones fit the logger's running sums (one per environment); rsl-rl's path otherwise."""
        return dones.shape == self.logger.cur_reward_sum.shape

    def add(self, rewards: torch.Tensor, dones: torch.Tensor, extras: dict) -> None:
        """One step's rewards and dones, as rsl-rl's ``process_env_step`` takes them (no intrinsic rewards)."""
        logger = self.logger
        if logger.writer is None:  # rsl-rl keeps no episode figures where it writes none (other ranks)
            return
        if "episode" in extras:
            logger.ep_extras.append(extras["episode"])
        elif "log" in extras:
            logger.ep_extras.append(extras["log"])
        logger.cur_reward_sum += rewards
        logger.cur_episode_length += 1
        if self._done is None:
            shape = (self.steps, *logger.cur_reward_sum.shape)
            self._done = torch.zeros(shape, dtype=torch.bool, device=logger.cur_reward_sum.device)
            self._returns = torch.zeros(shape, dtype=logger.cur_reward_sum.dtype, device=logger.cur_reward_sum.device)
            self._lengths = torch.zeros(
                shape, dtype=logger.cur_episode_length.dtype, device=logger.cur_episode_length.device
            )
        if self._count == self.steps:
            self.flush()
        done = dones > 0
        self._done[self._count] = done
        self._returns[self._count] = logger.cur_reward_sum
        self._lengths[self._count] = logger.cur_episode_length
        logger.cur_reward_sum.masked_fill_(done, 0)
        logger.cur_episode_length.masked_fill_(done, 0)
        self._count += 1

    def flush(self) -> None:
        """Hand the episodes that ended since the last flush to the logger's buffers (one read of the device)."""
        if not self._count:
            return
        count, self._count = self._count, 0
        done = self._done[:count].cpu().numpy()
        returns = self._returns[:count].cpu().numpy()
        lengths = self._lengths[:count].cpu().numpy()
        for step in range(count):
            ended = np.flatnonzero(done[step])
            if ended.size:
                self.logger.rewbuffer.extend(returns[step, ended].tolist())
                self.logger.lenbuffer.extend(lengths[step, ended].tolist())
