"""PPO training with rsl-rl's runner: this loop adds checkpoints with full state, resume and clean stops."""

from __future__ import annotations

import contextlib
import gc
import io
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

from algos import speed
from core import checkpoint, lifecycle
from core.console import Progress, training_figures
from core.distributed import DistInfo, any_rank, init_process_group
from core.rundir import CHECKPOINT_DIR, METRICS


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


def build_trainer(
    env,
    cfg,
    *,
    device: str,
    dist: DistInfo,
    run_dir: Path,
    seed: int,
    logger: dict[str, Any] | None = None,
    log_dir: str | None = None,
    wandb_run_id: str = "none",
    on_iteration: Callable[[int, dict[str, Any]], None] | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    on_checkpoint_failed: Callable[[int, str], None] | None = None,
) -> PPOTrainer:
    """The trainer of a composed train config ``cfg`` (its ``algo`` and ``logger`` groups) for ``env``.

    Checkpoints go to ``run_dir/checkpoints``; with ``log_dir`` None nothing else is written."""
    from omegaconf import OmegaConf

    train_cfg = runner_config(
        OmegaConf.to_container(cfg.algo, resolve=True, enum_to_str=True),
        logger if logger is not None else OmegaConf.to_container(cfg.logger, resolve=True),
        seed=seed,
        device=device,
        run_dir=run_dir,
        experiment=cfg.experiment,
        wandb_run_id=wandb_run_id,
    )
    return PPOTrainer(
        env,
        train_cfg,
        log_dir=log_dir,
        device=device,
        dist=dist,
        checkpoint_dir=run_dir / CHECKPOINT_DIR,
        keep_checkpoints=int(cfg.algo.keep_checkpoints),
        on_iteration=on_iteration,
        on_checkpoint=on_checkpoint,
        on_checkpoint_failed=on_checkpoint_failed,
    )


