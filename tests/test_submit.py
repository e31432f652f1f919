"""launch/submit.py: the sbatch script it would submit, config errors, and a --local run through submitit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_video import checkpoint as ckpt

REPO = Path(__file__).resolve().parent.parent


def _submit(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "launch/submit.py", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


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


def test_bad_override_is_one_line():
    proc = _submit("--method", "walk_superpixel", "--dry-run", "train.stepz=3")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown config key 'train.stepz'")


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
    assert (tmp_path / "jobs" / "walk_superpixel" / "config.yaml").is_file()
