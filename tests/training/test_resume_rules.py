"""What a rerun in an existing run folder does: resume, refuse (another method, changed settings), force, report a
finished run untouched, fall back from a corrupt checkpoint, stop on a full disk; TensorBoard steps exactly once."""

from __future__ import annotations

import errno
import os
import signal

import pytest
import torch

from ssl_video import checkpoint as ckpt
from ssl_video.config import load_config
from ssl_video.data.loader import build_loader
from ssl_video.train import train
from ssl_video.training.errors import CheckpointError, RunError
from tests.helpers import tiny_train_args


def _cfg(shards, out, steps, *extra):
    return load_config(tiny_train_args(shards, out, steps, *extra))


def _files(folder):
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_with_another_method_is_one_line_naming_the_keys(kinetics_shards, tmp_path):
    train(_cfg(kinetics_shards, tmp_path, 2))
    before = _files(tmp_path)
    with pytest.raises(RunError) as info:
        train(_cfg(kinetics_shards, tmp_path, 2, "method=simclr", "backbone=resnet18"))
    message = str(info.value)
    assert "\n" not in message and "method.name walk_superpixel -> simclr" in message
    assert "backbone.name" in message and "another train.out_dir" in message
    assert _files(tmp_path) == before  # nothing written, lock released


def test_changed_lr_needs_force_which_records_both_configs(kinetics_shards, tmp_path, capsys):
    train(_cfg(kinetics_shards, tmp_path, 2))
    with pytest.raises(RunError, match=r"optim\.lr 0\.0001 -> 0\.5.*train\.resume=force"):
        train(_cfg(kinetics_shards, tmp_path, 2, "optim.lr=0.5"))
    result = train(_cfg(kinetics_shards, tmp_path, 3, "optim.lr=0.5", "train.resume=force"))
    assert result["step"] == 3 and "resumed from" in capsys.readouterr().out
    previous = load_config([f"train.out_dir={tmp_path}"])  # what the first run was trained with
    kept = (tmp_path / "config.before_step_00000002.yaml").read_text()
    assert "lr: 0.0001" in kept and "steps: 2" in kept and previous.optim.lr == 0.0001  # the walk recipe's Adam lr
    now = (tmp_path / "config.yaml").read_text()
    assert "lr: 0.5" in now and "steps: 3" in now


def test_finished_run_says_so_and_touches_nothing(kinetics_shards, tmp_path, capsys):
    train(_cfg(kinetics_shards, tmp_path, 2))
    before = _files(tmp_path)
    capsys.readouterr()
    result = train(_cfg(kinetics_shards, tmp_path, 2, "train.log_every=5"))  # a setting that does not matter
    assert result["step"] == 2 and result.get("finished")
    assert "already finished at step 2" in capsys.readouterr().out
    assert _files(tmp_path) == before


def test_corrupt_latest_checkpoint_resumes_from_the_previous_one(kinetics_shards, tmp_path, capsys):
    train(_cfg(kinetics_shards, tmp_path, 4, "train.ckpt_every=2"))
    latest = ckpt.checkpoint_dir(tmp_path) / "step_00000004.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 3])
    capsys.readouterr()
    result = train(_cfg(kinetics_shards, tmp_path, 4, "train.ckpt_every=2"))
    captured = capsys.readouterr()
    assert result["step"] == 4 and "resumed from" in captured.out and "step_00000002.pt at step 2" in captured.out
    assert captured.err.count("warning: checkpoint") == 1 and str(latest) in captured.err
    assert (latest.parent / "step_00000004.pt.corrupt").exists()
    assert ckpt.load_checkpoint(latest)["step"] == 4  # written again by the resumed run


def test_disk_full_at_a_checkpoint_stops_naming_the_last_good_one(kinetics_shards, tmp_path, monkeypatch):
    real_save = torch.save

    def full_after_first(obj, f):
        if obj.get("step") == 4:
            f.write(b"x" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", full_after_first)
    with pytest.raises(CheckpointError) as info:
        train(_cfg(kinetics_shards, tmp_path, 6, "train.ckpt_every=2"))
    message = str(info.value)
    assert "No space left on device" in message and message.endswith("step_00000002.pt")
    assert [p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir()] == ["step_00000002.pt"]
    assert not (tmp_path / "run.lock").exists()


def _tb_steps(out_dir) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out_dir / "tb"))
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_has_every_step_exactly_once_after_two_resumes(kinetics_shards, tmp_path):
    def preempt_at(step):
        def loader(data_cfg, **kw):
            for i, batch in enumerate(build_loader(data_cfg, **kw)):
                if kw["epoch"] * 4 + i == step - 1:  # the signal arrives while step `step` is being fetched
                    os.kill(os.getpid(), signal.SIGUSR2)
                yield batch

        return loader

    for stop_at in (2, 4):
        with pytest.raises(SystemExit):
            train(_cfg(kinetics_shards, tmp_path, 6), loader_fn=preempt_at(stop_at))
        assert ckpt.latest_checkpoint(tmp_path).name == f"step_{stop_at:08d}.pt"
    assert train(_cfg(kinetics_shards, tmp_path, 6))["step"] == 6
    steps = _tb_steps(tmp_path)
    assert steps["Training/loss"] == [1, 2, 3, 4, 5, 6]
    per_step = {tag: found for tag, found in steps.items() if not tag.startswith("hparams/")}  # hparams: final only
    assert all(found == [1, 2, 3, 4, 5, 6] for found in per_step.values()), steps
