"""Checkpoint failures: a truncated latest checkpoint, a write that fails (disk full), stale temporary files."""

from __future__ import annotations

import errno

import pytest
import torch

from ssl_video import checkpoint as ckpt
from ssl_video.training.errors import CheckpointError


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((4,), float(step))}, "optimizer": {}, "scheduler": {}, "step": step,
            "rng": ckpt.rng_state()}  # fmt: skip


def _save(out, *steps):
    for step in steps:
        ckpt.save_checkpoint(_state(step), out, step, keep_last=5)


def test_truncated_latest_falls_back_to_the_newest_that_loads(tmp_path, capsys):
    _save(tmp_path, 2, 4, 6)
    latest = ckpt.checkpoint_dir(tmp_path) / "step_00000006.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # a node died mid-write on a filesystem without atomic rename
    path, state = ckpt.load_latest_good(tmp_path)
    assert path.name == "step_00000004.pt" and state["step"] == 4
    assert torch.equal(state["model"]["w"], torch.full((4,), 4.0))
    assert not latest.exists() and latest.with_name("step_00000006.pt.corrupt").exists()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning:") and str(latest) in warnings[0]
    # the requeued job does not see it again: no second warning, same choice
    assert ckpt.load_latest_good(tmp_path)[0].name == "step_00000004.pt"
    assert capsys.readouterr().err == ""


def test_checkpoint_missing_resume_keys_counts_as_corrupt(tmp_path):
    _save(tmp_path, 1)
    torch.save({"model": {}}, ckpt.checkpoint_dir(tmp_path) / "step_00000002.pt")
    assert ckpt.load_latest_good(tmp_path)[0].name == "step_00000001.pt"


def test_only_corrupt_checkpoints_is_an_error_not_a_silent_restart(tmp_path):
    _save(tmp_path, 3)
    (ckpt.checkpoint_dir(tmp_path) / "step_00000003.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CheckpointError, match=r"no loadable checkpoint .*step_00000003\.pt\.corrupt"):
        ckpt.load_latest_good(tmp_path)
    with pytest.raises(CheckpointError, match="no loadable checkpoint"):  # still refused on the rerun
        ckpt.load_latest_good(tmp_path)
    assert ckpt.load_latest_good(tmp_path / "fresh") is None  # an empty run folder is not an error


def test_disk_full_while_writing_removes_the_temp_file_and_names_the_last_good(tmp_path, monkeypatch):
    _save(tmp_path, 2)

    def fill_the_disk(obj, f):
        f.write(b"x" * 4096)  # part of the checkpoint got written before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", fill_the_disk)
    with pytest.raises(CheckpointError) as info:
        ckpt.save_checkpoint(_state(4), tmp_path, 4, keep_last=5)
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message
    assert "step_00000004.pt" in message and message.endswith(
        "last good checkpoint: " + str(ckpt.checkpoint_dir(tmp_path) / "step_00000002.pt")
    )
    assert sorted(p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir()) == ["step_00000002.pt"]  # no temp left


def test_torch_save_runtime_error_is_a_checkpoint_error_too(tmp_path, monkeypatch):
    def failing(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(CheckpointError, match="last good checkpoint: none"):
        ckpt.save_checkpoint(_state(1), tmp_path, 1, keep_last=1)
    assert list(ckpt.checkpoint_dir(tmp_path).iterdir()) == []


def test_stale_temp_files_are_swept(tmp_path):
    _save(tmp_path, 1)
    folder = ckpt.checkpoint_dir(tmp_path)
    stale = [folder / ".step_00000002.pt.tmp.12345", tmp_path / "config.yaml.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    assert sorted(ckpt.sweep_temp_files(tmp_path)) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert [p.name for p in folder.iterdir()] == ["step_00000001.pt"]
