"""The SageMaker entry's process management with real processes: stop signals, a failing rank, orphans, variables."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launchers.sagemaker_entry import (
    Outcome,
    distributed_layout,
    effective_warp_cache_dir,
    process_environments,
    report,
    training_command,
    warp_cache_dir,
)
from rlforge_testing import ROOT

# Runs a Supervisor over small Python processes and prints how they ended. Each process runs the code in its
# CHILD_CODE variable, with WORK (a folder to leave marks in) and the supervisor's LOCAL_RANK.
DRIVER = """
import dataclasses, json, os, signal, sys
from launchers.sagemaker_entry import Supervisor

spec = json.loads(sys.argv[1])
supervisor = Supervisor(stop_timeout_s=spec["stop_timeout_s"])
if spec["stop_before_start"]:
    os.kill(os.getpid(), signal.SIGTERM)
command = [sys.executable, "-c", "import os; exec(os.environ['CHILD_CODE'])"]
environments = [{"CHILD_CODE": code, "WORK": spec["work"], "LOCAL_RANK": str(rank)} for rank, code in
                enumerate(spec["children"])]
outcome = supervisor.run(command, environments, cwd=spec["work"])
supervisor.close()
print("OUTCOME " + json.dumps(dataclasses.asdict(outcome)), flush=True)
"""

PRELUDE = """
import os, signal, sys, time
from pathlib import Path
work, rank = Path(os.environ["WORK"]), os.environ["LOCAL_RANK"]
def mark(name, text=str(os.getpid())):
    (work / f".{name}").write_text(text)
    (work / f".{name}").rename(work / name)
"""

# Turns any stop signal into a mark and exit status 3, as train.py turns it into a checkpoint and an exit.
STOPS_ON_SIGNAL = (
    PRELUDE
    + """
def on_signal(signum, frame):
    mark(f"got-{rank}", signal.Signals(signum).name)
    sys.exit(3)
for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(signum, on_signal)
mark(f"ready-{rank}")
while True:
    signal.pause()
