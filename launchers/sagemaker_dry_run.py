"""What a dry run prints: the request each job would be created with, the very dict handed to the SDK."""

from __future__ import annotations

import json

from launchers.sagemaker_plan import SubmittedJob

SECRET_MASK = "***"
"""Shown in place of a secret variable's value (`launcher.secret_env`)."""


def render_request(job: SubmittedJob) -> str:
    """The job's request (`job.request`, the `ModelTrainer` keyword arguments) as JSON, secret values masked."""
    secret_names = set(job.planned.settings.secret_env)
    shown = dict(job.request)
    shown["environment"] = {
        name: SECRET_MASK if name in secret_names else value for name, value in job.request["environment"].items()
    }
    return json.dumps(shown, indent=2)


def describe_dry_run(job: SubmittedJob) -> str:
    """The log message of one job of a dry run: which sweep point, and its request."""
    return (
        f"dry run, nothing sent: sweep point #{job.planned.job_num} would create a Training Job with these "
        "ModelTrainer arguments (the SDK adds a timestamp to base_job_name and its own sm_drivers channel, whose "
        f"sm_train.sh runs source_code.command with source_code.args):\n{render_request(job)}"
    )
