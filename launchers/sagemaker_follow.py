"""Following submitted SageMaker Training Jobs, and each job's record on the submit host.

At submission, `sagemaker_job.json` next to the sweep point's composed config names the job and where it keeps its
files. Following a job adds SageMaker's own timeline of it (DescribeTrainingJob's status transitions, training and
billable time), and once it has ended the run's ledger, metrics and manifest are copied there from the checkpoint
URI, so that `scripts/report.py` reads one folder for the whole account of the job.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.accounting import SAGEMAKER_RECORD
from core.ledger import LEDGER
from core.rundir import MANIFEST, METRICS, METRICS_REDONE, OVERRIDES, SUMMARY, write_bytes_atomic, write_json_atomic
from launchers.sagemaker_entry import RUN_DIR_NAME
from launchers.sagemaker_plan import SubmittedJob, console_url, parse_s3_uri

log = logging.getLogger(__name__)

TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")

RUN_RECORDS = (LEDGER, METRICS, METRICS_REDONE, MANIFEST, SUMMARY, OVERRIDES)
"""Files of the run directory copied next to the submission record once a followed job has ended: what the report
reads. The composed config stays the submit host's own (it names the launcher and the instances)."""


class JobsFailed(RuntimeError):
    """One or more followed jobs ended in a status other than Completed."""


def write_record(job: SubmittedJob, region: str, source_s3_uri: str) -> None:
    """Leave, next to the local sweep output, what identifies and reproduces the job."""
    if job.planned.record_dir is None:
        return
    record = {
        "training_job_name": job.name,
        "region": region,
        "console_url": console_url(region, job.name or ""),
        "checkpoint_s3_uri": job.checkpoint_s3_uri,
        "output_s3_uri": job.output_s3_uri,
        "source_s3_uri": source_s3_uri,
        "kernel_cache_uri": job.kernel_cache_uri,
        "overrides": job.container_overrides,
        "tags": job.tags,
    }
    job.planned.record_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job.planned.record_dir / SAGEMAKER_RECORD, record)


def _seconds(value: Any) -> float | None:
    """A DescribeTrainingJob time (a datetime) as Unix seconds."""
    return value.timestamp() if hasattr(value, "timestamp") else None


def sagemaker_timeline(described: dict[str, Any]) -> dict[str, Any]:
    """What the report needs of a DescribeTrainingJob answer, as plain data with Unix-second times: status, the
    secondary status transitions (Starting, Downloading, Training, Uploading, ... each with its start and end),
    training and billable seconds, Spot, instances."""
    resources = described.get("ResourceConfig") or {}
    return {
        "status": described.get("TrainingJobStatus"),
        "secondary_status": described.get("SecondaryStatus"),
        "failure_reason": described.get("FailureReason"),
        "creation_time": _seconds(described.get("CreationTime")),
        "training_start_time": _seconds(described.get("TrainingStartTime")),
        "training_end_time": _seconds(described.get("TrainingEndTime")),
        "training_time_s": described.get("TrainingTimeInSeconds"),
        "billable_time_s": described.get("BillableTimeInSeconds"),
        "spot": bool(described.get("EnableManagedSpotTraining")),
        "instance_type": resources.get("InstanceType"),
        "instance_count": resources.get("InstanceCount"),
        "transitions": [
            {
                "status": transition.get("Status"),
                "start": _seconds(transition.get("StartTime")),
                "end": _seconds(transition.get("EndTime")),
                "message": transition.get("StatusMessage"),
            }
            for transition in described.get("SecondaryStatusTransitions") or []
        ],
        "described_at": time.time(),
    }


def record_timeline(record_dir: Path, job_name: str | None, described: dict[str, Any]) -> None:
    """Add SageMaker's timeline of the job to its record (`sagemaker_job.json`), replacing an older one."""
    path = record_dir / SAGEMAKER_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {"training_job_name": job_name}
    record["sagemaker"] = sagemaker_timeline(described)
    write_json_atomic(path, record)


def collect_run_records(s3_client, checkpoint_s3_uri: str, record_dir: Path) -> list[str]:
    """Copy the run's ledger, metrics and manifest from the checkpoint URI next to the submission record, where
    `scripts/report.py` reads them with SageMaker's timeline; returns the names copied (missing ones are skipped)."""
    import botocore.exceptions

    bucket, prefix = parse_s3_uri(checkpoint_s3_uri)
    copied = []
    for name in RUN_RECORDS:
        key = "/".join(part for part in (prefix, RUN_DIR_NAME, name) if part)
        try:
            data = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except botocore.exceptions.ClientError:
            continue
        write_bytes_atomic(record_dir / name, data)
        copied.append(name)
    return copied


