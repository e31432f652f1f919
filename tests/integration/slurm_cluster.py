"""A real two-node SLURM cluster on this machine: munged, slurmctld and two ``slurmd -N n1`` / ``-N n2`` daemons.

Both node names resolve to 127.0.0.1 (added to /etc/hosts) and the daemons listen on different ports, so a
``--nodes 2`` job really runs two tasks on two SLURM nodes. Needs root and Debian's slurm-wlm + munge.
:meth:`SlurmCluster.stop` leaves nothing running, pass or fail: it cancels the cluster's jobs, kills what is left of
them (each ``slurmstepd`` and its children, by pid), then stops the daemons by the process ids in their pid files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NODES = ("n1", "n2")
# squeue reasons of a pending job that waiting cannot cure (e.g. 8 tasks per node asked of 1-CPU nodes)
UNSCHEDULABLE = {"PartitionConfig", "BadConstraints", "PartitionNodeLimit", "PartitionTimeLimit", "InvalidQOS"}


def available() -> str | None:
    """None when a cluster can be started here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd needs root"
    for tool in ("slurmctld", "slurmd", "munged", "munge", "sbatch"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install slurm-wlm munge)"
    return None


class SlurmCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.pid_files: list[Path] = []

    def _write_conf(self) -> None:
        # KillWait: after SIGTERM a job step may run this long before SIGKILL (SLURM's default 30 s); long enough for
        # one training step plus a checkpoint on a loaded test machine
        host = socket.gethostname()
        for sub in ("state", *(f"spool/{n}" for n in NODES)):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        nodes = "\n".join(
            f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={17001 + i} CPUs=1 RealMemory=4000"
            for i, n in enumerate(NODES)
        )
        self.conf.write_text(
            f"""ClusterName=sslvideo
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool/%n
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.%n.pid
SlurmctldLogFile={self.root}/slurmctld.log
SlurmdLogFile={self.root}/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AuthType=auth/munge
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=600
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
{nodes}
PartitionName=debug Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
"""
        )

    def start(self, timeout: float = 60) -> SlurmCluster:
        try:
            return self._start(timeout)
        except Exception:
            self.stop()  # never leave half a cluster running
            raise

    def _start(self, timeout: float) -> SlurmCluster:
        self._write_conf()
        hosts = Path("/etc/hosts").read_text()
        if not all(f" {n}" in hosts for n in NODES):  # node names must resolve: MASTER_ADDR is the first node
            with open("/etc/hosts", "a") as f:
                f.write(f"127.0.0.1 {' '.join(NODES)}\n")
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        # ask munged itself, not pgrep: a munged stopped a moment ago can linger as a zombie (no init reaps it here)
        if not _munge_serves():
            if not Path("/etc/munge/munge.key").exists():
                subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
            munged_pid = self.root / "munged.pid"  # ours: stopped with the cluster (one already running is left)
            subprocess.run(["munged", "--force", f"--pid-file={munged_pid}"], check=True, capture_output=True)
            self.pid_files.append(munged_pid)
        self.pid_files.append(self.root / "slurmctld.pid")
        subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, env=self.env)
        for node in NODES:
            self.pid_files.append(self.root / f"slurmd.{node}.pid")
            subprocess.run(["slurmd", "-f", str(self.conf), "-N", node], check=True, env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = self.run("sinfo", "-h", "-o", "%T %D").stdout.split()
            if out[:2] == ["idle", str(len(NODES))]:
                return self
            time.sleep(1)
        raise RuntimeError(f"SLURM nodes did not become idle: {out}; see {self.root}/slurmctld.log")

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env)

    def job_state(self, job_id: str) -> str:
        """The job's state, or "" once it has left the queue (accounting is off, so sacct cannot tell)."""
        return self.run("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip()

    def wait_for(self, until, timeout: float = 900, what: str = "condition", poll: float = 2) -> None:
        """Poll ``until()`` every ``poll`` s; AssertionError naming ``what`` (and the queue) after ``timeout`` s, or
        at once when a job pends for a reason that waiting cannot cure (it asks for more than the cluster has)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if until():
                return
            queue = [line.split() for line in self._queue().splitlines()]
            stuck = [job for job in queue if job[-1] in UNSCHEDULABLE]
            if stuck:
                raise AssertionError(f"{what}: the job can never start here: {stuck}")
            for job_id, _, reason in queue:  # SLURM holds a requeued job ~2 min; what we test is the requeue, not that
                if reason == "BeginTime":
                    self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
            time.sleep(poll)
        queue = self._queue()
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; queue: {queue or 'empty'}")

    def _queue(self) -> str:
        return self.run("squeue", "-h", "-o", "%i %T %r").stdout.strip()

    def cancel_jobs(self, timeout: float = 60) -> None:
        """Cancel every job of this cluster and wait (bounded) until the queue is empty. SIGKILL first, to the batch
        script too: a plain scancel sends SIGTERM, which submitit takes for a preemption and requeues the job."""
        if not self.pid_files:
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            jobs = self.run("squeue", "-h", "-o", "%i").stdout.split()
            if not jobs:
                return
            self.run("scancel", "--full", "--signal=KILL", *jobs)
            self.run("scancel", *jobs)
            time.sleep(1)

    def kill_job_processes(self) -> list[int]:
        """SIGKILL every ``slurmstepd`` and its descendants (only one test cluster runs at a time, so they are
        this cluster's); returns the pids killed."""
        children: dict[int, list[int]] = {}
        steps = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
                children.setdefault(int(rest[1]), []).append(int(entry.name))
                if name.startswith("slurmstepd"):
                    steps.append(int(entry.name))
        doomed, todo = [], list(steps)
        while todo:
            pid = todo.pop()
            doomed.append(pid)
            todo += children.get(pid, [])
        for pid in reversed(doomed):  # children first, so no slurmstepd sees a task die and restarts anything
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return doomed

    def stop(self) -> None:
        self.cancel_jobs()
        self.kill_job_processes()
        pids = []
        for pid_file in reversed(self.pid_files):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
        deadline = time.time() + 30
        while pids and time.time() < deadline:
            pids = [pid for pid in pids if _alive(pid)]
            time.sleep(0.5)
        for pid in pids:  # a daemon that ignored SIGTERM for 30 s
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pid_files = []


def _munge_serves() -> bool:
    """True when a munged answers on its socket (``munge -n`` encodes a credential through it)."""
    try:
        return subprocess.run(["munge", "-n"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie of ours counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
