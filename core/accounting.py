"""Where a run's time and money went: figures computed from its ledger, metrics and manifest, and for a SageMaker
Training Job that was followed, SageMaker's own timeline and billable time (``sagemaker_job.json``)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core import ledger
from core.rundir import CONFIG, MANIFEST, METRICS, METRICS_REDONE, OVERRIDES

DEFAULT_PRICES = Path(__file__).resolve().parent.parent / "conf" / "prices.yaml"
# Which price table (and so which billing model) a launcher's runs use unless told otherwise.
TABLE_OF_LAUNCHER = {"local": "local", "hyperpod": "hyperpod", "sagemaker": "training_job"}
# A persistent cluster is paid for from submission to the end, gaps included; a Training Job only while an
# attempt runs.
BILLING_OF_TABLE = {"local": "span", "hyperpod": "span", "training_job": "attempts"}

SAGEMAKER_RECORD = "sagemaker_job.json"
"""A Training Job's record on the submit host, next to the sweep point's config: names, locations and, once the job
was followed, SageMaker's timeline under ``sagemaker`` (written by launchers/sagemaker_follow.py)."""
# SageMaker's secondary statuses before the container runs: getting instances, then the image and input data.
PROVISIONING_STATUSES = ("Starting", "Pending", "LaunchingMLInstances", "PreparingTrainingStack")
DOWNLOADING_STATUSES = ("Downloading", "DownloadingTrainingImage")

RETURN_KEY = "Train/mean_reward"
EPISODE_LENGTH_KEY = "Train/mean_episode_length"
REWARD_TERM_PREFIX = "Episode_Reward/"
_VELOCITY_ERROR = re.compile(r"error_vel_xy|velocity_error")


# ------------------------------------------------------------------------------------------- reading
def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every iteration the run ever did, in the order done: ``metrics.jsonl`` and the lines of iterations done again
    later (``metrics.redone.jsonl``), so an iteration number can repeat."""
    lines = ledger.read_jsonl(Path(run_dir) / METRICS) + ledger.read_jsonl(Path(run_dir) / METRICS_REDONE)
    return sorted(lines, key=lambda line: float(line.get("time", 0.0)))


def counted_metrics(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The iterations that count, one per iteration number, in order.

    A resumed attempt restarts from its checkpoint, so an iteration number written twice was done twice; the
    later line belongs to the lineage that the final model descends from and the earlier one was lost work.
    """
    last: dict[int, dict[str, Any]] = {}
    for line in metrics:
        last[int(line["iteration"])] = line
    return [last[number] for number in sorted(last)]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved ``config.yaml`` as plain data (empty when missing)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]


def read_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides the run was started with."""
    path = Path(run_dir) / OVERRIDES
    if not path.is_file():
        return []
    from omegaconf import OmegaConf

    return [str(item) for item in OmegaConf.load(path) or []]


def _duration(line: dict[str, Any]) -> float:
    return float(line.get("collect_s", 0.0)) + float(line.get("learn_s", 0.0))


# ------------------------------------------------------------------------------------------- prices
def load_prices(path: Path | None = None) -> dict[str, Any]:
    """The price table (``conf/prices.yaml`` unless another file is given) as plain data."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path or DEFAULT_PRICES), resolve=True)  # type: ignore[return-value]


def hourly_price(prices: dict[str, Any], table: str, instance_type: str | None, spot: bool = False) -> float | None:
    """Price of one instance-hour in ``table`` (``hyperpod``, ``training_job`` or ``local``), or None if unlisted."""
    rates = prices.get(table) or {}
    price = rates.get(instance_type) if instance_type else None
    if price is None:
        price = rates.get("default")
    if price is None:
        return None
    if spot and table == "training_job":
        price = float(price) * float(prices.get("spot_price_fraction", 1.0))
    return float(price)


@dataclass
class CostEstimate:
    """What a submission may cost at most: runs x instances x hours x the price of an instance-hour."""

    runs: int
    instances_per_run: int
    hours_per_run: float
    """The most a run may last (its time limit), in hours."""
    instance_type: str | None
    table: str
    spot: bool
    price_per_hour: float | None
    """Per instance-hour, Spot's fraction applied; None when the table does not list the instance type."""
    currency: str
    unit: str = "run(s)"
    """What ``runs`` counts: runs, or the array tasks that train several runs each (``launcher.runs_per_gpu``)."""

    @property
    def instance_hours(self) -> float:
        return self.runs * self.instances_per_run * self.hours_per_run

    @property
    def cost(self) -> float | None:
        return None if self.price_per_hour is None else self.instance_hours * self.price_per_hour

    def line(self) -> str:
        """One line for a dry run: the product spelled out, and what the figure assumes."""
        kind = self.instance_type or "instance"
        product = f"{self.runs} {self.unit} x {self.instances_per_run} {kind} x {self.hours_per_run:g} h"
        if self.cost is None:
            return (
                f"estimated cost: {product} = {self.instance_hours:g} instance-hours; no price for {kind} in the "
                f"'{self.table}' table of the price file"
            )
        spot = "; Spot: the price file's spot_price_fraction of on-demand, assumed" if self.spot else ""
        return (
            f"estimated cost at most: {product} x {self.price_per_hour:.4g} {self.currency}/h = "
            f"{self.cost:,.2f} {self.currency} (every run to its time limit; list prices of conf/prices.yaml{spot})"
        )


