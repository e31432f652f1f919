"""What several test modules share (tests never import each other): small configs, a plain training loop,
multi-process gloo runs, a fake training checkpoint, a clip whose pixels say where they are."""

from __future__ import annotations

import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_video.config import load_config
from ssl_video.eval.take_clips import Clip


def small_config(method: str, *extra: str, batch_size: int = 4, num_frames: int = 2):
    """A CPU-sized config: ResNet-18 per frame, narrow heads."""
    return load_config([f"method={method}", "backbone=resnet18", "train.device=cpu", f"train.batch_size={batch_size}",
                        "data.sampling=frames", f"data.num_frames={num_frames}", "method.proj_hidden_dim=128", *extra])


def train_steps(method, steps: int, make_batch, lr: float = 0.05) -> list[float]:
    """Plain SGD steps through the trainer's own ``train_step``; returns the losses."""
    from ssl_video.training.step import train_step

    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    return [float(train_step(method, method, make_batch(step), opt, step=step)["loss"]) for step in range(steps)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
        dist.barrier()  # no rank tears its connections down while a peer still talks to it
    finally:
        dist.destroy_process_group()


def spawn_ranks(fn, world: int, *args) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` gloo processes; an exception in any of them fails the caller."""
    mp.spawn(_entry, args=(world, _free_port(), fn, args), nprocs=world, join=True)


def write_checkpoint(path, state, backbone_name="resnet18_s8"):
    """A training checkpoint holding ``state`` as its backbone (plus a head the evaluations ignore)."""
    config = f"backbone:\n  name: {backbone_name}\nmethod:\n  name: walk_patch\n"
    torch.save({"model": {f"backbone.{k}": v for k, v in state.items()} | {"head.weight": torch.zeros(2)},
                "config": config, "step": 7}, path)


def tiny_train_args(shards, out_dir, steps: int, *extra: str) -> list[str]:
    """``python -m ssl_video.train`` overrides for a CPU run of a few seconds on the ``kinetics_shards`` fixture."""
    return ["method=walk_superpixel", f"data.root={shards / 'train'}", "data.crop_size=64", "data.num_workers=0",
            "data.epoch_length=4", "data.shuffle_buffer=4", "train.device=cpu", "train.batch_size=2",
            f"train.steps={steps}", f"train.out_dir={out_dir}", "train.log_every=1", "train.image_every=0",
            "train.ckpt_every=100", "data.max_superpixels=32", *extra]  # fmt: skip


def coded_clip(frames: int = 10, side: int = 20, crop: int = 16) -> Clip:
    """Every pixel's value says where it is: frame t, row y, column x -> (t, y, x) in the three channels."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(side), np.arange(side), indexing="ij")
    pixels = torch.from_numpy(np.stack([t, y, x], axis=1).astype(np.uint8))
    return Clip("take", 0, pixels, np.zeros(frames, np.int64), crop)