def restore_rng(rng: dict[str, Any]) -> None:
    """Put the global random generators where a checkpoint's ``rng`` entry says. PyTorch takes generator states as
    CPU byte tensors only, and a checkpoint loaded onto a GPU (``map_location``) brings them back as GPU tensors:
    each is copied back first. A run resumed on fewer GPUs than it saved restores the GPUs it has."""

    def as_state(tensor: Any) -> torch.Tensor:
        return torch.as_tensor(tensor).detach().to(device="cpu", dtype=torch.uint8)

    torch.set_rng_state(as_state(rng["torch"]))
    if rng.get("cuda") is not None and torch.cuda.is_available():
        for index, saved in enumerate(rng["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(as_state(saved), index)
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])


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
        on_checkpoint_failed: Callable[[int, str], None] | None = None,
        console: Progress | None = None,
        block_every: int = 0,
    ) -> None:
        self._dist = dist
        self.console = console
        self.block_every = block_every
        train_cfg = dict(train_cfg)
        self.speed: dict[str, bool] = dict(train_cfg.pop("speed", None) or {})
        super().__init__(env, train_cfg, log_dir=log_dir, device=device)
        cuda = str(self.device).startswith("cuda")
        if cuda and self.speed.get("tf32"):
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        unsupported = speed.sync_free_supported(self.alg)
        if self.speed.get("sync_free_update") and unsupported:
            print(f"[rlforge] algo.speed.sync_free_update: not used with {unsupported}; rsl-rl's update runs")
        self.sync_free = bool(self.speed.get("sync_free_update")) and unsupported is None
        if self.sync_free:
            speed.use_fused_optimizer(self.alg.optimizer)
        self.graph_policy = bool(self.speed.get("graph_policy")) and cuda
        self.graph_update = self.sync_free and bool(self.speed.get("graph_update")) and cuda
        self._graphed_act: speed.GraphedAct | None = None
        self._graphed_update: speed.GraphedUpdate | None = None
        self._update_data = None
        self.episode_records = (
            speed.EpisodeRecords(self.logger, self.cfg["num_steps_per_env"])
            if self.speed.get("deferred_episode_stats")
            else None
        )
        self.iterations_done = 0
        self.checkpoint_dir = Path(checkpoint_dir)
        self.keep_checkpoints = keep_checkpoints
        self.on_iteration = on_iteration
        self.on_checkpoint = on_checkpoint
        self.on_checkpoint_failed = on_checkpoint_failed
        self.fence_from: int | None = None
        """Set on a resumed run: curves logged at this step or later by an earlier attempt are hidden."""
        self.last_stats: dict[str, Any] = {}
        self.recorder = None
        """Called after every rollout step as ``recorder.after_step(iterations_done, log_writer)`` when set (clips)."""
        self.allreduce_s = 0.0
        """Seconds of this iteration's gradient all-reduces, where the update runs eagerly."""
        if self.is_distributed:
            self.alg.reduce_parameters = self._timed(self.alg.reduce_parameters)

    def _timed(self, reduce: Callable[[], None]) -> Callable[[], None]:
        """``reduce`` (a gradient all-reduce) counting its seconds into ``allreduce_s``.

        The GPU is synchronized before and after, so the figure is the reduction alone, not queued backward work.
        A graphed update records the all-reduce inside its graph, where it cannot be timed apart.
        """
        synchronize = torch.cuda.synchronize if str(self.device).startswith("cuda") else (lambda: None)

        def timed_reduce() -> None:
            synchronize()
            start = time.perf_counter()
            reduce()
            synchronize()
            self.allreduce_s += time.perf_counter() - start

        return timed_reduce

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
        if self.sync_free:  # loading brought back the saved optimizer flags
            speed.use_fused_optimizer(self.alg.optimizer)
        # Loading replaced the optimizer's state tensors: graphs and views recorded before are stale.
        self._graphed_act, self._graphed_update, self._update_data = None, None, None
        self.iterations_done = int(state["iter"])
        self.logger.tot_timesteps = state.get("logger", {}).get("tot_timesteps", 0)
        self.logger.tot_time = state.get("logger", {}).get("tot_time", 0.0)
        rng = state.get("rng")
        if rng:
            restore_rng(rng)

    def save_checkpoint(self, required: bool = True) -> Path | None:
        """Write the checkpoint of the completed iterations (rank 0 only) and prune old ones.

        A failed write leaves the earlier checkpoints as they were. It raises
        :class:`~core.checkpoint.CheckpointWriteError` when ``required`` (the last checkpoint of a run or of a
        stop); otherwise (a periodic one) it is reported and training goes on, trying again at the next."""
        if not self._dist.is_main:
            return None
        path = checkpoint.checkpoint_path(self.checkpoint_dir, self.iterations_done)
        try:
            checkpoint.save_atomic(self.training_state(), path)
        except checkpoint.CheckpointWriteError as error:
            print(f"[rlforge] {error}", flush=True)
            if self.on_checkpoint_failed:
                self.on_checkpoint_failed(self.iterations_done, str(error))
            if required:
                raise
            return None
        checkpoint.prune(self.checkpoint_dir, self.keep_checkpoints)
        if self.on_checkpoint:
            self.on_checkpoint(self.iterations_done, path)
        return path

    def _fence_curves(self) -> None:
        """Hide the curve points an earlier attempt logged at ``fence_from`` or later (TensorBoard's purge)."""
        writer = self.logger.writer
        if self.fence_from is None or writer is None or not hasattr(writer, "_get_file_writer"):
            return
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        # A session start at step N makes TensorBoard drop what the run's earlier files hold at steps >= N.
        file_writer = writer._get_file_writer()
        file_writer.add_event(Event(step=self.fence_from, file_version="brain.Event:2"))
        file_writer.add_event(Event(step=self.fence_from, session_log=SessionLog(status=SessionLog.START)))

    # ------------------------------------------------------------------------------------ loop
    def _episode_stats(self) -> dict[str, float]:
        """Means of this iteration's finished-episode figures (read before the logger clears them)."""
        stats: dict[str, float] = {}
        for key in dict.fromkeys(k for info in self.logger.ep_extras for k in info):
            values = [
                torch.as_tensor(info[key], dtype=torch.float).reshape(-1).cpu()
                for info in self.logger.ep_extras
                if key in info
            ]
            if values:
                stats[key if "/" in key else f"Episode/{key}"] = float(torch.cat(values).mean())
        if len(self.logger.rewbuffer) > 0:
            stats["Train/mean_reward"] = statistics.mean(self.logger.rewbuffer)
            stats["Train/mean_episode_length"] = statistics.mean(self.logger.lenbuffer)
        return stats

    def release_graphs(self) -> None:
        """Destroy the recorded CUDA graphs of the policy step and the update; they are recorded again when needed.

        Call it before leaving the process group: NCCL's communicator teardown waits until every graph that holds
        one of its collectives (the graphed update's all-reduces) is destroyed, so ``destroy_process_group`` with
        such a graph still alive would never return.
        """
        for graphed in (self._graphed_update, self._graphed_act):
            if graphed is not None:
                graphed.release()
        self._graphed_act, self._graphed_update = None, None

    def _policy_step(self, obs) -> Callable:
        """The per-step policy call: a CUDA graph of ``alg.act`` when enabled and possible, else ``alg.act``."""
        if self.graph_policy and self._graphed_act is None:
            try:
                self._graphed_act = speed.GraphedAct(self.alg, obs)
            except (RuntimeError, ValueError) as error:
                print(f"[rlforge] algo.speed.graph_policy: not used ({error}); the policy runs eagerly")
                self.graph_policy = False
        return self._graphed_act if self._graphed_act is not None else self.alg.act

    def collect(self, obs, nan_watch: speed.NanWatch | None = None):
        """One rollout of ``num_steps_per_env`` steps into the storage (call under ``torch.inference_mode``);
        returns the last observations."""
        act = self._policy_step(obs)
        records = self.episode_records
        for _ in range(self.cfg["num_steps_per_env"]):
            actions = act(obs)
            obs, rewards, dones, extras = self.env.step(actions.to(self.env.device))
            if nan_watch is not None:
                nan_watch.add(obs, rewards, dones)
            obs, rewards, dones = obs.to(self.device), rewards.to(self.device), dones.to(self.device)
            self.alg.process_env_step(obs, rewards, dones, extras)
            if records is not None and records.supported(dones):
                records.add(rewards, dones, extras)
            else:
                self.logger.process_env_step(rewards, dones, extras, None)
            if self.recorder is not None:
                self.recorder.after_step(self.iterations_done, self.logger.writer)
        if records is not None:
            records.flush()
        if nan_watch is not None:
            nan_watch.check()
        return obs

    def learn(self, obs) -> dict[str, float]:
        """Returns and advantages from the stored rollout, then the PPO update; returns the mean losses."""
        with torch.inference_mode():
            self.alg.compute_returns(obs)
        return self._update()

    def _update(self) -> dict[str, float]:
        """PPO's update: replayed from a CUDA graph, or sync-free, or rsl-rl's own, as the speed settings allow."""
        if self.graph_update and self._graphed_update is None:
            try:
                self._graphed_update = speed.GraphedUpdate(self.alg)
            except (RuntimeError, ValueError) as error:
                print(f"[rlforge] algo.speed.graph_update: not used ({error}); the update runs eagerly")
                self.graph_update = False
                speed.use_fused_optimizer(self.alg.optimizer)
        if self._graphed_update is not None:
            return self._graphed_update()
        if not self.sync_free:
            return self.alg.update()
        if self._update_data is None:
            self._update_data = speed.UpdateData(self.alg)
            if self._update_data.reduce_gradients is not None:
                self._update_data.reduce_gradients = self._timed(self._update_data.reduce_gradients)
        return speed.sync_free_update(self.alg, self._update_data)

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
        self._fence_curves()
        metrics_path = Path(self.logger.log_dir) / METRICS if self.logger.log_dir and self._dist.is_main else None
        start_it = self.iterations_done
        nan_watch = speed.NanWatch() if self.cfg.get("check_for_nan", True) else None
        if self.speed.get("freeze_gc"):
            gc.freeze()  # what exists now lives as long as the run: keep it out of the collector's scans
            gc.enable()  # held since the run began (runner.train.run)
        try:
            for it in range(start_it, until):
                start = time.perf_counter()
                self.allreduce_s = 0.0
                with torch.inference_mode():
                    obs = self.collect(obs, nan_watch)
                collect_time = time.perf_counter() - start
                learn_start = time.perf_counter()
                loss_dict = self.learn(obs)
                learn_time = time.perf_counter() - learn_start
                self.iterations_done = it + 1
                self.current_learning_iteration = it
                stats = self._episode_stats()
                block = self.console is None or (self.block_every and self.iterations_done % self.block_every == 0)
                if self.console is not None and block:
                    self.console.clear()
                # rsl-rl's logger writes the curves and prints its block; a compact console keeps the block off.
                with contextlib.nullcontext() if block else contextlib.redirect_stdout(io.StringIO()):
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
                # Inside the update's graph the all-reduce cannot be timed apart: None says so.
                graphed_allreduce = self.is_distributed and self._graphed_update is not None
                allreduce_s = None if graphed_allreduce else self.allreduce_s
                self.last_stats = {
                    "iteration": self.iterations_done,
                    "time": time.time(),
                    "collect_s": collect_time,
                    "learn_s": learn_time,
                    "allreduce_s": allreduce_s,
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
                if self.console is not None:
                    self.console.update(self.iterations_done, training_figures(self.last_stats))
                stop = any_rank(lifecycle.stop_requested() is not None, self._dist, self.device)
                last = self.iterations_done == until or stop
                if last or self.iterations_done % self.cfg["save_interval"] == 0:
                    self.save_checkpoint(required=last)
                if stop:
                    raise lifecycle.Interrupted(
                        lifecycle.stop_requested() or "stop requested on another rank", self.iterations_done
                    )
        finally:
            if self.console is not None:
                self.console.close()
            if self.speed.get("freeze_gc"):
                gc.unfreeze()
            self.logger.stop_logging_writer()
            if self.logger.writer is not None and hasattr(self.logger.writer, "flush"):
                self.logger.writer.flush()
