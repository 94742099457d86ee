"""Every run and job under an output root, whatever launched it: list, status, logs, stop and cost.

Local runs are run directories; Slurm jobs are the entries of each submission's ``slurm_jobs.json``; SageMaker
Training Jobs are the folders holding a ``sagemaker_job.json`` record. State comes from where the work runs:
Slurm's ``squeue``/``sacct``, SageMaker's DescribeTrainingJob, the run directory's lock for local runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import accounting, ledger, runlock
from core.ledger import LEDGER
from core.rundir import CONFIG, CONSOLE_LOG, MANIFEST, METRICS, SUMMARY

SLURM_RECORD = "slurm_jobs.json"
"""Written by the HyperPod launcher next to the runs of a submission (``launchers.hyperpod.write_manifest``)."""
SAGEMAKER_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
"""Where SageMaker writes a Training Job's container output, one stream per instance (``<job>/algo-N-...``)."""
_MAX_DEPTH = 6


class JobNotFound(LookupError):
    """No run or job under the output root answers to the name given."""


@dataclass
class Job:
    """One run or job: what the user names it by, where it ran and where its files are."""

    id: str
    """A Slurm job id, a Training Job's name, or a local run's folder name."""
    launcher: str
    """``local``, ``hyperpod`` or ``sagemaker``."""
    folder: Path
    """The run directory (local, Slurm) or the record folder beside the sweep (SageMaker)."""
    record: dict[str, Any] = field(default_factory=dict)
    """The launcher's record of the job (an entry of ``slurm_jobs.json``, or ``sagemaker_job.json``)."""

    @property
    def name(self) -> str:
        return f"{self.launcher}:{self.id}"


# ----------------------------------------------------------------------------------------------- finding
def _walk(root: Path, depth: int = 0) -> Iterator[Path]:
    """Folders under ``root``, not descending into run directories' own subfolders or hidden folders."""
    yield root
    if depth >= _MAX_DEPTH or (root / MANIFEST).is_file():
        return
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return
    for child in children:
        yield from _walk(child, depth + 1)


def find_jobs(root: Path) -> list[Job]:
    """Every run and job under ``root``, oldest first by folder modification time."""
    root = Path(root)
    jobs: list[Job] = []
    claimed: set[Path] = set()
    folders = list(_walk(root)) if root.is_dir() else []
    for folder in folders:
        record = folder / SLURM_RECORD
        if record.is_file():
            for entry in json.loads(record.read_text()):
                run_dir = Path(entry["run_dir"])
                jobs.append(Job(id=str(entry["job_id"]), launcher="hyperpod", folder=run_dir, record=entry))
                claimed.add(run_dir.resolve())
        record = folder / accounting.SAGEMAKER_RECORD
        if record.is_file():
            data = json.loads(record.read_text())
            name = data.get("training_job_name") or folder.name
            jobs.append(Job(id=str(name), launcher="sagemaker", folder=folder, record=data))
            claimed.add(folder.resolve())
    for folder in folders:
        if (folder / MANIFEST).is_file() and folder.resolve() not in claimed:
            jobs.append(Job(id=folder.name, launcher="local", folder=folder))
    return sorted(jobs, key=lambda job: _mtime(job.folder))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def find_job(root: Path, key: str) -> Job:
    """The run or job named ``key``: a Slurm job id, a Training Job name, a run folder (its name or path), or
    ``launcher:id`` as ``list`` prints it."""
    jobs = find_jobs(root)
    path = Path(key).expanduser()
    exact = [
        j
        for j in jobs
        if key in (j.id, j.name) or (path.exists() and j.folder.resolve() == path.resolve()) or j.folder.name == key
    ]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        names = ", ".join(j.name for j in exact)
        raise JobNotFound(f"'{key}' names {len(exact)} runs or jobs ({names}); use one of these names")
    known = ", ".join(j.name for j in jobs[-10:]) or "none"
    raise JobNotFound(f"no run or job '{key}' under {root}; the latest are: {known}")