def estimate_cost(
    *,
    table: str,
    instance_type: str | None,
    instances_per_run: int,
    hours_per_run: float,
    runs: int,
    spot: bool = False,
    prices: dict[str, Any] | None = None,
    unit: str = "run(s)",
) -> CostEstimate:
    """The most a submission of ``runs`` runs can cost, each holding ``instances_per_run`` instances for at most
    ``hours_per_run`` hours, at the ``table`` price of ``instance_type`` (``hyperpod`` or ``training_job``)."""
    prices = prices if prices is not None else load_prices()
    return CostEstimate(
        runs=runs,
        instances_per_run=instances_per_run,
        hours_per_run=hours_per_run,
        instance_type=instance_type,
        table=table,
        spot=spot,
        price_per_hour=hourly_price(prices, table, instance_type, spot=spot) if instance_type else None,
        currency=str(prices.get("currency", "USD")),
        unit=unit,
    )


# ------------------------------------------------------------------------------------------- figures
@dataclass
class Attempt:
    """One process (rank 0) that worked on the run: a first start, a requeue, a resume."""

    attempt: str
    start: float
    """Process start, Unix seconds."""
    end: float
    """Its last recorded sign of life: its end event, else its last event or metrics line."""
    how: str
    """``completed``, ``interrupted``, ``failed``, or ``lost`` (killed without an end event)."""
    resumed_from: int | None = None
    """Iteration it continued from (None for the first attempt)."""
    iterations: int = 0
    """Metrics lines it wrote."""
    startup_s: float | None = None
    """Process start to the start of its first iteration."""
    host: str | None = None
    instance_type: str | None = None
    nodes: int = 1
    reason: str | None = None
    """The signal or error that ended it, when known."""


@dataclass
class RunAccount:
    """The figures of one run. Times are seconds; ``billed_s`` is per node (multiply by ``nodes`` for node-time)."""

    run_dir: str
    launcher: str
    status: str
    """How the newest attempt ended."""
    instance_type: str | None
    nodes: int
    submitted_at: float
    """Submission time when a launcher recorded it, else the first process start."""
    ended_at: float
    wall_clock_s: float
    """Submission to the end of the newest attempt."""
    time_to_first_iteration_s: float | None
    """Submission to the end of the first completed iteration."""
    first_startup_s: float | None
    """First process start to the start of its first iteration (imports, simulator, kernel compilation)."""
    iterations_completed: int
    """Iterations that count: the highest iteration number reached by the final lineage."""
    iterations_run: int
    """Iterations run in all, repeats included."""
    iterations_redone: int
    """Iterations run more than once because an attempt's newer work was lost."""
    interruptions: int
    attempts: int
    signals: int
    requeues: int
    billing: str
    """``span`` (paid from submission to end) or ``attempts`` (paid while an attempt runs)."""
    billed_s: float
    useful_s: float
    """Time spent in the iterations that count."""
    startup_s: float
    """Start-up of every attempt."""
    redone_s: float
    """Time spent in iterations that were later done again."""
    idle_s: float
    """Billed time with no process running: waiting in a queue, between attempts."""
    other_s: float
    """The rest of the billed time: checkpoints, logging, shutdown, an iteration cut short by a kill."""
    useful_fraction: float
    price_table: str
    price_per_hour: float | None
    cost: float | None
    cost_per_useful_hour: float | None
    currency: str
    objective_key: str | None
    objective: float | None
    attempt_list: list[Attempt] = field(default_factory=list)
    first_iteration_parts: list[tuple[str, float]] = field(default_factory=list)
    """Time to first iteration split into consecutive parts (label, seconds) that add up to it: SageMaker's
    provisioning and downloading (when its timeline was recorded), the container's start (kernel cache fetch), the
    training process's start-up and the first iteration itself."""
    sagemaker_phases: list[dict[str, Any]] = field(default_factory=list)
    """SageMaker's secondary status transitions: ``status``, ``start`` (seconds after submission), ``seconds``
    (None while it lasts), ``message``."""
    billable_s: float | None = None
    """SageMaker's BillableTimeInSeconds per instance (Spot savings included); the cost uses it when known."""
    training_job_s: float | None = None
    """SageMaker's TrainingTimeInSeconds per instance."""
    spot_savings: float | None = None
    """1 - billable / training time: what managed Spot saved."""
    kernel_cache: list[dict[str, Any]] = field(default_factory=list)
    """The container's kernel cache transfers (``kernel_cache_fetch`` / ``kernel_cache_upload`` events)."""
    container_started_at: float | None = None
    """When the first container started (the SageMaker entry's ``container_start``), Unix seconds."""

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)


