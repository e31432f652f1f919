"""Shards -> augmented batches (the batch schema of docs/design.md).

``build_loader(data_cfg, batch_size=, rank=, world_size=, seed=, epoch=)`` returns exactly ``data_cfg.epoch_length``
batches on every rank, whatever the number or size of the shards: each (rank, worker) *resamples* shards from the
manifest with its own RNG seeded by (seed, epoch, rank, worker), so no rank can run out early and hang DDP, and the
data order is a pure function of the arguments (resume = rebuild the epoch and skip the batches already done).
Tar members are read with webdataset; a bad sample is skipped, warned about and counted in ``batch["skipped"]``.
"""

from __future__ import annotations

import io
import json
import logging
import random
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ssl_video.data.augment import augment_clip
from ssl_video.data.decode import decode_frames

log = logging.getLogger(__name__)


def shard_list(root: str | Path) -> list[str]:
    """Shard paths of a shard set, from its manifest.json (shards of zero samples are never listed)."""
    root = Path(root)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"no manifest.json in shard set {root} (make it with tools/make_shards.py)")
    shards = [root / s["name"] for s in json.loads(manifest.read_text())["shards"] if s.get("samples", 1) > 0]
    if not shards:
        raise ValueError(f"shard set {root} lists no shards")
    return [str(s) for s in shards]


def _view_keys(sample: dict) -> list[str]:
    if "mp4" in sample:
        return [""]
    return sorted(k[: -len("mp4")] for k in sample if k.startswith("view") and k.endswith(".mp4"))


def _choose_frames(meta: dict, cfg, rng: random.Random) -> list[int]:
    """Frame indices of one sample: a clip at a stride or N independent frames, among superpixel frames if needed."""
    n = int(meta["num_frames"])
    if cfg.superpixels:
        candidates = list(meta["superpixels"][cfg.superpixels]["frame_index"])
    else:
        candidates = list(range(n))
    if cfg.sampling == "frames":
        if len(candidates) < cfg.num_frames:
            raise ValueError(f"{len(candidates)} usable frames < data.num_frames={cfg.num_frames}")
        return sorted(rng.sample(candidates, cfg.num_frames))
    if cfg.sampling != "clip":
        raise ValueError(f"unknown data.sampling '{cfg.sampling}' (clip | frames)")
    # With superpixels, consecutive superpixel frames form the clip (their stride is fixed at pack time).
    step = 1 if cfg.superpixels else cfg.frame_stride
    span = (cfg.clip_len - 1) * step + 1
    if len(candidates) < span:
        raise ValueError(f"clip of {cfg.clip_len} frames at stride {step} does not fit {len(candidates)} frames")
    start = rng.randrange(len(candidates) - span + 1)
    return [candidates[start + k * step] for k in range(cfg.clip_len)]


def _frame_labels(meta: dict, indices: list[int]) -> list[int]:
    labels = meta.get("frame_label_idx")
    return [int(labels[i]) for i in indices] if labels else [-1] * len(indices)


def make_example(sample: dict, cfg, rng: random.Random) -> dict[str, torch.Tensor]:
    """Decode, sample and augment one tar sample into per-sample tensors of the batch schema."""
    meta = json.loads(sample["json"])
    views = _view_keys(sample)
    if cfg.num_views > 1 and cfg.positive == "other_camera":
        if len(views) < 2:
            raise ValueError("data.positive=other_camera needs multi-view samples (view0.mp4, view1.mp4, ...)")
        chosen = rng.sample(range(len(views)), cfg.num_views)  # distinct cameras, same instants
    else:
        chosen = [rng.randrange(len(views))] * cfg.num_views
    indices = _choose_frames(meta, cfg, rng)
    sp_rows = None
    if cfg.superpixels:
        sp_rows = [meta["superpixels"][cfg.superpixels]["frame_index"].index(i) for i in indices]
    clips, maps = [], None
    for v, cam in enumerate(chosen):
        prefix = views[cam]
        frames = torch.from_numpy(decode_frames(sample[f"{prefix}mp4"], indices)).permute(0, 3, 1, 2)
        labels = None
        if sp_rows is not None and v == 0:
            with np.load(io.BytesIO(sample[f"{prefix}sp.{cfg.superpixels}.npz"])) as npz:
                labels = torch.from_numpy(npz["labels"][sp_rows].astype(np.int64))
        clip, labels = augment_clip(frames, labels, cfg, rng, per_frame=cfg.sampling == "frames")
        clips.append(clip)
        if v == 0:
            maps = labels
    out = {
        "clips": torch.stack(clips),
        "label": torch.tensor(int(meta.get("label_idx", -1) if meta.get("label_idx") is not None else -1)),
        "frame_labels": torch.tensor(_frame_labels(meta, indices)),
        "frame_index": torch.tensor(indices),
        "camera": torch.tensor(chosen),
    }
    if maps is not None:
        out["superpixels"] = maps
        out["num_superpixels"] = maps.flatten(1).amax(1) + 1
    return out


class ShardStream(IterableDataset):
    """Resampled shards -> shuffled examples -> full batches; ``batches`` of them per rank, split over workers."""

    def __init__(self, cfg, *, batch_size: int, rank: int, world_size: int, seed: int, epoch: int) -> None:
        self.cfg, self.batch_size = cfg, batch_size
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, epoch
        self.shards = shard_list(cfg.root)

    def _batches_for(self, worker: int, num_workers: int) -> int:
        total = self.cfg.epoch_length
        return total // num_workers + (1 if worker < total % num_workers else 0)

    def _examples(self, rng: random.Random, counter: list[int]):
        while True:
            url = rng.choice(self.shards)
            tar = wds.tarfile_to_samples(handler=wds.warn_and_continue)
            try:
                yield from tar([{"url": url}])
            except Exception as exc:  # a truncated shard: keep what was read, count the rest as lost
                counter[0] += 1
                log.warning("skipping the rest of shard %s: %s", url, exc)

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{worker}")
        torch.manual_seed(rng.randrange(2**31))
        skipped = [0]
        buffer: list[dict] = []
        source = self._examples(rng, skipped)
        for _ in range(self._batches_for(worker, num_workers)):
            examples = []
            while len(examples) < self.batch_size:
                while len(buffer) < max(1, self.cfg.shuffle_buffer):
                    buffer.append(next(source))
                sample = buffer.pop(rng.randrange(len(buffer)))
                try:
                    examples.append(make_example(sample, self.cfg, rng))
                except Exception as exc:  # an undecodable sample never stops training
                    skipped[0] += 1
                    log.warning("skipping sample %s: %s", sample.get("__key__", "?"), str(exc).splitlines()[0])
            batch = collate(examples)
            batch["skipped"] = torch.zeros(self.batch_size, dtype=torch.long)
            batch["skipped"][0], skipped[0] = skipped[0], 0
            yield batch


def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([ex[key] for ex in examples]) for key in examples[0]}


def build_loader(data_cfg, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, epoch: int = 0):
    """Exactly ``data_cfg.epoch_length`` batches for this rank, deterministic in the arguments."""
    stream = ShardStream(data_cfg, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed, epoch=epoch)
    workers = min(data_cfg.num_workers, data_cfg.epoch_length)
    return DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=False)
