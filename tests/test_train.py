"""Trainer: bit-identical resume, NaN stop keeps the last good checkpoint, atomic checkpoints survive kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from ssl_video import checkpoint as ckpt
from ssl_video.config import load_config
from ssl_video.data.augment import augment_batch_on_device
from ssl_video.data.loader import build_loader
from ssl_video.train import NonFiniteLoss, train


def _cfg(shards, out_dir, steps, *extra):
    return load_config(
        [
            "method=walk_superpixel", f"data.root={shards / 'train'}", "data.crop_size=64", "data.num_workers=0",
            "data.epoch_length=4", "data.shuffle_buffer=4", "train.device=cpu", "train.batch_size=2",
            f"train.steps={steps}", f"train.out_dir={out_dir}", "train.log_every=1", "train.image_every=0",
            "train.ckpt_every=100", "data.max_superpixels=32", *extra,
        ]
    )  # fmt: skip


def _weights(out_dir):
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(out_dir))["model"]


@pytest.mark.slow
def test_interrupted_and_resumed_run_is_bit_identical(kinetics_shards, tmp_path):
    """10 steps == 6 steps + SIGUSR2 (checkpoint, exit) + resume + 4 steps; epochs of 4 batches: resume mid-epoch."""
    threads = torch.get_num_threads()
    try:
        _resume_is_bit_identical(kinetics_shards, tmp_path)
    finally:  # train.deterministic changes process-wide settings: restore them for the other tests
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)


def _resume_is_bit_identical(kinetics_shards, tmp_path):
    # deterministic kernels, one CPU thread; photometric augmentation in the trainer (data.gpu_augment), whose draws
    # must be the same for a step whether or not the run was resumed
    det = ["train.deterministic=true", "data.gpu_augment=true"]
    train(_cfg(kinetics_shards, tmp_path / "full", 10, *det))
    full = _weights(tmp_path / "full")

    def preempted(data_cfg, **kw):
        for i, batch in enumerate(build_loader(data_cfg, **kw)):
            if kw["epoch"] == 1 and i == 2:  # the signal arrives while step 7 is being fetched
                os.kill(os.getpid(), signal.SIGUSR2)
            yield batch

    with pytest.raises(SystemExit):
        train(_cfg(kinetics_shards, tmp_path / "split", 10, *det), loader_fn=preempted)
    assert ckpt.latest_checkpoint(tmp_path / "split").name == "step_00000007.pt"
    result = train(_cfg(kinetics_shards, tmp_path / "split", 10, *det))
    assert result["step"] == 10
    resumed = _weights(tmp_path / "split")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


def test_gpu_augment_runs_the_photometric_part_in_the_trainer(kinetics_shards, tmp_path, monkeypatch):
    import ssl_video.training.loop as trainer

    seen = []

    def spy(clips, cfg, rng):
        out = augment_batch_on_device(clips, cfg, rng)
        seen.append((clips.clone(), out))
        return out

    monkeypatch.setattr(trainer, "augment_batch_on_device", spy)
    train(_cfg(kinetics_shards, tmp_path / "off", 2))
    assert not seen  # off by default: the workers did it
    train(_cfg(kinetics_shards, tmp_path / "on", 3, "data.gpu_augment=true"))
    assert len(seen) == 3  # once per step, on the whole batch
    assert all(not torch.equal(before, after) for before, after in seen)  # the walk preset always jitters


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(kinetics_shards, tmp_path):
    out = tmp_path / "nan"

    def poisoned(data_cfg, **kw):
        for i, batch in enumerate(build_loader(data_cfg, **kw)):
            if kw["epoch"] == 1 and i == 1:  # step 6
                batch["clips"][:] = float("nan")
            yield batch

    with pytest.raises(NonFiniteLoss, match="loss is nan at step 6"):
        train(_cfg(kinetics_shards, out, 8, "train.ckpt_every=4"), loader_fn=poisoned)
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_00000004.pt"]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(out))
    assert state["step"] == 4
    assert all(torch.isfinite(v.float()).all() for v in state["model"].values())


def test_kill_during_checkpoint_write_leaves_previous_loadable(tmp_path):
    """A writer killed with SIGKILL in the middle of torch.save never replaces the previous checkpoint."""
    ckpt.save_checkpoint({"model": {"w": torch.ones(3)}, "step": 1}, tmp_path, 1, keep_last=3)
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from ssl_video import checkpoint as ckpt
        real_save = torch.save
        def save_then_die(obj, f):
            f.write(b"partial bytes of a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = save_then_die
        ckpt.save_checkpoint({{"model": {{"w": torch.zeros(3)}}, "step": 2}}, {str(tmp_path)!r}, 2, keep_last=3)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000001.pt"
    assert torch.equal(ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))["model"]["w"], torch.ones(3))


def test_keep_last_prunes_old_checkpoints(tmp_path):
    for step in range(1, 6):
        ckpt.save_checkpoint({"step": step}, tmp_path, step, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000004.pt", "step_00000005.pt"]


def test_rng_state_round_trips():
    import random

    import numpy as np

    state = ckpt.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


def _scalars(out_dir) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out_dir / "tb"))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_lars_compile_flag_and_cpu_peak_memory(kinetics_shards, tmp_path, monkeypatch):
    """optim.name=lars trains; train.compile=true hands the step's module to torch.compile; Memory/peak_MiB is logged
    on CPU as the process's peak RSS."""
    import resource

    from ssl_video.optim import LARS

    compiled = []

    def fake_compile(module, *args, **kwargs):  # records the call; eager keeps this test fast on CPU
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    seen = {}
    real_step = LARS.step

    def spy_step(self, *args, **kwargs):
        seen["lars"] = True
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(LARS, "step", spy_step)
    out = tmp_path / "lars"
    result = train(_cfg(kinetics_shards, out, 2, "optim.name=lars", "optim.lr=0.3", "train.compile=true"))
    assert result["step"] == 2 and torch.isfinite(torch.tensor(result["loss"]))
    assert len(compiled) == 1 and type(compiled[0]).__name__ != "DistributedDataParallel"  # one process: the method
    assert seen.get("lars")
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(out))  # weights_only: LARS state and schedule load
    assert {g["lars_adapt"] for g in state["optimizer"]["param_groups"]} == {True, False}
    peak = _scalars(out)["Memory/peak_MiB"]
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    assert len(peak) == 2 and 50 < peak[0] <= peak[1] <= rss_mib  # a real process peak, never above ours now


@pytest.mark.slow
def test_torch_compile_really_compiles_a_training_step():
    """Inductor compiles a tiny forward + backward, and a LARS step on its gradients matches eager (CPU, ~25 s CPU)."""
    from torch import nn

    from ssl_video.config import load_config
    from ssl_video.optim import build_optimizer

    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    twin = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    twin.load_state_dict(eager.state_dict())
    compiled = torch.compile(twin)
    optim_cfg = load_config(["optim.name=lars", "optim.lr=0.5"]).optim
    opts = [build_optimizer(m, optim_cfg) for m in (eager, twin)]
    x = torch.randn(5, 8)
    for module, opt in zip((eager, compiled), opts):
        opt.zero_grad()
        module(x).square().mean().backward()
        opt.step()
    assert compiled._orig_mod is twin  # really an OptimizedModule wrapping the model
    for a, b in zip(eager.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
