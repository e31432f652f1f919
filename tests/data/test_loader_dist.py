"""Two gloo ranks over three shards of unequal size: the same number of batches, in lockstep, in different orders."""

from __future__ import annotations

import datetime
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.dist


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, root: str, out: str, workers: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # a short timeout: were the batch counts unequal, the collective below would fail instead of hanging the test
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    from ssl_video.config import load_config
    from ssl_video.data.loader import build_loader

    cfg = load_config(
        ["method=walk_superpixel", f"data.root={root}", "data.crop_size=32", f"data.num_workers={workers}",
         "data.epoch_length=5", "data.shuffle_buffer=3"]
    ).data  # fmt: skip
    keys, steps = [], 0
    for batch in build_loader(cfg, batch_size=2, rank=rank, world_size=world, seed=7, epoch=0):
        step = torch.tensor([1])
        dist.all_reduce(step)  # a DDP step: every rank must take part
        steps += int(step)
        keys.append(batch["frame_index"].tolist() + batch["label"].tolist())
    total = [None] * world
    dist.all_gather_object(total, len(keys))
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"keys": keys, "steps": steps, "counts": total}, f)
    dist.destroy_process_group()


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_two_ranks_unequal_shards_equal_batches_different_orders(kinetics_shards, tmp_path, workers):
    root = kinetics_shards / "train"
    sizes = [s["samples"] for s in json.loads((root / "manifest.json").read_text())["shards"]]
    assert len(sizes) == 3 and len(set(sizes)) > 1  # three shards, not all of one size
    mp.spawn(_rank_main, args=(2, _free_port(), str(root), str(tmp_path), workers), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert len(r0["keys"]) == len(r1["keys"]) == 5 and r0["counts"] == r1["counts"] == [5, 5]
    assert r0["steps"] == r1["steps"] == 10  # all_reduce of 1 over 2 ranks, 5 times
    assert r0["keys"] != r1["keys"]
