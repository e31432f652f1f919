"""Run folders: fresh default folders, the lock against concurrent runs, the config comparison before a resume."""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys

import pytest

from ssl_video.config import load_config, to_yaml
from ssl_video.training import run_dir
from ssl_video.training.errors import RunError


def test_default_folder_is_fresh_per_run_and_fixed_per_slurm_job(monkeypatch):
    cfg = load_config(["method=moco"])
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    when = datetime.datetime(2026, 11, 30, 17, 5, 9)
    assert str(run_dir.default_out_dir(cfg, when)) == "runs/moco/20261130-170509"
    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # every rank and every requeue of the job: one folder
    assert str(run_dir.default_out_dir(cfg, when)) == "runs/moco/slurm-4242"


def test_config_differences_split_structural_changed_and_ignored():
    saved = to_yaml(load_config(["method=walk_superpixel", "train.out_dir=a"]))
    same = load_config(["method=walk_superpixel", "train.out_dir=b", "train.log_every=3", "data.num_workers=7"])
    assert run_dir.config_differences(saved, same) == ([], [])
    lr = load_config(["method=walk_superpixel", "optim.lr=0.1", "train.steps=7"])
    assert run_dir.config_differences(saved, lr) == ([], ["optim.lr", "train.steps"])
    assert run_dir.describe(["optim.lr"], saved, lr) == "optim.lr 0.0001 -> 0.1"
    other = load_config(["method=walk_superpixel", "backbone=resnet18", "data.crop_size=96"])
    structural, _ = run_dir.config_differences(saved, other)
    assert "backbone.name" in structural and "data.crop_size" in structural


def test_a_run_saved_before_a_key_existed_resumes_at_that_keys_default():
    """A checkpoint from before ``backbone.stem`` existed ran with the stock stem: no difference, so it resumes."""
    saved = to_yaml(load_config(["method=moco", "backbone=resnet18"])).replace("  stem: imagenet\n", "")
    assert "stem:" not in saved
    assert run_dir.config_differences(saved, load_config(["method=moco", "backbone=resnet18"])) == ([], [])
    cifar = load_config(["method=moco", "backbone=resnet18", "backbone.stem=cifar"])
    assert run_dir.config_differences(saved, cifar)[0] == ["backbone.stem"]  # not the default: other weights
    assert run_dir.describe(["backbone.stem"], saved, cifar) == "backbone.stem imagenet -> cifar"
    removed = saved.replace("train:\n", "train:\n  retired_key: 3\n")  # a key the schema has since dropped
    assert "train.retired_key" in run_dir.config_differences(removed, cifar)[1]


def test_resume_modes():
    for value, mode in (("true", "auto"), ("auto", "auto"), ("force", "force"), ("false", "never")):
        assert run_dir.resume_mode(load_config([f"train.resume={value}"])) == mode
    with pytest.raises(RunError, match="train.resume='sometimes'"):
        run_dir.resume_mode(load_config(["train.resume=sometimes"]))


def test_lock_stops_a_second_run_and_is_released(tmp_path):
    first = run_dir.RunLock(tmp_path).acquire()
    holder = json.loads((tmp_path / "run.lock").read_text())
    assert holder["host"] == socket.gethostname()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live process on this host holds the folder
        (tmp_path / "run.lock").write_text(json.dumps({**holder, "pid": sleeper.pid}))
        with pytest.raises(RunError, match=rf"in use by pid {sleeper.pid} on {socket.gethostname()}"):
            run_dir.RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the same lock, now stale (its process is gone): taken over
    second = run_dir.RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == holder["pid"]
    first.release()  # not the owner any more on disk: must not remove the other's lock
    assert second.owned and (tmp_path / "run.lock").exists()
    second.release()
    assert not (tmp_path / "run.lock").exists()


def test_lock_of_another_host_is_respected_unless_it_is_this_slurm_job(tmp_path, monkeypatch):
    (tmp_path / "run.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "job": "77"}))
    monkeypatch.setenv("SLURM_JOB_ID", "76")
    with pytest.raises(RunError, match="in use by pid 1 on elsewhere"):
        run_dir.RunLock(tmp_path).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # a requeued job finds its own previous incarnation's lock
    lock = run_dir.RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / "run.lock").read_text())["job"] == "77" and lock.owned
    lock.release()
