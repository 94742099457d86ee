"""A real two-node Slurm cluster (munge, slurmctld, two slurmd, slurmdbd + MariaDB) on this machine."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Debian 12 names; `slurm-client` brings sbatch, srun, sacct, scontrol and scancel.
APT_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
REQUIRED_PROGRAMS = ("munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd", "mariadb-install-db", "sbatch", "sacct")
CLUSTER_NAME = "testcluster"
PARTITION = "debug"
# Higher priority tier: its jobs preempt (requeue) the jobs of PARTITION.
URGENT_PARTITION = "urgent"
# Seconds a preempted job has between Slurm's SIGTERM and its kill.
GRACE_TIME_S = 30
NODE_CPUS = 2
# Each simulated node has the machine's memory (more than that and slurmd reports the node invalid).
NODE_MEMORY_MB = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20 - 256
NODE_NAMES = ("127.0.0.1", "127.0.0.2")
MUNGE_KEY = Path("/etc/munge/munge.key")
DISTRIBUTED_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _free_port_pair() -> int:
    """Return a port P such that P and P + 1 are both free (for the two slurmd)."""
    for _ in range(50):
        port = _free_port()
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free TCP ports on 127.0.0.1")


def missing_programs() -> list[str]:
    return [name for name in REQUIRED_PROGRAMS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]


def install_packages() -> str | None:
    """Install the Slurm and MariaDB packages with apt; return why not, or None on success."""
    if not missing_programs() and MUNGE_KEY.exists():
        return None
    if os.geteuid() != 0:
        return f"Slurm packages missing ({', '.join(missing_programs())}) and not root to install them"
    if shutil.which("apt-get") is None:
        return "Slurm packages missing and apt-get is not available to install them"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *APT_PACKAGES]):
        completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if completed.returncode != 0:
            return f"`{' '.join(command)}` failed: {completed.stderr.strip()[-500:]}"
    if missing_programs():
        return f"after apt-get install, still missing: {', '.join(missing_programs())}"
    if not MUNGE_KEY.exists():
        subprocess.run(["mungekey", "--create", "--keyfile", str(MUNGE_KEY)], check=True)
        shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_KEY.chmod(0o400)
    return None


@dataclass
class SlurmCluster:
    """Files, ports and processes of one throwaway cluster rooted at `root`."""

    root: Path
    hostname: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    controller_port: int = field(default_factory=_free_port)
    first_slurmd_port: int = field(default_factory=_free_port_pair)
    dbd_port: int = field(default_factory=_free_port)
    mysql_port: int = field(default_factory=_free_port)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm client commands (and, through sbatch, for the jobs).

        torch.distributed variables left by other tests are dropped: sbatch would pass them into the jobs.
        """
        inherited = {key: value for key, value in os.environ.items() if key not in DISTRIBUTED_VARIABLES}
        return dict(inherited, SLURM_CONF=str(self.conf))

    def run(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    # -- configuration ---------------------------------------------------------------------------

    def write_configs(self) -> None:
        for name in ("etc", "munge", "log", "state", "spool", "mysql-data", "run"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        for node in NODE_NAMES:
            (self.root / "spool" / node).mkdir(exist_ok=True)
        shutil.chown(self.root / "munge", "munge", "munge")
        shutil.chown(self.root / "mysql-data", "mysql", "mysql")
        shutil.chown(self.root / "run", "mysql", "mysql")
        # munged and mariadbd run as their own users and must reach their files.
        self.root.chmod(0o755)

        last_slurmd_port = self.first_slurmd_port + len(NODE_NAMES) - 1
        self.conf.write_text(
            textwrap.dedent(
                f"""\
                ClusterName={CLUSTER_NAME}
                SlurmctldHost={self.hostname}(127.0.0.1)
                SlurmUser=root
                SlurmdUser=root
                SlurmctldPort={self.controller_port}
                AuthType=auth/munge
                CredType=cred/munge
                # A short credential lifetime lets a requeued job start again after ~10 s, not 120 s.
                AuthInfo=socket={self.munge_socket},cred_expire=10
                StateSaveLocation={self.root / "state"}
                SlurmdSpoolDir={self.root / "spool"}/%n
                SlurmctldPidFile={self.root / "slurmctld.pid"}
                SlurmdPidFile={self.root}/slurmd-%n.pid
                SlurmctldLogFile={self.log_dir / "slurmctld.log"}
                SlurmdLogFile={self.log_dir}/slurmd-%n.log
                SlurmctldDebug=info
                SlurmdDebug=info
                ProctrackType=proctrack/linuxproc
                TaskPlugin=task/none
                # Memory use of every step is sampled each second, and a step that exceeds its job's --mem is
                # killed by Slurm itself (no cgroups on this machine): the out-of-memory kill of a real cluster.
                JobAcctGatherType=jobacct_gather/linux
                JobAcctGatherFrequency=task=1
                JobAcctGatherParams=OverMemoryKill
                MpiDefault=none
                MailProg=/bin/true
                SchedulerType=sched/backfill
                # Frequent scheduling passes start a requeued job as soon as its credential delay is over.
                SchedulerParameters=sched_interval=2,bf_interval=2
                SelectType=select/cons_tres
                # Memory is a consumable resource, so that a job's --mem is the limit its steps are held to; a job that
                # asks for none gets its CPUs' share of the node (two one-CPU jobs per node, as with cores alone).
                SelectTypeParameters=CR_Core_Memory
                DefMemPerCPU={NODE_MEMORY_MB // NODE_CPUS}
                JobRequeue=1
                ReturnToService=2
                SlurmdTimeout=10
                KillWait=5
                MinJobAge=3600
                AccountingStorageType=accounting_storage/slurmdbd
                AccountingStorageHost=127.0.0.1
                AccountingStoragePort={self.dbd_port}
                AccountingStoragePass={self.munge_socket}
                NodeName={NODE_NAMES[0].rsplit(".", 1)[0]}.[1-{len(NODE_NAMES)}] NodeHostname={self.hostname} \
                Port=[{self.first_slurmd_port}-{last_slurmd_port}] CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} State=UNKNOWN
                # A job of the higher-priority partition preempts one of the default partition as Slurm does on
                # shared clusters: SIGTERM at once, then after GraceTime the job is killed and requeued.
                PreemptType=preempt/partition_prio
                PreemptMode=REQUEUE
                PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 \
                GraceTime={GRACE_TIME_S}
                PartitionName={URGENT_PARTITION} Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
                """
            )
        )
        dbd_conf = self.root / "etc" / "slurmdbd.conf"
        dbd_conf.write_text(
            textwrap.dedent(
                f"""\
                AuthType=auth/munge
                AuthInfo=socket={self.munge_socket}
                DbdHost=localhost
                DbdAddr=127.0.0.1
                DbdPort={self.dbd_port}
                SlurmUser=root
                PidFile={self.root / "slurmdbd.pid"}
                LogFile={self.log_dir / "slurmdbd.log"}
                StorageType=accounting_storage/mysql
                StorageHost=127.0.0.1
                StoragePort={self.mysql_port}
                StorageUser=slurm
                StoragePass=slurm
                StorageLoc=slurm_acct_db
                """
            )
        )
        dbd_conf.chmod(0o600)

    # -- processes -------------------------------------------------------------------------------

    def _spawn(self, name: str, command: list[str], user: str | None = None) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.out", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, user=user, start_new_session=True
        )
        process.name = name  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def _wait_for(self, what: str, check, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            for process in self.processes:
                if process.poll() is not None and process.returncode != 0:
                    raise RuntimeError(
                        f"{process.name} exited ({process.returncode}) while waiting for {what}; see {self.log_dir}"
                    )
            time.sleep(0.3)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}; see {self.log_dir}")

    def _start_munge(self) -> None:
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                f"--socket={self.munge_socket}",
                f"--key-file={MUNGE_KEY}",
                f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                f"--log-file={self.root / 'munge' / 'munged.log'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            ],
            user="munge",
        )
        self._wait_for("munged", self.munge_socket.exists, timeout=20)

    def _start_mariadb(self) -> None:
        data = self.root / "mysql-data"
        subprocess.run(
            [
                "mariadb-install-db",
                "--user=mysql",
                f"--datadir={data}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        sock = self.root / "run" / "mysqld.sock"
        self._spawn(
            "mariadbd",
            [
                "mariadbd",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={data}",
                f"--socket={sock}",
                "--bind-address=127.0.0.1",
                f"--port={self.mysql_port}",
                f"--pid-file={self.root / 'run' / 'mysqld.pid'}",
                "--innodb-buffer-pool-size=64M",
                "--skip-name-resolve",
            ],
        )
        self._wait_for("mariadbd", sock.exists, timeout=60)
        sql = (
            "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
        )
        self._wait_for(
            "mariadb accepting SQL",
            lambda: (
                subprocess.run(["mariadb", f"--socket={sock}", "-uroot", "-e", sql], capture_output=True).returncode
                == 0
            ),
            timeout=30,
        )

    def _start_slurm(self) -> None:
        # slurmdbd reads slurmdbd.conf from the directory of SLURM_CONF.
        self._spawn("slurmdbd", ["slurmdbd", "-D"])
        self._wait_for("slurmdbd", lambda: _port_open(self.dbd_port), timeout=60)
        # Registering the cluster before slurmctld starts avoids its first-contact retry delay.
        self.run("sacctmgr", "-i", "add", "cluster", CLUSTER_NAME, check=False)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait_for("slurmctld", lambda: self.run("scontrol", "ping", check=False).returncode == 0, timeout=60)
        for node in NODE_NAMES:
            self.start_slurmd(node)
        self._wait_for("both nodes idle", self._nodes_idle, timeout=60)

    def start_slurmd(self, node: str) -> subprocess.Popen:
        return self._spawn(f"slurmd-{node}", ["slurmd", "-D", "-N", node, "-f", str(self.conf)])

    def slurmd_process(self, node: str) -> subprocess.Popen:
        return next(p for p in reversed(self.processes) if p.name == f"slurmd-{node}")  # type: ignore[attr-defined]

    def preempt_node(self, node: str) -> str:
        """Submit a short job of the higher-priority partition that needs all of `node`; return its job id.

        It preempts the jobs running there as Slurm does: SIGTERM now, the kill after GraceTime."""
        submitted = self.run(
            "sbatch",
            "--parsable",
            f"--partition={URGENT_PARTITION}",
            f"--nodelist={node}",
            "--exclusive",
            "--output=/dev/null",
            "--wrap=sleep 1",
        )
        return submitted.stdout.strip()

    def lose_node(self, node: str, job_id: str) -> None:
        """Make `node` vanish as a crashed machine would: its slurmd and the job's processes there die at once."""
        slurmd = self.slurmd_process(node)
        slurmd.kill()
        slurmd.wait(timeout=10)
        self.processes.remove(slurmd)
        table = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
        children: dict[int, list[int]] = {}
        stepds = []
        for line in table.splitlines():
            pid, ppid, args = line.split(None, 2) if len(line.split(None, 2)) == 3 else (*line.split(), "")
            children.setdefault(int(ppid), []).append(int(pid))
            if args.startswith(f"slurmstepd: [{job_id}."):
                stepds.append(int(pid))
        doomed, pending = [], list(stepds)
        while pending:
            pid = pending.pop()
            doomed.append(pid)
            pending.extend(children.get(pid, []))
        # A crashed machine takes every process at once. Killed one by one, a batch script whose srun saw its task
        # die first could still run its teardown and end the job before the node is noticed lost: every process is
        # stopped first, parents before children, so none of them sees another die.
        for pid in doomed:
            _signal_quietly(pid, signal.SIGSTOP)
        for pid in reversed(doomed):
            _signal_quietly(pid, signal.SIGKILL)

    def restore_node(self, node: str) -> None:
        """Start the node's slurmd again and wait until the controller has it back in service."""
        self.start_slurmd(node)
        self._wait_for(f"node {node} back in service", self._nodes_idle, timeout=90)

    def _nodes_idle(self) -> bool:
        result = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False)
        states = dict(line.split() for line in result.stdout.splitlines() if line.strip())
        return all(states.get(node, "").startswith("idle") for node in NODE_NAMES)

    def start(self) -> None:
        self.write_configs()
        try:
            self._start_munge()
            self._start_mariadb()
            self._start_slurm()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        # Jobs first, so no slurmstepd outlives the cluster; then daemons in reverse order.
        if any(p.name == "slurmctld" and p.poll() is None for p in self.processes):  # type: ignore[attr-defined]
            self.run("scancel", "--full", "-u", "root", check=False)
            time.sleep(1)
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        self.processes.clear()
        # slurmstepd processes are not children of this process; end the ones of this cluster.
        for line in subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout.splitlines():
            pid, _, args = line.strip().partition(" ")
            if "slurmstepd" in args and str(self.root) in _environ_of(int(pid)):
                _signal_quietly(int(pid), signal.SIGKILL)

    # -- helpers for tests -----------------------------------------------------------------------

    def job_states(self, job_id: str) -> dict[str, str]:
        """Map each job (array element) id to its state, from accounting (sacct)."""
        result = self.run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State", check=False)
        states = {}
        for line in result.stdout.splitlines():
            if "|" in line:
                jid, state = line.split("|", 1)
                states[jid] = state.split()[0]
        return states

    def job_history(self, job_id: str) -> list[str]:
        """States of every start of a job, oldest first (a requeued job shows REQUEUED, then its later state)."""
        result = self.run("sacct", "-n", "-X", "-D", "-P", "-j", job_id, "-o", "State", check=False)
        return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]

    def all_job_ids(self) -> set[str]:
        """Every job the controller holds, ended ones included (MinJobAge keeps them an hour), for checking that
        nothing was queued. The accounting database would do as well but hears of jobs late: a job of an earlier test
        could arrive there during the check."""
        result = self.run("scontrol", "-o", "show", "job")
        return {word.split("=", 1)[1] for word in result.stdout.split() if word.startswith("JobId=")}

    def wait_until_done(self, job_id: str, timeout: float = 240) -> dict[str, str]:
        """Block until every element of `job_id` has left the queue; return its final sacct states."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queued = self.run("squeue", "-h", "-j", job_id, "-o", "%i %T", check=False)
            if queued.returncode == 0 and not queued.stdout.strip():
                time.sleep(1)  # Let the controller flush the final state to slurmdbd.
                return self.job_states(job_id)
            time.sleep(1)
        raise TimeoutError(f"job {job_id} still queued after {timeout:.0f} s: {self.job_states(job_id)}")


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _environ_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Start the cluster once per session, export SLURM_CONF for the tests, stop it after."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm tests start munged, slurmctld and slurmd, which needs root")
    reason = install_packages()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="slurm-test-")))
    cluster.start()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        if not os.environ.get("KEEP_SLURM_LOGS"):
            shutil.rmtree(cluster.root, ignore_errors=True)


# What the controller says about nodes and jobs: the lines that explain an unexpected job state.
_CONTROLLER_EVENTS = ("error", "not responding", "DOWN", "NODE_FAIL", "Requeu", "drain", "Kill task", "_job_complete")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """A failed Slurm test's report carries the controller's account of nodes and jobs (its log is deleted with the
    cluster unless KEEP_SLURM_LOGS is set): a node marked down, a requeue, a step that would not die."""
    report = yield
    cluster = item.funcargs.get("slurm_cluster") if hasattr(item, "funcargs") else None
    if report.failed and call.when == "call" and isinstance(cluster, SlurmCluster):
        log = cluster.log_dir / "slurmctld.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        events = [line for line in lines if any(word in line for word in _CONTROLLER_EVENTS)]
        report.sections.append(("slurmctld (last events)", "\n".join(events[-60:]) or f"nothing in {log}"))
    return report


def _stop_on_signal(signum: int, _frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    # Manual use: `python tests/slurm/conftest.py` starts a cluster, prints its SLURM_CONF and keeps it until
    # Ctrl-C or SIGTERM; `python tests/slurm/conftest.py install` only installs the packages.
    if sys.argv[1:] == ["install"]:
        sys.exit(install_packages() or 0)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    manual = SlurmCluster(Path(tempfile.mkdtemp(prefix="slurm-test-")))
    manual.start()
    print(f"export SLURM_CONF={manual.conf}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        manual.stop()