def update_record(s3_client, record_dir: Path, job_name: str, checkpoint_s3_uri: str, described: dict) -> None:
    """Keep the job's timeline in its record, and once it has ended, copy the run's records next to it."""
    record_timeline(record_dir, job_name, described)
    if described.get("TrainingJobStatus") in TERMINAL_STATUSES:
        copied = collect_run_records(s3_client, checkpoint_s3_uri, record_dir)
        log.info("%s: copied %s to %s", job_name, ", ".join(copied) or "nothing", record_dir)


def follow_up(boto_session) -> Callable[[SubmittedJob, dict[str, Any]], None]:
    """What to do with each answer while following a job: `update_record`. A failure here is logged; it never
    changes the launch's outcome."""
    s3_client = boto_session.client("s3")

    def on_answer(job: SubmittedJob, described: dict[str, Any]) -> None:
        if job.planned.record_dir is None or job.name is None:
            return
        try:
            update_record(s3_client, job.planned.record_dir, job.name, job.checkpoint_s3_uri, described)
        except Exception as error:  # noqa: BLE001 - the record is a convenience; the job's outcome stands
            log.warning("%s: could not update the record in %s: %s", job.name, job.planned.record_dir, error)

    return on_answer


def update_records(folder: Path, profile: str | None = None) -> int:
    """Update every job record under `folder` (a sweep's output, or one point) from DescribeTrainingJob and the
    job's checkpoint URI, as following the job would have; for jobs submitted without `launcher.wait`. Returns how
    many records were updated."""
    import boto3

    updated = 0
    for path in sorted(Path(folder).rglob(SAGEMAKER_RECORD)):
        record = json.loads(path.read_text())
        session = boto3.Session(profile_name=profile, region_name=record.get("region"))
        described = session.client("sagemaker").describe_training_job(TrainingJobName=record["training_job_name"])
        update_record(
            session.client("s3"), path.parent, record["training_job_name"], record["checkpoint_s3_uri"], described
        )
        print(f"{path.parent}: {record['training_job_name']} {described['TrainingJobStatus']}")
        updated += 1
    return updated


def raise_for_failures(jobs: Sequence[SubmittedJob]) -> None:
    """Raise JobsFailed, with each failed job's reason, unless every followed job ended Completed."""
    failed = [job for job in jobs if job.final.get("TrainingJobStatus") != "Completed"]
    if failed:
        reasons = "\n".join(
            f"  {job.name}: {job.final.get('TrainingJobStatus')}: {job.final.get('FailureReason', 'no reason given')}"
            for job in failed
        )
        raise JobsFailed(f"{len(failed)} of {len(jobs)} SageMaker job(s) did not complete:\n{reasons}")


class JobTracker:
    """Polls submitted jobs, logs their status changes and records their final state.

    `on_answer(job, described)` is called with each answer that shows a new status, and with the final one."""

    def __init__(
        self,
        sagemaker_client,
        poll_interval_s: float,
        sleep: Callable[[float], None],
        on_answer: Callable[[SubmittedJob, dict[str, Any]], None] | None = None,
    ):
        self.client = sagemaker_client
        self.poll_interval_s = poll_interval_s
        self.sleep = sleep
        self.on_answer = on_answer
        self.active: list[SubmittedJob] = []
        self.last_status: dict[str, str] = {}

    def add(self, job: SubmittedJob) -> None:
        self.active.append(job)

    def running_count(self) -> int:
        return len(self.active)

    def poll(self) -> None:
        """Describe every active job once; retire those in a terminal status."""
        still_active = []
        for job in self.active:
            described = self.client.describe_training_job(TrainingJobName=job.name)
            status = described["TrainingJobStatus"]
            shown = f"{status}/{described.get('SecondaryStatus', '')}"
            changed = self.last_status.get(job.name) != shown
            if changed:
                log.info("%s: %s", job.name, shown)
                self.last_status[job.name] = shown
            if self.on_answer is not None and (changed or status in TERMINAL_STATUSES):
                self.on_answer(job, described)
            if status in TERMINAL_STATUSES:
                job.final = described
            else:
                still_active.append(job)
        self.active = still_active

    def poll_until_one_ends(self) -> None:
        count = len(self.active)
        self.poll()
        while len(self.active) >= count:
            self.sleep(self.poll_interval_s)
            self.poll()

    def poll_until_all_end(self) -> None:
        self.poll()
        while self.active:
            self.sleep(self.poll_interval_s)
            self.poll()
