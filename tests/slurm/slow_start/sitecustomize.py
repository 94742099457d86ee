"""Test-only: slow down the first attempt's start-up of a training job, as a cold kernel cache does on a real task.

On PYTHONPATH with RLFORGE_TEST_SLOW_START_S set, every Python process of a Slurm job registers the task kind
`slow_start_toy`: the toy task, built only after that many seconds on the job's first attempt (see
slow_start_env.py). Nothing happens outside a Slurm job, so the submit host is untouched.
"""

import os

if os.environ.get("RLFORGE_TEST_SLOW_START_S") and os.environ.get("SLURM_JOB_ID"):
    from tasks.registry import register_kind

    register_kind("slow_start_toy", "slow_start_env:build")
