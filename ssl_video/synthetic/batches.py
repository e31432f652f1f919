"""Batches of the design's schema straight from rendered takes (no shards): for tests, benchmarks and experiments.

:func:`two_view_batch` samples ``frames`` batches with the loader's own augmentation, the second view from another
camera when ``positive == "other_camera"`` (hard positives), so two-view methods can be trained in memory.
"""

from __future__ import annotations

import random
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
import torch

from ssl_video.data.augment import augment_clip
from ssl_video.synthetic.generate import render_take


@lru_cache(maxsize=64)
def take(seed: int, num_cameras: int = 3, num_frames: int = 24, size: int = 48) -> torch.Tensor:
    """``(V, T, 3, H, W)`` uint8 frames of one synthetic take (the action spans the whole take)."""
    frames = render_take(seed, num_cameras=num_cameras, num_frames=num_frames, size=(size, size),
                         segment=(0, num_frames))["frames"]
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 1, 4, 2, 3)


def two_view_batch(seeds: list[int], rng: random.Random, batch_size: int, num_frames: int, crop: int = 32,
                   positive: str = "same_clip", augment: str = "walk") -> dict[str, torch.Tensor]:
    """T random frames of a random take per sample; view 1 from another camera if ``positive == "other_camera"``.

    Returns ``clips`` (B, 2, T, 3, crop, crop) normalised float, ``camera`` (B, 2), ``frame_index`` (B, T).
    """
    aug = SimpleNamespace(augment=augment, crop_size=crop, max_superpixels=64)
    clips, cameras, indices = [], [], []
    for _ in range(batch_size):
        frames = take(rng.choice(seeds))
        v_all, t_all = frames.shape[:2]
        cam0 = rng.randrange(v_all)
        cam1 = rng.choice([c for c in range(v_all) if c != cam0]) if positive == "other_camera" else cam0
        idx = sorted(rng.sample(range(t_all), num_frames))
        views = [augment_clip(frames[cam, idx], None, aug, rng, per_frame=True)[0] for cam in (cam0, cam1)]
        clips.append(torch.stack(views))
        cameras.append([cam0, cam1])
        indices.append(idx)
    return {"clips": torch.stack(clips), "camera": torch.tensor(cameras), "frame_index": torch.tensor(indices)}
