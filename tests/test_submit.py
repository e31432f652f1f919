"""launch/submit.py (ssl_video.launch): the sbatch script it would submit, the SLURM preset, flags and overrides,
job names, job folders, config errors, and a --local run through submitit."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ssl_video import checkpoint as ckpt

REPO = Path(__file__).resolve().parent.parent


def _submit(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "launch/submit.py", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def _submit_here(*args) -> SimpleNamespace:
    """``ssl_video.launch.main`` in this process (what launch/submit.py runs; its own test starts the script): the
    dry runs and the config errors, without a Python start-up each."""
    from ssl_video import launch

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = launch.main(list(args))
        except SystemExit as exc:
            code = exc.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_dry_run_prints_the_sbatch_script():
    proc = _submit("--nodes", "2", "--method", "walk_superpixel", "--gpus-per-node", "4", "--partition", "gpu",
                   "--time", "120", "--dry-run")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --time=120", "#SBATCH --signal=USR2@90",
                 "#SBATCH --job-name=walk_superpixel"):  # fmt: skip
        assert line in out, line
    assert "srun" in out and "submitit.core._submit" in out


def _sbatch_lines(*args) -> list[str]:
    proc = _submit_here(*args, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_without_local_the_slurm_preset_asks_for_gpus():
    lines = _sbatch_lines("--nodes", "2", "--method", "walk_superpixel")
    assert lines[0] == "#!/bin/bash"
    assert lines[1].startswith("# ssl-video launch preset: slurm (") and "launch/slurm.yaml" in lines[1]
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=8",
                 "#SBATCH --cpus-per-task=10", "#SBATCH --mem-per-gpu=64G", "#SBATCH --time=1440",
                 "#SBATCH --signal=USR2@90"):  # fmt: skip
        assert line in lines, line
    assert not [line for line in lines if line.startswith(("#SBATCH --mem=", "#SBATCH --partition"))]


def test_flags_and_launch_keys_override_the_preset():
    lines = _sbatch_lines("--method", "moco", "--gpus-per-node", "4", "--cpus-per-task", "6", "--mem-per-gpu", "32",
                          "--time", "90", "launch.partition=a100", "launch.nodes=3")  # fmt: skip
    for line in ("#SBATCH --nodes=3", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --cpus-per-task=6", "#SBATCH --mem-per-gpu=32G", "#SBATCH --time=90",
                 "#SBATCH --partition=a100"):  # fmt: skip
        assert line in lines, line
    per_node = _sbatch_lines("--method", "moco", "--mem-gb", "200")  # per node instead of per GPU: never both
    assert "#SBATCH --mem=200GB" in per_node and not [x for x in per_node if x.startswith("#SBATCH --mem-per-gpu")]
    no_gpus = _sbatch_lines("--method", "moco", "--gpus-per-node", "0")  # a CPU cluster: one task per node
    assert "#SBATCH --ntasks-per-node=1" in no_gpus and not [x for x in no_gpus if x.startswith("#SBATCH --gpus")]
    two = _sbatch_lines("--method", "moco", "--gpus-per-node", "0", "launch.tasks_per_node=2")
    assert "#SBATCH --ntasks-per-node=2" in two
    cpu = _sbatch_lines("--method", "moco", "launch=local")  # another preset by name
    assert "# ssl-video launch preset: local" in cpu[1]
    assert not [x for x in cpu if x.startswith(("#SBATCH --gpus", "#SBATCH --mem-per-gpu"))]


def test_sbatch_paths_are_absolute(tmp_path):
    relative = "jobs_here"
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "submit.py"), "--method", "moco", "--dry-run",
                           f"launch.folder={relative}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.splitlines():
        if line.startswith(("#SBATCH --output", "#SBATCH --error")):
            assert f"={tmp_path / relative / 'moco'}/%j/" in line, line
        if line.startswith("srun"):
            assert f" {tmp_path / relative / 'moco'}/%j" in line and f" {sys.executable} " in line, line


@pytest.mark.parametrize("name", ["a\n#SBATCH --wrap=rm", "x; rm -rf /", "two words", "", "$(id)"])
def test_bad_job_names_are_one_line(name):
    proc = _submit_here("--method", "moco", "--name", name, "--dry-run")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: job name")


def test_bad_override_is_one_line():
    proc = _submit_here("--method", "walk_superpixel", "--dry-run", "train.stepz=3")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: unknown config key 'train.stepz' (did you mean 'train.steps'?)"]


@pytest.mark.slow
def test_local_run_goes_through_submitit_and_checkpoints(kinetics_shards, tmp_path):
    out = tmp_path / "run"
    proc = _submit(
        "--local", "--method", "walk_superpixel", f"data.root={kinetics_shards / 'train'}", "data.crop_size=64",
        "data.num_workers=0", "data.epoch_length=4", "train.batch_size=2", "train.steps=3", "train.ckpt_every=3",
        f"train.out_dir={out}", f"launch.folder={tmp_path / 'jobs'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted job" in proc.stdout and "finished: step 3" in proc.stdout
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(out))
    assert state["step"] == 3 and all(torch.isfinite(v.float()).all() for v in state["model"].values())
    assert list((out / "tb").glob("events.out.tfevents.*"))
    job_id = re.search(r"submitted job (\S+) ", proc.stdout).group(1)
    job_folder = tmp_path / "jobs" / "walk_superpixel" / job_id
    assert f"job folder {job_folder}" in proc.stdout
    assert "steps: 3" in (job_folder / "config.yaml").read_text()  # this job's resolved config, in its own folder
    assert not [p for p in tmp_path.rglob("*") if "%j" in p.name]  # no literal %j folder
