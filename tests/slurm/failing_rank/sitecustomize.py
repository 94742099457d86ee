"""Test-only: one rank of a Slurm job's first attempt fails, at start-up or in training, as a bug on one node would.

On PYTHONPATH with RLFORGE_TEST_FAILING_RANK=<rank>:<steps> set, every Python process of a Slurm job registers the
task kind `failing_rank_toy`: the toy task, whose environment step raises on that rank after that many steps of the
job's first attempt, or whose build raises there with 0 steps (see failing_rank_env.py). Nothing happens outside a Slurm job, so the submit host is untouched.
"""

import os

if os.environ.get("RLFORGE_TEST_FAILING_RANK") and os.environ.get("SLURM_JOB_ID"):
    from tasks.registry import register_kind

    register_kind("failing_rank_toy", "failing_rank_env:build")