def _attempts(events: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> list[Attempt]:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_id.setdefault(str(event["attempt"]), []).append(event)
    attempts = []
    for attempt_id, group in by_id.items():
        start_event = next((e for e in group if e["event"] == "process_start"), group[0])
        start = float(start_event.get("at") or start_event["time"])
        end_event = next((e for e in reversed(group) if e["event"] == "end"), None)
        resume = next((e for e in group if e["event"] == "resume"), None)
        attempts.append(
            Attempt(
                attempt=attempt_id,
                start=start,
                end=float(group[-1]["time"]),
                how=str(end_event["how"]) if end_event else "lost",
                resumed_from=int(resume["iteration"]) if resume else None,
                host=start_event.get("host"),
                instance_type=start_event.get("instance_type"),
                nodes=int(start_event.get("nodes") or 1),
                reason=(end_event or {}).get("reason") or (end_event or {}).get("error"),
            )
        )
    attempts.sort(key=lambda a: a.start)
    # Each metrics line belongs to the attempt running when it was written.
    for index, attempt in enumerate(attempts):
        until = attempts[index + 1].start if index + 1 < len(attempts) else math.inf
        mine = [m for m in metrics if attempt.start <= float(m["time"]) < until]
        attempt.iterations = len(mine)
        if mine:
            attempt.startup_s = max(0.0, float(mine[0]["time"]) - _duration(mine[0]) - attempt.start)
            attempt.end = max(attempt.end, float(mine[-1]["time"]))
    return attempts


def account(
    run_dir: Path, prices: dict[str, Any] | None = None, *, instance_type: str | None = None, table: str | None = None
) -> RunAccount:
    """All figures of the run in ``run_dir``; ``instance_type`` and ``table`` override what the run recorded."""
    run_dir = Path(run_dir)
    events = ledger.read(run_dir)
    if not events:
        raise ValueError(f"{run_dir} has no {ledger.LEDGER}; is it a run directory?")
    metrics = read_metrics(run_dir)
    manifest = _read_json(run_dir / MANIFEST)
    config = read_config(run_dir)
    prices = prices if prices is not None else load_prices()
    launcher_cfg = config.get("launcher") or {}
    sagemaker = _read_json(run_dir / SAGEMAKER_RECORD).get("sagemaker") or {}
    # Inside a Training Job the run composes its config without the launcher that sent it; the record and the
    # container's own events say where it ran.
    in_container = any("attempt" not in e and e.get("launcher") == "sagemaker" for e in events)
    launcher = str(
        ("sagemaker" if sagemaker or in_container else None)
        or launcher_cfg.get("name")
        or manifest.get("launcher")
        or events[0].get("launcher")
        or "local"
    )

    # Events without an attempt id are the container's own (the SageMaker entry: its start, kernel cache transfers).
    container_events = [e for e in events if "attempt" not in e]
    events = [e for e in events if "attempt" in e]
    if not events:
        raise ValueError(f"{run_dir} has no training attempt in its {ledger.LEDGER}")
    attempts = _attempts(events, metrics)
    first_start = attempts[0].start
    submitted = [float(e["submitted_at"]) for e in events if e["event"] == "process_start" and e.get("submitted_at")]
    container_starts = [float(e.get("at") or e["time"]) for e in container_events if e["event"] == "container_start"]
    submitted_at = min([first_start, *submitted, *container_starts])
    ended_at = max(a.end for a in attempts)

    counted = counted_metrics(metrics)
    counted_ids = {id(line) for line in counted}
    useful_s = sum(_duration(line) for line in counted)
    redone_s = sum(_duration(line) for line in metrics if id(line) not in counted_ids)
    first_iteration = next((e for e in events if e["event"] == "first_iteration"), None)
    first_line_time = float(metrics[0]["time"]) if metrics else None
    first_done = float(first_iteration["time"]) if first_iteration else first_line_time

    startup_s = 0.0
    for attempt in attempts:
        # An attempt that never finished an iteration spent all its time starting up.
        startup_s += attempt.startup_s if attempt.startup_s is not None else attempt.end - attempt.start

    table = table or TABLE_OF_LAUNCHER.get(launcher, "local")
    billing = BILLING_OF_TABLE.get(table, "span")
    running_s = _union_length([(a.start, a.end) for a in attempts])
    if billing == "span":
        billed_s = ended_at - submitted_at
        idle_s = billed_s - running_s
    else:
        billed_s = running_s
        idle_s = 0.0
    other_s = billed_s - useful_s - redone_s - startup_s - idle_s

    interruptions = sum(1 for a in attempts[:-1] if a.how != "completed")
    if attempts[-1].how in ("interrupted", "lost"):
        interruptions += 1

    instance = (
        instance_type
        or next((a.instance_type for a in reversed(attempts) if a.instance_type), None)
        or launcher_cfg.get("instance_type")
    )
    nodes = max(
        [a.nodes for a in attempts]
        + [int(launcher_cfg.get("instance_count") or 1), int(launcher_cfg.get("nodes") or 1)]
    )
    billable_s = _number(sagemaker.get("billable_time_s"))
    training_job_s = _number(sagemaker.get("training_time_s"))
    if sagemaker.get("instance_type") and not instance_type:
        instance = sagemaker["instance_type"]
    if sagemaker.get("instance_count"):
        nodes = int(sagemaker["instance_count"])
    if billable_s is not None:
        # SageMaker's billable seconds already leave out what Spot saved: priced at the on-demand rate.
        price = hourly_price(prices, table, instance)
        cost = price * nodes * billable_s / 3600.0 if price is not None else None
    else:
        price = hourly_price(prices, table, instance, spot=bool(launcher_cfg.get("spot")))
        cost = price * nodes * billed_s / 3600.0 if price is not None else None
    cost_per_useful_hour = cost / (useful_s / 3600.0) if cost is not None and useful_s > 0 else None

    objective_key = _objective_key(run_dir, config)
    objective = final_value(counted, objective_key) if objective_key else None
    return RunAccount(
        run_dir=str(run_dir),
        launcher=launcher,
        status=attempts[-1].how,
        instance_type=instance,
        nodes=nodes,
        submitted_at=submitted_at,
        ended_at=ended_at,
        wall_clock_s=ended_at - submitted_at,
        time_to_first_iteration_s=(first_done - submitted_at) if first_done is not None else None,
        first_startup_s=attempts[0].startup_s,
        iterations_completed=int(counted[-1]["iteration"]) if counted else 0,
        iterations_run=len(metrics),
        iterations_redone=len(metrics) - len(counted),
        interruptions=interruptions,
        attempts=len(attempts),
        signals=sum(1 for e in events if e["event"] == "signal"),
        requeues=sum(1 for e in events if e["event"] == "requeued"),
        billing=billing,
        billed_s=billed_s,
        useful_s=useful_s,
        startup_s=startup_s,
        redone_s=redone_s,
        idle_s=idle_s,
        other_s=other_s,
        useful_fraction=useful_s / billed_s if billed_s > 0 else 0.0,
        price_table=table,
        price_per_hour=price,
        cost=cost,
        cost_per_useful_hour=cost_per_useful_hour,
        currency=str(prices.get("currency", "USD")),
        objective_key=objective_key,
        objective=objective,
        attempt_list=attempts,
        first_iteration_parts=first_iteration_parts(
            submitted_at,
            sagemaker,
            min(container_starts) if container_starts else None,
            attempts[0],
            first_done,
        ),
        sagemaker_phases=[
            {
                "status": phase.get("status"),
                "start": phase["start"] - submitted_at if phase.get("start") is not None else None,
                "seconds": phase["end"] - phase["start"]
                if phase.get("end") is not None and phase.get("start") is not None
                else None,
                "message": phase.get("message"),
            }
            for phase in sagemaker.get("transitions") or []
        ],
        billable_s=billable_s,
        training_job_s=training_job_s,
        spot_savings=1.0 - billable_s / training_job_s if billable_s is not None and training_job_s else None,
        container_started_at=min(container_starts) if container_starts else None,
        kernel_cache=[
            {key: value for key, value in e.items() if key not in ("writer", "host", "launcher", "nodes")}
            for e in container_events
            if e["event"] in ("kernel_cache_fetch", "kernel_cache_upload")
        ],
    )


def _objective_key(run_dir: Path, config: dict[str, Any]) -> str | None:
    """The metric the run returns as its objective. A Training Job's record keeps the config as the submit host
    composed it, where the key may still be an interpolation (``${task.objective}``); it is resolved here."""
    key = config.get("objective")
    if isinstance(key, str) and "${" in key:
        from omegaconf import OmegaConf

        try:
            key = OmegaConf.select(OmegaConf.load(Path(run_dir) / CONFIG), "objective")
        except Exception:  # noqa: BLE001 - an unresolvable key leaves the run without an objective
            key = None
    return key if isinstance(key, str) else None


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def first_iteration_parts(
    submitted_at: float,
    sagemaker: dict[str, Any],
    container_start: float | None,
    first_attempt: Attempt,
    first_done: float | None,
) -> list[tuple[str, float]]:
    """Time to first iteration as consecutive parts that add up to it, from what was recorded: each part runs from
    the previous known moment to the next (a moment not recorded merges its part into the following one).

    Moments: the job's creation, the end of SageMaker's provisioning (Starting) and downloading (image and input)
    statuses before its first Training status, the container's start (the SageMaker entry), the training process's
    start, the start and the end of the first iteration. Only the first attempt's start-up is split; when its first
    iteration came in a later attempt, the rest is one part."""
    if first_done is None:
        return []
    transitions = [t for t in sagemaker.get("transitions") or [] if t.get("start") is not None]
    training_starts = [t["start"] for t in transitions if t.get("status") == "Training"]
    training_start = min(training_starts) if training_starts else None
    before = [t for t in transitions if training_start is None or t["start"] < training_start]
    provisioned = [t["end"] for t in before if t.get("status") in PROVISIONING_STATUSES and t.get("end") is not None]
    downloaded = [t["end"] for t in before if t.get("status") in DOWNLOADING_STATUSES and t.get("end") is not None]
    moments: list[tuple[str, float | None]] = [
        ("submission to job created", _number(sagemaker.get("creation_time"))),
        ("provisioning instances (SageMaker Starting)", max(provisioned) if provisioned else None),
        (
            "image pull and input download (SageMaker Downloading)",
            training_start or (max(downloaded) if downloaded else None),
        ),
        ("container start", container_start),
        (
            "container start to train.py start (kernel cache fetch)"
            if container_start is not None
            else "submission to train.py start",
            first_attempt.start,
        ),
    ]
    if first_attempt.startup_s is not None:
        moments += [
            ("train.py start-up: imports, simulator, kernels", first_attempt.start + first_attempt.startup_s),
            ("first iteration", first_done),
        ]
    else:
        moments.append(("until the first iteration, in a later attempt", first_done))
    parts, previous = [], submitted_at
    for label, moment in moments:
        if moment is None or (not parts and moment == submitted_at):
            continue  # not recorded, or the moment that stands for the submission itself
        parts.append((label, moment - previous))
        previous = moment
    return parts


def _union_length(spans: list[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping intervals."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def final_value(counted: list[dict[str, Any]], key: str, window: int = 5) -> float | None:
    """Mean of ``key`` over the last ``window`` counted iterations that logged it (as ``train.py`` returns it)."""
    values = [float(line[key]) for line in counted if key in line][-window:]
    return sum(values) / len(values) if values else None


# ------------------------------------------------------------------------------------------- curves
def curve_keys(metrics: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The logged keys of the report's panels: return, episode length, velocity error, reward terms."""
    keys = dict.fromkeys(k for line in metrics for k in line)
    return {
        "return": [k for k in keys if k == RETURN_KEY],
        "episode length": [k for k in keys if k == EPISODE_LENGTH_KEY],
        "velocity-tracking error": [k for k in keys if _VELOCITY_ERROR.search(k)],
        "reward terms": sorted(k for k in keys if k.startswith(REWARD_TERM_PREFIX)),
    }


def curve(counted: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(iterations, values) of one logged key over the counted iterations."""
    points = [(int(line["iteration"]), float(line[key])) for line in counted if key in line]
    return [p[0] for p in points], [p[1] for p in points]


# ------------------------------------------------------------------------------------------- sweeps
def is_run_dir(path: Path) -> bool:
    """A folder that a training run wrote (it has a ledger)."""
    return (Path(path) / ledger.LEDGER).is_file()


def sweep_points(sweep_dir: Path) -> list[Path]:
    """The run directories directly under a sweep directory, in numeric order where names are numbers."""
    points = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and is_run_dir(p)]
    return sorted(points, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def varying_overrides(overrides: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each point's overrides less those every point shares: what sets the points apart."""
    lists = list(overrides.values())
    shared = set(lists[0]).intersection(*lists[1:]) if lists else set()
    return {name: [o for o in items if o not in shared] for name, items in overrides.items()}
