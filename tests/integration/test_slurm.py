"""`python launch/submit.py --nodes 2 --method walk_superpixel` on a real two-node SLURM cluster, then a requeue after
SIGUSR2 (submitit's preemption warning) and after SIGTERM to every process of the job's steps (loader workers too).

Waits poll with generous deadlines (a loaded machine is slow, never wrong); the cluster fixture cancels the jobs and
kills what is left of them by pid before it stops the daemons, pass or fail."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_video import checkpoint as ckpt
from tests.integration.slurm_cluster import SlurmCluster, available

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(1800)]  # steps take 30 s on a loaded machine


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = available()
    if reason:
        pytest.skip(f"no SLURM cluster: {reason}")
    c = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(autouse=True)
def _no_job_left(cluster):
    yield
    cluster.cancel_jobs()  # a failed test must not leave its job running into the next one


def _submit(cluster, shards: Path, out: Path, steps: int, ckpt_every: int, workers: int = 0) -> str:
    proc = subprocess.run(
        [
            sys.executable, "launch/submit.py", "--nodes", "2", "--method", "walk_superpixel",
            "--gpus-per-node", "0",  # the test cluster has no GPUs (the default preset asks for 8 per node)
            "--cpus-per-task", "1", "--mem-gb", "1", "--time", "60",  # > 10 min: a signal is a preemption
            f"data.root={shards / 'train'}", "data.crop_size=64", f"data.num_workers={workers}", "data.epoch_length=4",
            "train.batch_size=2", f"train.steps={steps}", f"train.ckpt_every={ckpt_every}", "train.log_every=1",
            f"train.out_dir={out}", f"launch.folder={out / 'jobs'}",
        ],
        cwd=REPO, capture_output=True, text=True, env=cluster.env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return re.search(r"submitted job (\d+)", proc.stdout).group(1)


def _wait(cluster, job_id: str, until, timeout: float = 900) -> None:
    cluster.wait_for(until, timeout, what=f"job {job_id} (state {cluster.job_state(job_id)!r})")


def _wait_while_queued(cluster, out: Path, job_id: str, until, timeout: float = 900) -> None:
    """Like :func:`_wait`, but the job leaving the queue first is a failure at once (with its rank-0 log's end)."""

    def done() -> bool:
        if until():
            return True
        if cluster.job_state(job_id) == "" and not until():
            raise AssertionError(f"job {job_id} ended early:\n{_logs(out, job_id)[0][-3000:]}")
        return False

    _wait(cluster, job_id, done, timeout)


def _log_path(out: Path, job_id: str, task: int) -> Path:
    return out / "jobs" / "walk_superpixel" / job_id / f"{job_id}_{task}_log.out"


def _logs(out: Path, job_id: str) -> dict[int, str]:
    return {task: _log_path(out, job_id, task).read_text() for task in (0, 1)}


def test_two_ranks_on_two_nodes_run_the_same_steps(cluster, kinetics_shards, tmp_path):
    out = tmp_path / "run"
    job = _submit(cluster, kinetics_shards, out, steps=4, ckpt_every=2)
    _wait(cluster, job, lambda: cluster.job_state(job) == "")
    logs = _logs(out, job)
    assert "node=0(2)" in logs[0] and "global_rank=0(2)" in logs[0]
    assert "node=1(2)" in logs[1] and "global_rank=1(2)" in logs[1]
    for task in (0, 1):
        assert f"rank {task} finished at step 4" in logs[task], logs[task][-2000:]
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(out))["world_size"] == 2
    assert list((out / "tb").glob("events.out.tfevents.*"))


def _latest_step(out: Path) -> int:
    path = ckpt.latest_checkpoint(out)
    return -1 if path is None else int(re.search(r"step_(\d+)", path.name).group(1))


def test_usr2_then_term_each_checkpoint_requeue_and_resume(cluster, kinetics_shards, tmp_path):
    """One job, two preemptions. USR2: submitit's preemption warning. TERM: every process of the job's steps
    (trainers and their loader workers) gets SIGTERM, as on preemption; the workers ignore it, the trainer checkpoints
    and requeues. The run is far from its last step, so it is still training whatever the machine's speed.

    Not ``--full``: srun, in the batch script, turns a SIGTERM of its own into SIGKILL of the tasks at once ("srun:
    forcing job termination", whatever the script traps or ignores; checked on this cluster), so no task can
    checkpoint then. That is why submitit asks for USR2 90 s before the time limit (docs/failures.md)."""
    out = tmp_path / "run"
    job = _submit(cluster, kinetics_shards, out, steps=10_000, ckpt_every=2, workers=1)  # a real loader worker
    resumed_at = 0
    for signal in ("USR2", "TERM"):
        _wait_while_queued(cluster, out, job, lambda s=resumed_at: _latest_step(out) > s)  # trained, checkpointed
        assert cluster.run("scancel", f"--signal={signal}", job).returncode == 0
        _wait_while_queued(cluster, out, job, lambda s=resumed_at: _resumes(out, job)[-1:] > [s])
        resumed_at = _resumes(out, job)[-1]
    _wait_while_queued(cluster, out, job, lambda: _latest_step(out) > resumed_at)  # the second rerun trains on
    log = _logs(out, job)[0]
    assert log.count("signal received: checkpoint written at step") == 2, log[-3000:]
    first, second = _resumes(out, job)
    assert 0 < first < second


def _resumes(out: Path, job_id: str) -> list[int]:
    """The steps rank 0 resumed at, in order."""
    path = _log_path(out, job_id, 0)
    log = path.read_text() if path.exists() else ""
    return [int(step) for step in re.findall(r"resumed from .*step_\d+\.pt at step (\d+)", log)]
