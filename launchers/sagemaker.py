"""Launches composed training runs as SageMaker Training Jobs, and brings their records up to date afterwards.

The Hydra plugin in `hydra_plugins/sagemaker_launcher` turns each sweep point into a `PlannedJob`; :func:`launch`
checks every setting before anything is uploaded, packages the source once, plans each job's request
(`launchers.sagemaker_plan`), and then either prints those requests (a dry run, `launchers.sagemaker_dry_run`) or
uploads the source and creates the jobs from them (`launchers.sagemaker_aws`), following them to their end when asked
(`launchers.sagemaker_follow`).

`python -m launchers.sagemaker records FOLDER` updates the records of jobs that were not followed.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from core.accounting import CostEstimate, estimate_cost
from launchers import sagemaker_aws
from launchers.sagemaker_dry_run import describe_dry_run
from launchers.sagemaker_follow import JobTracker, follow_up, raise_for_failures, update_records, write_record
from launchers.sagemaker_plan import (
    LaunchError,
    PlannedJob,
    SubmittedJob,
    check_settings,
    console_url,
    dry_run_location,
    git_commit_tag,
    plan_jobs,
    source_s3_uri,
)
from launchers.sagemaker_source import SourcePackage, SourcePackageError, package_source

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""The work tree this launcher ships by default."""


def package(planned: Sequence[PlannedJob], staging: Path) -> SourcePackage:
    """Check every job's settings, then package the source the launch ships (the first job's `source_dir`) into
    `staging`; raises LaunchError before anything is uploaded."""
    for job in planned:
        check_settings(job.settings)
    shared = planned[0].settings
    source_root = Path(shared.source_dir).resolve() if shared.source_dir else PROJECT_ROOT
    try:
        source = package_source(source_root, staging / "source.tar.gz", int(shared.max_source_mb * 1e6))
    except SourcePackageError as error:
        raise LaunchError(str(error)) from error
    log.info(
        "source package: %.2f MB, %d files, commit %s",
        source.size_bytes / 1e6,
        source.file_count,
        git_commit_tag(source),
    )
    return source


def cost_estimates(planned: Sequence[PlannedJob], prices: dict | None = None) -> list[CostEstimate]:
    """The most the jobs can cost, one estimate per distinct instance request: each job holding
    `instance_count` instances for its `max_runtime_s` at the Training Job price (Spot's fraction with `spot`)."""
    groups: dict[tuple, int] = {}
    for job in planned:
        s = job.settings
        key = (s.instance_type, int(s.instance_count), int(s.max_runtime_s), bool(s.spot))
        groups[key] = groups.get(key, 0) + 1
    return [
        estimate_cost(
            table="training_job",
            instance_type=instance_type,
            instances_per_run=count,
            hours_per_run=runtime_s / 3600,
            runs=runs,
            spot=spot,
            prices=prices,
        )
        for (instance_type, count, runtime_s, spot), runs in groups.items()
    ]


def launch(
    planned: Sequence[PlannedJob],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> list[SubmittedJob]:
    """Check, package, plan, and then print (dry run) or upload, submit and (with `wait`) follow the jobs of one
    launch.

    All checks run before the first upload. Settings are read from the first job for what is
    shared by the launch (region, profile, output path, source, dry run, wait, polling).

    Raises:
        LaunchError: a setting or the AWS state forbids the launch (nothing was uploaded).
        JobsFailed: with `wait`, a job ended Failed or Stopped.
    """
    if not planned:
        return []
    shared = planned[0].settings
    with tempfile.TemporaryDirectory(prefix="sagemaker-source-") as staging:
        source = package(planned, Path(staging))
        if shared.dry_run:
            region, output_path = dry_run_location(shared)
            jobs = plan_jobs(planned, region=region, output_path=output_path, source=source)
            for job in jobs:
                log.info(describe_dry_run(job))
            for estimate in cost_estimates(planned):
                log.info("%s", estimate.line())
            return jobs
        for estimate in cost_estimates(planned):
            log.info("%s", estimate.line())

        boto_session = sagemaker_aws.open_boto_session(shared)
        region = boto_session.region_name
        output_path = (shared.output_path or sagemaker_aws.default_output_path(boto_session, shared)).rstrip("/")
        jobs = plan_jobs(planned, region=region, output_path=output_path, source=source)
        sagemaker_aws.check_checkpoint_uris(boto_session, jobs)

        # Everything is checked: from here on, things are uploaded and created.
        sdk_session = sagemaker_aws.open_sdk_session(boto_session, output_path)
        source_uri = source_s3_uri(output_path, source)
        sagemaker_aws.upload_source(boto_session, source, source_uri)
        log.info("source uploaded to %s", source_uri)

        tracker = JobTracker(sdk_session.sagemaker_client, shared.poll_interval_s, sleep, follow_up(boto_session))
        for job in jobs:
            while tracker.running_count() >= job.planned.settings.max_parallel_jobs:
                tracker.poll_until_one_ends()
            job.name = sagemaker_aws.create_training_job(sdk_session, job.request)
            tracker.add(job)
            write_record(job, region, source_uri)
            log.info(
                "submitted %s\n  console:     %s\n  checkpoints: %s\n  output:      %s\n  overrides:   %s",
                job.name,
                console_url(region, job.name),
                job.checkpoint_s3_uri,
                job.output_s3_uri,
                " ".join(job.container_overrides) or "(none)",
            )

        if shared.wait:
            tracker.poll_until_all_end()
            raise_for_failures(jobs)
        return jobs


def main(argv: Sequence[str] | None = None) -> int:
    """`records FOLDER`: bring the job records under FOLDER up to date (timeline, billable time, the run's files)."""
    import argparse

    from core.accounting import SAGEMAKER_RECORD

    parser = argparse.ArgumentParser(description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    records = commands.add_parser("records", help="update the sagemaker_job.json records under a folder")
    records.add_argument("folder", type=Path, help="a sweep's output folder (outputs/multirun/<time>) or one point")
    records.add_argument("--profile", help="named AWS profile (default: the default credential chain)")
    args = parser.parse_args(argv)
    found = update_records(args.folder, args.profile)
    if not found:
        print(f"no {SAGEMAKER_RECORD} under {args.folder}")
    return 0 if found else 1


if __name__ == "__main__":
    raise SystemExit(main())
