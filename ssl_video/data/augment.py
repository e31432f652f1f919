"""Augmentation with torchvision.transforms.v2: a clip and its superpixel maps share one parameter draw.

``augment_clip`` crops/resizes/flips ``tv_tensors.Video`` and ``tv_tensors.Mask`` together (masks resized nearest),
then applies photometric jitter to the frames only, relabels the maps contiguously and caps their count at
``data.max_superpixels`` by merging the smallest segments into their nearest kept neighbour.
In ``frames`` sampling every frame gets its own draw (the frames are independent samples).
"""

from __future__ import annotations

import random

import numpy as np
import torch
from scipy import ndimage
from torchvision import tv_tensors
from torchvision.transforms import v2

from ssl_video.data.constants import IMAGENET_MEAN, IMAGENET_STD

PRESETS = ("walk", "judo", "none")


def build_transform(preset: str, size: int) -> tuple[v2.Transform, v2.Transform]:
    """(geometric transform applied to frames + maps, photometric transform applied to frames only)."""
    if preset == "walk":  # videowalk: resize + crop, flip, colour jitter
        geo = v2.Compose([v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True), v2.RandomHorizontalFlip()])
        photo = v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)
    elif preset == "judo":  # the judo study's list (crop 350-450 of 500 ~ scale 0.49-0.81)
        geo = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=(0.49, 0.81), ratio=(1.0, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomApply([v2.RandomRotation(10)], p=0.3),
            ]
        )
        photo = v2.Compose(
            [
                v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.6),
                v2.RandomGrayscale(p=0.2),
            ]
        )
    elif preset == "none":
        geo, photo = v2.Resize((size, size), antialias=True), v2.Identity()
    else:
        raise ValueError(f"unknown data.augment '{preset}'; choose from {', '.join(PRESETS)}")
    return geo, photo


def cap_segments(labels: torch.Tensor, max_segments: int) -> torch.Tensor:
    """Relabel one map contiguously; beyond ``max_segments`` merge the smallest into the nearest kept segment."""
    values, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    if len(values) <= max_segments:
        return inverse.view(labels.shape)
    keep = torch.zeros(len(values), dtype=torch.bool)
    keep[torch.argsort(counts, descending=True)[:max_segments]] = True
    kept_pixels = keep[inverse].numpy()
    # every dropped pixel takes the label of the nearest kept pixel (scipy's EDT gives its index)
    _, (rows, cols) = ndimage.distance_transform_edt(~kept_pixels, return_indices=True)
    merged = inverse.numpy()[rows, cols]
    _, merged = np.unique(merged, return_inverse=True)
    return torch.from_numpy(merged.reshape(labels.shape).astype(np.int64))


def _normalise(frames: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (frames.float() / 255.0 - mean) / std


def augment_clip(
    frames: torch.Tensor, labels: torch.Tensor | None, cfg, rng: random.Random, per_frame: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``frames`` ``(T, 3, H, W) uint8``, ``labels`` ``(T, H, W)`` -> normalised float frames, capped long maps."""
    torch.manual_seed(rng.randrange(2**31))  # v2 draws from torch's RNG: seed it from the sample's RNG
    geo, photo = build_transform(cfg.augment, cfg.crop_size)
    groups = [slice(t, t + 1) for t in range(frames.shape[0])] if per_frame else [slice(None)]
    out_frames, out_labels = [], []
    for group in groups:
        video = tv_tensors.Video(frames[group])
        if labels is not None:
            video, mask = geo(video, tv_tensors.Mask(labels[group]))
            out_labels.append(torch.as_tensor(mask))
        else:
            video = geo(video)
        out_frames.append(photo(torch.as_tensor(video)))
    clip = _normalise(torch.cat(out_frames))
    if labels is None:
        return clip, None
    maps = torch.cat(out_labels)
    return clip, torch.stack([cap_segments(m, cfg.max_superpixels) for m in maps])
