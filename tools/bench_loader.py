"""Loader throughput per CPU core, split into decode / superpixel / augmentation time.

    python tools/bench_loader.py --shards shards/synthetic/kinetics/train [--clips 200] [key=value ...]

Runs the loader's per-sample work (``make_example``'s stages) on one thread over samples read from the shards and
prints clips/s per core for each stage and in total, then the end-to-end loader rate (``build_loader``, one worker).
Decoding runs on the CPU: decord's PyPI wheels have no CUDA, so no GPU-decode figure can come from this build.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time

import numpy as np
import torch
import webdataset as wds
from omegaconf import OmegaConf

from ssl_video.config import load_config
from ssl_video.data.augment import augment_clip
from ssl_video.data.decode import decode_frames
from ssl_video.data.loader import _choose_frames, build_loader, shard_list


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="shards/synthetic/kinetics/train")
    parser.add_argument("--clips", type=int, default=200)
    args, overrides = parser.parse_known_args()
    cfg = load_config(["method=walk_superpixel", f"data.root={args.shards}", *overrides]).data
    torch.set_num_threads(1)
    samples = list(wds.WebDataset(shard_list(cfg.root), shardshuffle=False))
    rng = random.Random(0)
    times = {"decode": 0.0, "superpixels": 0.0, "augment": 0.0}
    for i in range(args.clips):
        sample = samples[i % len(samples)]
        meta = json.loads(sample["json"])
        indices = _choose_frames(meta, cfg, rng)
        key = "mp4" if "mp4" in sample else "view0.mp4"
        t0 = time.perf_counter()
        frames = torch.from_numpy(decode_frames(sample[key], indices)).permute(0, 3, 1, 2)
        t1 = time.perf_counter()
        labels = None
        if cfg.superpixels:
            rows = [meta["superpixels"][cfg.superpixels]["frame_index"].index(j) for j in indices]
            sp_key = key.replace("mp4", f"sp.{cfg.superpixels}.npz")
            with np.load(io.BytesIO(sample[sp_key])) as npz:
                labels = torch.from_numpy(npz["labels"][rows].astype(np.int64))
        t2 = time.perf_counter()
        augment_clip(frames, labels, cfg, rng)
        t3 = time.perf_counter()
        times["decode"] += t1 - t0
        times["superpixels"] += t2 - t1
        times["augment"] += t3 - t2
    total = sum(times.values())
    print(f"{args.clips} clips of {cfg.clip_len}x{cfg.crop_size}² (superpixels: {cfg.superpixels}), one thread:")
    for stage, seconds in times.items():
        print(f"  {stage:12s} {1000 * seconds / args.clips:7.2f} ms/clip  ({100 * seconds / total:4.1f}%)")
    print(f"  per-sample work: {args.clips / total:.1f} clips/s per core")
    start = time.perf_counter()
    batches = 10
    loader = build_loader(OmegaConf.merge(cfg, {"epoch_length": batches, "num_workers": 1}), batch_size=8, seed=0)
    n = sum(b["clips"].shape[0] for b in loader)
    print(f"  end to end (build_loader, 1 worker): {n / (time.perf_counter() - start):.1f} clips/s")
    print("  GPU decode: not available (decord's PyPI build is CPU-only)")


if __name__ == "__main__":
    main()