"""
)

# Waits forever (for a collective whose peer is gone, say) with the default handling of every signal.
WAITS_FOREVER = PRELUDE + 'mark(f"ready-{rank}")\nwhile True:\n    signal.pause()\n'


def start_driver(work: Path, children: list[str], stop_timeout_s: float = 90.0, stop_before_start: bool = False):
    spec = {"work": str(work), "children": children, "stop_timeout_s": stop_timeout_s}
    spec["stop_before_start"] = stop_before_start
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(spec)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def outcome_of(driver: subprocess.Popen) -> tuple[dict, str]:
    """Wait for the driver (bounded, so that a supervisor that never returns fails the test) and read its outcome."""
    try:
        output, _ = driver.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        # The supervisor did not return: leave no process of this test behind.
        driver.kill()
        work = Path(json.loads(driver.args[-1])["work"])
        for ready in work.glob("ready-*"):
            try:
                os.kill(int(ready.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise
    assert driver.returncode == 0, output[-3000:]
    line = next(line for line in output.splitlines() if line.startswith("OUTCOME "))
    return json.loads(line.removeprefix("OUTCOME ")), output


def wait_for(paths: list[Path], driver: subprocess.Popen) -> None:
    """Return once every path exists; fail if the driver ends first or nothing appears for a minute."""
    deadline = time.monotonic() + 60
    while not all(path.exists() for path in paths):
        assert driver.poll() is None, driver.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"never appeared: {[p for p in paths if not p.exists()]}"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2])
def test_a_stop_signal_reaches_every_training_process(tmp_path, signum):
    driver = start_driver(tmp_path, [STOPS_ON_SIGNAL] * 3)
    wait_for([tmp_path / f"ready-{rank}" for rank in range(3)], driver)
    os.kill(driver.pid, signum)
    outcome, output = outcome_of(driver)
    name = signal.Signals(signum).name
    assert [(tmp_path / f"got-{rank}").read_text() for rank in range(3)] == [name] * 3
    assert outcome["statuses"] == [3, 3, 3], output[-3000:]
    assert outcome["stop_signal"] == signum
    assert outcome["first_failure"] is None and not outcome["killed_after_stop"]


def test_a_failing_process_gets_the_others_killed(tmp_path):
    fails = PRELUDE + (
        "while not all((work / f'ready-{r}').exists() for r in (0, 2)):\n"
        "    time.sleep(0.01)\n"
        "print('process 1 broke', flush=True)\n"
        "sys.exit(7)\n"
    )
    driver = start_driver(tmp_path, [WAITS_FOREVER, fails, WAITS_FOREVER])
    outcome, output = outcome_of(driver)
    assert outcome["first_failure"] == 1
    assert outcome["statuses"] == [-signal.SIGKILL, 7, -signal.SIGKILL], output[-3000:]
    assert outcome["stop_signal"] is None
    assert outcome["tails"][1] == ["process 1 broke"]
    assert "[1] process 1 broke" in output

    status, reason = report(Outcome(**outcome), tmp_path / "no-run", [])
    assert status == 7
    assert reason.startswith("train.py (process 1 of this instance) exited with status 7; last output:")
    assert reason.endswith("process 1 broke")


def test_processes_that_ignore_the_stop_are_killed_after_the_stop_timeout(tmp_path):
    ignores = PRELUDE + 'signal.signal(signal.SIGTERM, signal.SIG_IGN)\nmark(f"ready-{rank}")\nwhile True:\n'
    ignores += "    signal.pause()\n"
    driver = start_driver(tmp_path, [ignores, STOPS_ON_SIGNAL], stop_timeout_s=1.0)
    wait_for([tmp_path / "ready-0", tmp_path / "ready-1"], driver)
    os.kill(driver.pid, signal.SIGTERM)
    outcome, output = outcome_of(driver)
    assert outcome["statuses"] == [-signal.SIGKILL, 3], output[-3000:]
    assert outcome["killed_after_stop"] and outcome["first_failure"] is None


def test_a_stop_before_the_start_starts_nothing(tmp_path):
    driver = start_driver(tmp_path, [STOPS_ON_SIGNAL], stop_before_start=True)
    outcome, _ = outcome_of(driver)
    assert outcome["statuses"] == [None] and outcome["stop_signal"] == signal.SIGTERM
    assert not (tmp_path / "ready-0").exists()


def test_orphans_of_the_training_processes_are_reaped(tmp_path):
    # Process 0 leaves a child behind that exits when process 0 has exited (its stdin closes). Process 1 exits
    # 0 once that orphan is gone from the process table: reaped, not a zombie; 2 if it stays a zombie.
    leaves_orphan = PRELUDE + (
        "import subprocess\n"
        "orphan = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'], stdin=subprocess.PIPE)\n"
        "mark('orphan', str(orphan.pid))\n"
        "os._exit(0)\n"
    )
    checks_orphan = PRELUDE + (
        "while not (work / 'orphan').exists():\n"
        "    time.sleep(0.01)\n"
        "stat = Path('/proc') / (work / 'orphan').read_text() / 'stat'\n"
        "deadline = time.monotonic() + 60\n"
        "while stat.exists() and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "sys.exit(0 if not stat.exists() else 2)\n"
    )
    outcome, output = outcome_of(start_driver(tmp_path, [leaves_orphan, checks_orphan]))
    assert outcome["statuses"] == [0, 0], output[-3000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_process_variables_are_those_torchrun_sets_for_a_static_world(tmp_path, monkeypatch):
    port = free_port()
    dump = tmp_path / "dump.py"
    dump.write_text(
        "import json, os\n"
        "open(os.path.join(os.path.dirname(__file__), f\"env-{os.environ['LOCAL_RANK']}.json\"), 'w')"
        ".write(json.dumps(dict(os.environ)))\n"
    )
    torchrun = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=1",
            "--nproc_per_node=2",
            "--node_rank=0",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            str(dump),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"},
    )
    assert torchrun.returncode == 0, torchrun.stderr[-3000:]
    layout = distributed_layout({"SM_MASTER_PORT": str(port)}, 2)
    ours = process_environments(layout, {})
    for local_rank, variables in enumerate(ours):
        theirs = json.loads((tmp_path / f"env-{local_rank}.json").read_text())
        assert {key: theirs.get(key) for key in variables} == variables

    # Two instances of two processes: the second instance holds global ranks 2 and 3.
    environ = {"SM_HOST_COUNT": "2", "SM_CURRENT_HOST_RANK": "1", "SM_MASTER_ADDR": "algo-1", "SM_NUM_GPUS": "2"}
    second = process_environments(distributed_layout(environ, None), environ)
    assert [(v["RANK"], v["LOCAL_RANK"], v["GROUP_RANK"]) for v in second] == [("2", "0", "1"), ("3", "1", "1")]
    assert {v["MASTER_ADDR"] for v in second} == {"algo-1"} and {v["WORLD_SIZE"] for v in second} == {"4"}
    from core.distributed import dist_info

    for name, value in second[1].items():
        monkeypatch.setenv(name, value)
    info = dist_info()
    assert (info.rank, info.world_size, info.local_rank) == (3, 4, 1)


def test_the_kernel_cache_stays_out_of_the_synced_checkpoint_folder(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    layout = distributed_layout({}, None)
    command, environments = training_command(["task=toy"], checkpoints, layout, "python3", {"HOME": "/root"})
    assert command[1] == str(ROOT / "train.py") and len(environments) == 1
    assert command[2:] == ["task=toy", f"hydra.run.dir={checkpoints / 'run'}", "warp_cache_dir=/root/.cache/warp"]
    warm = {"HOME": "/root", "SAGEMAKER_MANAGED_WARMPOOL_CACHE_DIRECTORY": "/opt/ml/sagemaker/warmpoolcache"}
    assert warp_cache_dir(warm) == Path("/opt/ml/sagemaker/warmpoolcache/warp")
    command, environments = training_command(
        ["task=toy", "warp_cache_dir=/fsx/warp"], checkpoints, layout, "python3", warm
    )
    assert [arg for arg in command if arg.startswith("warp_cache_dir=")] == ["warp_cache_dir=/fsx/warp"]
    # Converted robots and generated terrains stay in the pool too; outside a pool the home's cache is used.
    assert environments[0]["RLFORGE_CACHE"] == "/opt/ml/sagemaker/warmpoolcache/rlforge"
    assert "RLFORGE_CACHE" not in training_command(["task=toy"], checkpoints, layout, "python3", {"HOME": "/r"})[1][0]


def test_the_shared_kernels_go_where_the_training_processes_look(tmp_path):
    """The folder the entry fills from the shared kernel cache is the one train.py is told to use."""
    home = {"HOME": "/root"}
    warm = {**home, "SAGEMAKER_MANAGED_WARMPOOL_CACHE_DIRECTORY": "/opt/ml/sagemaker/warmpoolcache"}
    for overrides, environ in ((["task=toy"], home), (["task=toy"], warm), (["warp_cache_dir=/fsx/warp"], warm)):
        command, _ = training_command(overrides, tmp_path, distributed_layout({}, None), "python3", environ)
        told = next(arg for arg in command if arg.startswith("warp_cache_dir=")).removeprefix("warp_cache_dir=")
        assert effective_warp_cache_dir(overrides, environ) == Path(told)
    # A relative folder is relative to the source, where train.py runs; null leaves Warp its own default.
    assert effective_warp_cache_dir(["warp_cache_dir=cache/warp"], home) == ROOT / "cache/warp"
    assert effective_warp_cache_dir(["warp_cache_dir=null"], home) == Path("/root/.cache/warp")


def test_an_interrupted_run_reports_where_it_resumes(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    for iteration in (3, 12):
        (run_dir / "checkpoints" / f"model_{iteration}.pt").write_bytes(b"")
    stopped = Outcome(statuses=[1, 1], tails=[[], []], stop_signal=signal.SIGTERM)
    end = {"event": "end", "how": "interrupted", "reason": "SIGTERM", "iteration": 12}
    status, reason = report(stopped, run_dir, [{"event": "signal", "reason": "SIGTERM"}, end])
    assert status == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM" in reason and "did not complete" in reason
    assert "stopped at iteration 12" in reason and "resume from iteration 12" in reason
    assert len(reason) <= 1024

    # Stopped during start-up: no end of its own; it resumes from the newest checkpoint there is.
    status, reason = report(stopped, run_dir, [])
    assert "before its training loop began" in reason and "resume from iteration 12" in reason
    killed = Outcome(statuses=[-9], tails=[[]], stop_signal=signal.SIGTERM, killed_after_stop=True)
    status, reason = report(killed, tmp_path / "empty", [])
    assert "were killed" in reason and "from the beginning" in reason


def test_an_error_of_the_entry_itself_leaves_a_failure_reason(tmp_path):
    # sm_train.sh's error trap wrote a reason for any failing command; `exec` skips the trap, so the entry does.
    result = subprocess.run(
        [sys.executable, "-m", "launchers.sagemaker_entry", "--processes-per-instance", "two", "--", "task=toy"],
        cwd=ROOT,
        env={**os.environ, "SM_OUTPUT_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "exited with status 2" in (tmp_path / "failure").read_text()