# ------------------------------------------------------------------------------------------------ state
def _slurm(*command: str) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def slurm_state(job_id: str) -> str | None:
    """The job's state from Slurm: the queue while it is there, its accounting after; None if Slurm has none."""
    queued = _slurm("squeue", "-h", "-j", job_id, "-o", "%T")
    if queued and queued.strip():
        return queued.split()[0]
    history = _slurm("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State")
    if history and history.strip():
        return history.strip().splitlines()[-1].split()[0]  # "CANCELLED by 0": the state is the first word
    return None


def _sagemaker_client(record: dict[str, Any], service: str = "sagemaker"):
    import boto3

    return boto3.session.Session(region_name=record.get("region")).client(service)


def sagemaker_description(record: dict[str, Any]) -> dict[str, Any] | None:
    """DescribeTrainingJob of the record's job, or None when it cannot be asked (no credentials, no network)."""
    try:
        return _sagemaker_client(record).describe_training_job(TrainingJobName=record["training_job_name"])
    except Exception:  # noqa: BLE001 - any failure to ask leaves the recorded state
        return None


def local_state(run_dir: Path) -> str:
    """``running`` while a process holds the run's lock, ``completed`` once it wrote its summary, else how its
    last attempt ended as the ledger says (``interrupted``, ``failed``), or ``stopped``."""
    holder = runlock.current_holder(run_dir)
    if holder is not None:
        return "running"
    if (run_dir / SUMMARY).is_file():
        return "completed"
    ends = [e for e in ledger.read(run_dir) if e.get("event") == "end"]
    if ends:
        return str(ends[-1].get("how") or ends[-1].get("status") or "stopped")
    return "stopped"


def state(job: Job) -> str:
    """Where the job stands now, asked from where it runs when possible."""
    if job.launcher == "hyperpod":
        return (slurm_state(job.id) or local_state(job.folder)).lower()
    if job.launcher == "sagemaker":
        described = sagemaker_description(job.record)
        if described is not None:
            status = str(described.get("TrainingJobStatus", "?"))
            secondary = described.get("SecondaryStatus")
            return f"{status}/{secondary}".lower() if secondary and secondary != status else status.lower()
        recorded = (job.record.get("sagemaker") or {}).get("status")
        return f"{recorded.lower()} (recorded)" if recorded else "unknown"
    return local_state(job.folder)


# ---------------------------------------------------------------------------------------------- figures
@dataclass
class Figures:
    """What ``list`` shows of a job besides its state."""

    iteration: int | None = None
    total: int | None = None
    objective: float | None = None
    cost: float | None = None
    currency: str = "USD"
    cost_note: str = ""


def figures(job: Job, prices: dict[str, Any] | None = None) -> Figures:
    """Progress, objective and cost so far of a job, from the files its run left (what is missing stays None)."""
    out = Figures()
    metrics = accounting.read_metrics(job.folder) if (job.folder / METRICS).is_file() else []
    if metrics:
        out.iteration = int(max(m.get("iteration", 0) for m in metrics))
    config = accounting.read_config(job.folder) if (job.folder / CONFIG).is_file() else {}
    total = (config.get("algo") or {}).get("max_iterations")
    out.total = int(total) if total is not None else None
    if (job.folder / LEDGER).is_file():
        try:
            account = accounting.account(job.folder, prices)
        except ValueError:
            return out
        out.objective, out.cost, out.currency = account.objective, account.cost, account.currency
        if account.billable_s is not None:
            out.cost_note = "SageMaker billable time"
        elif account.cost is None:
            out.cost_note = f"no {account.price_table} price"
    return out


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def table(jobs: list[Job], prices: dict[str, Any] | None = None, ask: Callable[[Job], str] = state) -> str:
    """The ``list`` table: one line per job with launcher, state, iteration, objective and cost so far."""
    rows = [("NAME", "STATE", "ITERATION", "OBJECTIVE", "COST", "FOLDER")]
    for job in jobs:
        fig = figures(job, prices)
        progress = "-" if fig.iteration is None else f"{fig.iteration}/{fig.total if fig.total else '?'}"
        cost = "-" if fig.cost is None else f"{fig.cost:.2f} {fig.currency}"
        rows.append((job.name, ask(job), progress, _number(fig.objective, 4), cost, str(job.folder)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)) + "  " + row[-1] for row in rows
    )


