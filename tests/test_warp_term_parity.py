"""Isaac Lab's Warp frontend computes H1 rough's rewards and terminations as its PyTorch frontend does: each Warp term
of the environment, stepped on the real simulator (CPU), equals the PyTorch term of the same name evaluated on the
same state, and the step's reward is the weighted sum of the terms times the step's length (slow)."""

from __future__ import annotations

import pytest
import torch

SMALL_H1_ROUGH = (
    "task=h1_rough",
    "task.num_envs=8",
    "task.terrain.num_rows=2",
    "task.terrain.num_cols=2",
    "task.kernels.precompile=false",
)
STEPS = 30


def _stable_entity(entity, scene):
    """The PyTorch frontend's ``SceneEntityCfg`` naming what ``entity`` (the Warp frontend's) names, resolved."""
    from isaaclab.managers import SceneEntityCfg

    stable = SceneEntityCfg(
        entity.name,
        joint_names=entity.joint_names,
        body_names=entity.body_names,
        preserve_order=entity.preserve_order,
    )
    stable.resolve(scene)
    return stable


@pytest.mark.slow
def test_warp_rewards_and_terminations_equal_the_torch_terms_on_the_same_states(compose_cfg, tmp_path, monkeypatch):
    import warp as wp
    from isaaclab.managers import SceneEntityCfg

    from tasks.isaaclab_env import build_env_cfg
    from tasks.registry import build_env

    monkeypatch.setenv("RLFORGE_CACHE", str(tmp_path / "cache"))
    torch_cfg = build_env_cfg(compose_cfg([*SMALL_H1_ROUGH, "task.frontend=torch"]).task, "cpu", 5)
    torch_rewards = {name: term.func for name, term in vars(torch_cfg.rewards).items() if term is not None}
    torch_terminations = {name: term.func for name, term in vars(torch_cfg.terminations).items() if term is not None}

    torch.manual_seed(0)
    handle = build_env(compose_cfg([*SMALL_H1_ROUGH, "task.frontend=warp"]).task, "cpu", 5)
    try:
        env, unwrapped = handle.env, handle.env.unwrapped
        assert type(unwrapped).__name__ == "ManagerBasedRLEnvWarp"
        rewards, terminations = unwrapped.reward_manager, unwrapped.termination_manager
        assert set(rewards._term_names) == set(torch_rewards)
        assert set(terminations._term_names) == set(torch_terminations)

        def params(term_cfg) -> dict:
            return {
                key: _stable_entity(value, unwrapped.scene) if isinstance(value, SceneEntityCfg) else value
                for key, value in term_cfg.params.items()
            }

        worst: dict[str, tuple[float, float]] = {}
        checked_steps = []
        compute_rewards, compute_terminations = rewards.compute, terminations.compute

        def compare_rewards(dt):
            reward = compute_rewards(dt)
            outputs = wp.to_torch(rewards._term_outs_wp)
            total = torch.zeros_like(reward)
            for index, (name, term_cfg) in enumerate(zip(rewards._term_names, rewards._term_cfgs, strict=True)):
                got = outputs[index]
                if term_cfg.weight == 0:  # neither frontend computes a term that weighs nothing
                    continue
                if name == "action_rate_l2":  # the PyTorch term reads the action manager's tensors, here Warp arrays
                    action = wp.to_torch(unwrapped.action_manager.action)
                    previous = wp.to_torch(unwrapped.action_manager.prev_action)
                    expected = ((action - previous) ** 2).sum(dim=1)
                else:
                    expected = torch_rewards[name](unwrapped, **params(term_cfg)).float()
                error, scale = float((expected - got).abs().max()), float(expected.abs().max())
                old = worst.get(name, (0.0, 0.0))
                worst[name] = (max(old[0], error), max(old[1], scale))
                total += term_cfg.weight * got
            torch.testing.assert_close(reward, total * dt, rtol=1e-5, atol=1e-6)
            return reward

        def compare_terminations():
            dones = compute_terminations()
            for name, term_cfg in zip(terminations._term_names, terminations._term_cfgs, strict=True):
                expected = torch_terminations[name](unwrapped, **params(term_cfg))
                assert torch.equal(terminations.get_term(name), expected), name
            checked_steps.append(int(dones.sum()))
            return dones

        rewards.compute, terminations.compute = compare_rewards, compare_terminations
        generator = torch.Generator().manual_seed(1)
        env.get_observations()
        for _ in range(STEPS):
            env.step(torch.randn(env.num_envs, env.num_actions, generator=generator) * 0.5)
    finally:
        handle.close()

    assert len(checked_steps) == STEPS
    weighed = {name for name, term in vars(torch_cfg.rewards).items() if term is not None and term.weight != 0}
    assert set(worst) == weighed
    for name, (error, scale) in worst.items():
        assert error <= 1e-5 * max(1.0, scale), f"{name}: Warp term differs from the PyTorch term by {error}"
    moving = {name for name, (_, scale) in worst.items() if scale > 0}
    assert {"track_lin_vel_xy_exp", "feet_slide", "action_rate_l2", "joint_deviation_hip"} <= moving, worst
