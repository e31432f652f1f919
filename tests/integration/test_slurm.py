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
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(3000)]  # steps take 30 s on a loaded machine


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


def _wait(cluster, job_id: str, until, timeout: float = 1500) -> None:
    cluster.wait_for(until, timeout, what=f"job {job_id} (state {cluster.job_state(job_id)!r})")


def _logs(out: Path, job_id: str) -> dict[int, str]:
    folder = out / "jobs" / "walk_superpixel" / job_id
    return {task: (folder / f"{job_id}_{task}_log.out").read_text() for task in (0, 1)}


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


@pytest.mark.parametrize("scancel", [["--signal=USR2"], ["--signal=TERM"]], ids=["usr2", "term"])
def test_signalled_job_is_requeued_and_resumes_from_its_checkpoint(cluster, kinetics_shards, tmp_path, scancel):
    """USR2: submitit's preemption warning. TERM: every process of the job's steps (trainers and their loader workers)
    gets SIGTERM, as on preemption; the workers ignore it, the trainer checkpoints and requeues.

    Not ``--full``: srun, in the batch script, turns a SIGTERM of its own into SIGKILL of the tasks at once ("srun:
    forcing job termination", whatever the script traps or ignores; checked on this cluster), so no task can
    checkpoint then. That is why submitit asks for USR2 90 s before the time limit (docs/failures.md)."""
    out = tmp_path / "run"
    job = _submit(cluster, kinetics_shards, out, steps=12, ckpt_every=2, workers=1)  # a real loader worker
    _wait(cluster, job, lambda: ckpt.latest_checkpoint(out) is not None)
    assert cluster.run("scancel", *scancel, job).returncode == 0
    _wait(cluster, job, lambda: cluster.job_state(job) == "")
    logs = _logs(out, job)
    resumed = re.findall(r"resumed from .*step_(\d+)\.pt at step (\d+)", logs[0])
    assert resumed, logs[0][-3000:]
    assert int(resumed[-1][1]) > 0
    assert "signal received: checkpoint written at step" in logs[0]
    for task in (0, 1):
        assert f"rank {task} finished at step 12" in logs[task]
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(out))["step"] == 12
