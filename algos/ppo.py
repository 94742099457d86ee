"""PPO training with rsl-rl's runner: this loop adds checkpoints with full state, resume and clean stops."""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rsl_rl.runners import OnPolicyRunner

from core import checkpoint, lifecycle
from core.distributed import DistInfo, any_rank, init_process_group

METRICS = "metrics.jsonl"


def runner_config(
    algo: dict[str, Any],
    logger: dict[str, Any],
    *,
    seed: int,
    device: str,
    run_dir: Path,
    experiment: str,
    wandb_run_id: str,
) -> dict[str, Any]:
    """rsl-rl's runner dict from the ``algo`` and ``logger`` config groups (a fresh copy: rsl-rl pops keys)."""
    cfg = json.loads(json.dumps(algo))  # deep copy of plain data
    cfg.pop("keep_checkpoints", None)
    cfg.update(seed=seed, device=device, experiment_name=experiment, run_name="")
    if logger["kind"] == "wandb":
        cfg["logger"] = {
            "class_name": "algos.wandb_writer:WandbWriter",
            "run_id": wandb_run_id,
            "project": logger["project"],
            "entity": logger["entity"],
            "group": logger["group"],
            "tags": list(logger["tags"]),
            "mode": logger["mode"],
            "name": f"{experiment}/{run_dir.name}",
        }
    elif logger["kind"] == "tensorboard":
        cfg["logger"] = "tensorboard"
    else:
        raise ValueError(f"logger.kind must be tensorboard or wandb, not '{logger['kind']}'")
    return cfg


def nan_groups(obs, rewards: torch.Tensor, dones: torch.Tensor, flags: torch.Tensor | None) -> torch.Tensor:
    """Accumulate, on the device, which of the observation groups, rewards and dones held a NaN this step.

    rsl-rl's ``check_nan`` asks the device after every step (one host-device synchronisation per tensor); this
    keeps a flag per tensor on the device so that the collection is checked once, before learning uses it.
    """
    step = torch.stack([torch.isnan(tensor).any() for tensor in (*obs.values(), rewards, dones)])
    return step if flags is None else flags | step


def raise_on_nan(flags: torch.Tensor, obs, iteration: int) -> None:
    """Raise ``ValueError`` naming the first tensor that held a NaN, as rsl-rl's ``check_nan`` would."""
    seen = flags.tolist()
    if not any(seen):
        return
    names = [f"observation group '{key}'" for key in obs.keys()] + ["rewards", "dones"]
    raise ValueError(
        f"the {names[seen.index(True)]} returned by the environment contained NaN values during the "
        f"collection of iteration {iteration}; this usually indicates a bug in the environment"
    )


class EpisodeTally:
    """rsl-rl's per-step episode bookkeeping (``Logger.process_env_step``) without a device round trip per step.

    The logger copies the returns and lengths of the episodes that just ended to the host after every step. Here
    they stay on the device and reach the logger's buffers once per iteration, in the same order (step by step,
    environment by environment), so the logged means are unchanged.
    """

    def __init__(self, logger) -> None:
        self.logger = logger
        self._dones: list[torch.Tensor] = []
        self._returns: list[torch.Tensor] = []
        self._lengths: list[torch.Tensor] = []

    def step(self, rewards: torch.Tensor, dones: torch.Tensor, extras: dict) -> None:
        logger = self.logger
        if logger.writer is None:
            return
        if "episode" in extras:
            logger.ep_extras.append(extras["episode"])
        elif "log" in extras:
            logger.ep_extras.append(extras["log"])
        logger.cur_reward_sum += rewards
        logger.cur_episode_length += 1
        ended = dones > 0
        self._dones.append(ended)
        self._returns.append(logger.cur_reward_sum.clone())
        self._lengths.append(logger.cur_episode_length.clone())
        logger.cur_reward_sum.masked_fill_(ended, 0)
        logger.cur_episode_length.masked_fill_(ended, 0)

    def flush(self) -> None:
        """Hand the episodes that ended since the last flush to the logger's buffers."""
        if not self._dones:
            return
        ended = torch.stack(self._dones)
        finished = torch.stack((torch.stack(self._returns)[ended], torch.stack(self._lengths)[ended])).cpu()
        self.logger.rewbuffer.extend(finished[0].tolist())
        self.logger.lenbuffer.extend(finished[1].tolist())
        self._dones.clear()
        self._returns.clear()
        self._lengths.clear()


