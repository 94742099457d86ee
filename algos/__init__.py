"""Learners: rsl-rl's PPO runner, driven by this project's loop (checkpoints, resume, stop requests)."""
