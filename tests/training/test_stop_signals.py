"""``python -m ssl_video.train`` as SLURM and a terminal stop it: SIGTERM / SIGINT to the whole process group, with a
real DataLoader worker in the group (it must ignore them so only the trainer reacts)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from ssl_video import checkpoint as ckpt
from tests.helpers import tiny_train_args

DEADLINE_S = 600  # generous: the machine may be loaded; the test never depends on how fast it is


def _start(args, log_dir):
    out, err = open(log_dir / "stdout", "w"), open(log_dir / "stderr", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ssl_video.train", *args], stdout=out, stderr=err, start_new_session=True,
        preexec_fn=_as_a_terminal_job,
    )  # its own process group, as a SLURM step / a terminal job
    return proc, log_dir


def _as_a_terminal_job() -> None:
    """SIGINT as a shell gives a foreground job: default. An ignored SIGINT is inherited through exec, and Python then
    installs no KeyboardInterrupt handler; a test runner's worker may hold one (once seen under pytest-xdist: the
    run ignored the test's Ctrl-C and finished its 500 steps)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_checkpoint(proc, out_dir):
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline and proc.poll() is None:
        if ckpt.latest_checkpoint(out_dir) is not None:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint appeared (exit {proc.poll()})")


def _worker_pids(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(c) for c in children]


def _finish(proc, log_dir):
    proc.wait(timeout=DEADLINE_S)
    return proc.returncode, (log_dir / "stdout").read_text(), (log_dir / "stderr").read_text()


def test_sigterm_to_the_process_group_checkpoints_and_the_rerun_resumes(kinetics_shards, tmp_path):
    out = tmp_path / "run"
    args = tiny_train_args(kinetics_shards, out, 500, "data.num_workers=1", "train.ckpt_every=1")
    proc, logs = _start(args, tmp_path)
    _wait_for_checkpoint(proc, out)
    assert _worker_pids(proc.pid), "the loader worker should be running"
    os.killpg(proc.pid, signal.SIGTERM)  # what SLURM does on preemption, scancel and the time limit
    code, stdout, stderr = _finish(proc, logs)
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "killed by signal" not in stderr
    step = int(re.search(r"signal received: checkpoint written at step (\d+)", stdout).group(1))
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(out))["step"] == step
    # the rerun (a requeue) resumes there; it trains one more step (a longer schedule must be forced)
    rerun = subprocess.run([sys.executable, "-m", "ssl_video.train", *args, f"train.steps={step + 1}",
                            "train.resume=force"], capture_output=True, text=True, timeout=DEADLINE_S)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"step_{step:08d}.pt at step {step}" in rerun.stdout
    assert f"finished at step {step + 1}" in rerun.stdout


def test_ctrl_c_ends_with_one_line(kinetics_shards, tmp_path):
    out = tmp_path / "run"
    proc, logs = _start(tiny_train_args(kinetics_shards, out, 500, "data.num_workers=1", "train.ckpt_every=1"),
                        tmp_path)  # fmt: skip
    _wait_for_checkpoint(proc, out)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal sends it to the whole foreground group
    code, _, stderr = _finish(proc, logs)
    assert code == 130
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted (Ctrl-C)")
    assert not (out / "run.lock").exists()