class PPOTrainer(OnPolicyRunner):
    """rsl-rl's OnPolicyRunner with a loop that counts completed iterations and can stop between them.

    Unlike the stock runner, distributed training here also runs on the CPU (gloo), checkpoints carry the RNG
    and logger state, and ``iterations_done`` is the number of completed iterations (what checkpoints are named by).
    """

    def __init__(
        self,
        env,
        train_cfg: dict,
        *,
        log_dir: str | None,
        device: str,
        dist: DistInfo,
        checkpoint_dir: Path,
        keep_checkpoints: int,
        on_iteration: Callable[[int, dict[str, Any]], None] | None = None,
        on_checkpoint: Callable[[int, Path], None] | None = None,
    ) -> None:
        self._dist = dist
        if str(device).startswith("cuda"):
            # TF32 matrix products, as Isaac Lab's own trainer runs rsl-rl: the policy and value MLPs and their
            # updates run on the tensor cores instead of in full float32.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        super().__init__(env, train_cfg, log_dir=log_dir, device=device)
        self.iterations_done = 0
        self.checkpoint_dir = Path(checkpoint_dir)
        self.keep_checkpoints = keep_checkpoints
        self.on_iteration = on_iteration
        self.on_checkpoint = on_checkpoint
        self.last_stats: dict[str, Any] = {}

    # rsl-rl's version assumes NCCL and cuda:LOCAL_RANK; this one follows the chosen device.
    def _configure_multi_gpu(self) -> None:
        info = self._dist
        self.gpu_world_size = info.world_size
        self.gpu_global_rank = info.rank
        self.gpu_local_rank = info.local_rank
        self.is_distributed = info.is_distributed
        if not info.is_distributed:
            self.cfg["multi_gpu"] = None
            return
        self.cfg["multi_gpu"] = {"global_rank": info.rank, "local_rank": info.local_rank, "world_size": info.world_size}
        init_process_group(info, self.device)

    # ------------------------------------------------------------------------------------ state
    def training_state(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly: models, optimizer, counters, RNG."""
        state = self.alg.save()
        obs = self.env.get_observations()
        state.update(
            iter=self.iterations_done,
            policy_io={
                "obs_groups": self.cfg["obs_groups"],
                "obs_dims": {group: int(obs[group].shape[-1]) for group in obs.keys()},
                "num_actions": int(self.env.num_actions),
                "actor": self.cfg["actor"],
            },
            learning_rate=self.alg.learning_rate,
            logger={"tot_timesteps": self.logger.tot_timesteps, "tot_time": self.logger.tot_time},
            rng={
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        )
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Load a checkpoint written by :meth:`training_state`."""
        self.alg.load(state, None, strict=True)
        self.alg.learning_rate = state.get("learning_rate", self.alg.learning_rate)
        for group in self.alg.optimizer.param_groups:
            group["lr"] = self.alg.learning_rate
        self.iterations_done = int(state["iter"])
        self.logger.tot_timesteps = state.get("logger", {}).get("tot_timesteps", 0)
        self.logger.tot_time = state.get("logger", {}).get("tot_time", 0.0)
        rng = state.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            if rng.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])

    def save_checkpoint(self) -> Path | None:
        """Write the checkpoint of the completed iterations (rank 0 only) and prune old ones."""
        if not self._dist.is_main:
            return None
        path = checkpoint.checkpoint_path(self.checkpoint_dir, self.iterations_done)
        checkpoint.save_atomic(self.training_state(), path)
        checkpoint.prune(self.checkpoint_dir, self.keep_checkpoints)
        if self.on_checkpoint:
            self.on_checkpoint(self.iterations_done, path)
        return path

    # ------------------------------------------------------------------------------------ loop
    def _episode_stats(self) -> dict[str, float]:
        """Means of this iteration's finished-episode figures (read before the logger clears them)."""
        stats: dict[str, float] = {}
        keys = list(dict.fromkeys(k for info in self.logger.ep_extras for k in info))
        per_key = [
            [torch.as_tensor(info[key], dtype=torch.float).reshape(-1) for info in self.logger.ep_extras if key in info]
            for key in keys
        ]
        flat = [value for values in per_key for value in values]
        if flat:
            # One copy to the host for every key and step together, instead of one per key and step.
            device = flat[0].device
            host = torch.cat([value.to(device) for value in flat]).cpu()
            sizes = [sum(int(value.numel()) for value in values) for values in per_key]
            for key, chunk in zip(keys, torch.split(host, sizes), strict=True):
                if chunk.numel():
                    stats[key if "/" in key else f"Episode/{key}"] = float(chunk.mean())
        if len(self.logger.rewbuffer) > 0:
            stats["Train/mean_reward"] = statistics.mean(self.logger.rewbuffer)
            stats["Train/mean_episode_length"] = statistics.mean(self.logger.lenbuffer)
        return stats

    def train(self, until: int) -> None:
        """Run iterations until ``until`` are done; raise :class:`~core.lifecycle.Interrupted` on a stop request."""
        if self.cfg.get("init_at_random_ep_len") and self.iterations_done == 0:
            self.env.episode_length_buf = torch.randint_like(
                self.env.episode_length_buf, high=int(self.env.max_episode_length)
            )
        obs = self.env.get_observations().to(self.device)
        self.alg.train_mode()
        if self.is_distributed:
            self.alg.broadcast_parameters()
        self.logger.init_logging_writer()
        metrics_path = Path(self.logger.log_dir) / METRICS if self.logger.log_dir and self._dist.is_main else None
        start_it = self.iterations_done
        check = self.cfg.get("check_for_nan", True)
        episodes = EpisodeTally(self.logger)
        try:
            for it in range(start_it, until):
                start = time.perf_counter()
                with torch.inference_mode():
                    nan_flags = None
                    for _ in range(self.cfg["num_steps_per_env"]):
                        actions = self.alg.act(obs)
                        obs, rewards, dones, extras = self.env.step(actions.to(self.env.device))
                        if check:
                            nan_flags = nan_groups(obs, rewards, dones, nan_flags)
                        obs, rewards, dones = obs.to(self.device), rewards.to(self.device), dones.to(self.device)
                        self.alg.process_env_step(obs, rewards, dones, extras)
                        episodes.step(rewards, dones, extras)
                    if nan_flags is not None:
                        raise_on_nan(nan_flags, obs, it)
                    episodes.flush()
                    collect_time = time.perf_counter() - start
                    learn_start = time.perf_counter()
                    self.alg.compute_returns(obs)
                loss_dict = self.alg.update()
                learn_time = time.perf_counter() - learn_start
                self.iterations_done = it + 1
                self.current_learning_iteration = it
                stats = self._episode_stats()
                self.logger.log(
                    it=it,
                    start_it=start_it,
                    total_it=until,
                    collect_time=collect_time,
                    learn_time=learn_time,
                    loss_dict=loss_dict,
                    learning_rate=self.alg.learning_rate,
                    action_std=self.alg.get_policy().output_std,
                    rnd_weight=None,
                )
                self.last_stats = {
                    "iteration": self.iterations_done,
                    "time": time.time(),
                    "collect_s": collect_time,
                    "learn_s": learn_time,
                    "env_steps": self.cfg["num_steps_per_env"] * self.env.num_envs * self.gpu_world_size,
                    "learning_rate": self.alg.learning_rate,
                    **{f"Loss/{k}": v for k, v in loss_dict.items()},
                    **stats,
                }
                if metrics_path is not None:
                    with open(metrics_path, "a") as handle:
                        handle.write(json.dumps(self.last_stats) + "\n")
                if self.on_iteration:
                    self.on_iteration(self.iterations_done, self.last_stats)
                stop = any_rank(lifecycle.stop_requested() is not None, self._dist, self.device)
                if self.iterations_done % self.cfg["save_interval"] == 0 or self.iterations_done == until or stop:
                    self.save_checkpoint()
                if stop:
                    raise lifecycle.Interrupted(
                        lifecycle.stop_requested() or "stop requested on another rank", self.iterations_done
                    )
        finally:
            self.logger.stop_logging_writer()
            if self.logger.writer is not None and hasattr(self.logger.writer, "flush"):
                self.logger.writer.flush()