def status(job: Job, prices: dict[str, Any] | None = None) -> str:
    """Everything known about one job, a line per fact."""
    fig = figures(job, prices)
    lines = [
        f"{job.name}",
        f"  launcher    {job.launcher}",
        f"  state       {state(job)}",
        f"  folder      {job.folder}",
        f"  iteration   {'-' if fig.iteration is None else fig.iteration} of {fig.total or '?'}",
        f"  objective   {_number(fig.objective, 4)}",
        f"  cost so far {'-' if fig.cost is None else f'{fig.cost:.2f} {fig.currency}'}"
        + (f" ({fig.cost_note})" if fig.cost_note else ""),
    ]
    if job.launcher == "local":
        holder = runlock.current_holder(job.folder)
        if holder:
            lines.append(f"  held by     {runlock.describe(holder)}")
    if job.launcher == "hyperpod":
        lines.append(f"  log         {job.record.get('log')}")
    if job.launcher == "sagemaker":
        lines.append(f"  console     {job.record.get('console_url')}")
        lines.append(f"  checkpoints {job.record.get('checkpoint_s3_uri')}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- logs
def log_file(job: Job) -> Path | None:
    """The file a job's output goes to: Slurm's job output, or a local run's copy of its console."""
    if job.launcher == "hyperpod":
        log = job.record.get("log")
        return Path(log.replace("%j", job.id)) if log else None
    if job.launcher == "local":
        return job.folder / CONSOLE_LOG
    return None


def follow_file(path: Path, out: Callable[[str], None], follow: bool, done: Callable[[], bool], poll_s: float) -> None:
    """Print ``path``; with ``follow``, keep printing what is appended until ``done()``."""
    while not path.is_file():
        if not follow or done():
            raise FileNotFoundError(f"{path} does not exist (yet)")
        time.sleep(poll_s)
    with open(path, errors="replace") as handle:
        while True:
            chunk = handle.read()
            if chunk:
                out(chunk)
            if not follow or (done() and not chunk):
                return
            time.sleep(poll_s)


def cloudwatch_events(record: dict[str, Any], start_after: dict[str, str] | None = None) -> Iterator[str]:
    """Messages of every stream of the Training Job's CloudWatch log; ``start_after`` (stream -> token) continues
    where an earlier call stopped and is updated."""
    client = _sagemaker_client(record, "logs")
    name = record["training_job_name"]
    tokens = start_after if start_after is not None else {}
    streams = client.describe_log_streams(logGroupName=SAGEMAKER_LOG_GROUP, logStreamNamePrefix=f"{name}/")
    for stream in sorted(s["logStreamName"] for s in streams.get("logStreams", [])):
        while True:
            request = {"logGroupName": SAGEMAKER_LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if stream in tokens:
                request["nextToken"] = tokens[stream]
            page = client.get_log_events(**request)
            for event in page.get("events", []):
                yield event["message"]
            token = page.get("nextForwardToken")
            if not token or tokens.get(stream) == token:
                tokens[stream] = token or tokens.get(stream, "")
                break
            tokens[stream] = token


def logs(job: Job, out: Callable[[str], None], follow: bool = False, poll_s: float = 2.0) -> None:
    """Print the job's output: its log file, or its CloudWatch streams for a Training Job; ``follow`` keeps
    printing until the job ends."""
    if job.launcher == "sagemaker":
        tokens: dict[str, str] = {}
        while True:
            for message in cloudwatch_events(job.record, tokens):
                out(message if message.endswith("\n") else message + "\n")
            if not follow or _sagemaker_finished(job):
                return
            time.sleep(poll_s)
    path = log_file(job)
    if path is None:
        raise FileNotFoundError(f"{job.name} has no log file in its record")
    follow_file(path, out, follow, done=lambda: _finished(job), poll_s=poll_s)


def _sagemaker_finished(job: Job) -> bool:
    described = sagemaker_description(job.record) or {}
    return described.get("TrainingJobStatus") in ("Completed", "Failed", "Stopped", None)


def _finished(job: Job) -> bool:
    if job.launcher == "hyperpod":
        current = (slurm_state(job.id) or "").upper()
        return current not in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED")
    return runlock.current_holder(job.folder) is None


# ------------------------------------------------------------------------------------------------- stop
def stop(job: Job) -> str:
    """Ask the job to checkpoint and stop: SIGTERM to a local run's process, ``scancel`` to a Slurm job (its
    steps get SIGTERM and it is not requeued), StopTrainingJob to SageMaker (SIGTERM in the container, 120 s
    to checkpoint). Returns what was done."""
    if job.launcher == "hyperpod":
        done = subprocess.run(["scancel", job.id], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"scancel {job.id} failed: {done.stderr.strip()}")
        return f"scancel {job.id}: its training processes checkpoint and stop; Slurm does not requeue it"
    if job.launcher == "sagemaker":
        _sagemaker_client(job.record).stop_training_job(TrainingJobName=job.record["training_job_name"])
        return f"StopTrainingJob {job.id}: the run checkpoints within SageMaker's 120 s and the job ends Stopped"
    holder = runlock.current_holder(job.folder)
    if not holder:
        raise RuntimeError(f"{job.name} is not running (nobody holds {job.folder / runlock.LOCK_FILE})")
    import socket

    if holder.get("host") not in (None, socket.gethostname()) or not holder.get("pid"):
        raise RuntimeError(f"{job.name} runs as {runlock.describe(holder)}, not on this host; stop it there")
    os.kill(int(holder["pid"]), signal.SIGTERM)
    return f"SIGTERM to pid {holder['pid']}: the run checkpoints at the end of its iteration and stops"


# ------------------------------------------------------------------------------------------------- cost
def cost_table(jobs: list[Job], prices: dict[str, Any] | None = None) -> str:
    """Cost so far of every job and their total, per currency."""
    lines, totals = [], {}
    for job in jobs:
        fig = figures(job, prices)
        if fig.cost is None:
            lines.append(f"{job.name:<48} -  {fig.cost_note or 'no ledger'}")
            continue
        totals[fig.currency] = totals.get(fig.currency, 0.0) + fig.cost
        note = f"  ({fig.cost_note})" if fig.cost_note else ""
        lines.append(f"{job.name:<48} {fig.cost:10.2f} {fig.currency}{note}")
    lines += [f"{'total':<48} {total:10.2f} {currency}" for currency, total in totals.items()]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``rlforge-jobs`` / ``python scripts/jobs.py``: list, status, logs, stop and cost of every run and job."""
    import argparse

    parser = argparse.ArgumentParser(prog="jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="outputs", help="output root to look under (default: outputs)")
    parser.add_argument("--prices", type=Path, default=None, help="price file (default: conf/prices.yaml)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="every run and job: launcher, state, iteration, objective, cost so far")
    for verb, text in (("status", "everything known about one"), ("stop", "checkpoint, then stop")):
        verbs.add_parser(verb, help=text).add_argument("job", help="job id, Training Job name or run folder")
    logs_parser = verbs.add_parser("logs", help="its output: log file, Slurm output or CloudWatch stream")
    logs_parser.add_argument("job")
    logs_parser.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    verbs.add_parser("cost", help="cost so far of every run and job, and the total")
    args = parser.parse_args(argv)
    root = Path(args.root)
    prices = accounting.load_prices(args.prices)
    try:
        if args.verb == "list":
            jobs = find_jobs(root)
            print(table(jobs, prices) if jobs else f"no runs or jobs under {root}")
        elif args.verb == "cost":
            print(cost_table(find_jobs(root), prices))
        else:
            job = find_job(root, args.job)
            if args.verb == "status":
                print(status(job, prices))
            elif args.verb == "stop":
                print(stop(job))
            else:
                logs(job, lambda text: (sys.stdout.write(text), sys.stdout.flush()), follow=args.follow)
    except (JobNotFound, FileNotFoundError, RuntimeError) as error:
        print(f"jobs: {error}", file=sys.stderr)
        return 2
    return 0
