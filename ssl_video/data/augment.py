"""Augmentation with torchvision.transforms.v2 functionals; a clip and its superpixel maps share one parameter draw.

A draw (``AugParams``) is made once per chunk (``clip`` sampling) or once per frame (``frames`` sampling) from the
sample's ``random.Random``; the same parameters go through ``tv_tensors.Video`` (frames) and ``tv_tensors.Mask``
(label maps: resized nearest, rotated nearest). Parameters are drawn here rather than inside v2's random transforms so
that one draw can be shared by a chunk, replayed in tests, and re-run on the GPU on whole batches.

Presets (``data.augment``):
- ``judo`` (the judo study's list): central square crop; random square crop of 70-90 % of its side (350-450 of 500)
  resized to ``crop_size``; flip 0.5; rotation +-10 deg with p 0.3; colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.6;
  grayscale 0.2; random erasing 0.5 (v2.RandomErasing's scale/ratio, on the normalised frames).
- ``walk`` (the walk study's, videowalk's ``cj`` + ``flip``): resize the frame to ``crop_size``²; flip 0.5; colour
  jitter (0.1, 0.1, 0.1, 0) always.
- ``none``: resize only.
Label maps are then relabelled contiguously per frame and capped at ``data.max_superpixels`` segments by merging the
smallest into their nearest kept neighbour.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from ssl_video.normalise import denormalise, to_float
from ssl_video.normalise import normalise_ as _normalise_


@dataclass(frozen=True)
class Preset:
    crop: str = "full"  # full: the whole frame | judo: central square, then a random square of crop_frac of its side
    #                     | resized: torchvision's RandomResizedCrop box, area fraction crop_frac, aspect crop_ratio
    crop_frac: tuple[float, float] = (1.0, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.0
    rotate_p: float = 0.0
    rotate_deg: float = 0.0
    jitter_p: float = 0.0
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    gray_p: float = 0.0
    erase_p: float = 0.0


PRESETS = {
    "judo": Preset(
        "judo", (0.7, 0.9), flip_p=0.5, rotate_p=0.3, rotate_deg=10.0, jitter_p=0.6, gray_p=0.2, erase_p=0.5
    ),
    "walk": Preset("full", flip_p=0.5, jitter_p=1.0, jitter=(0.1, 0.1, 0.1, 0.0)),  # videowalk's "cj" + "flip"
    "none": Preset("full"),
}
# data.per_frame_crop on a preset that only resizes: videowalk's per-frame RandomResizedCrop (utils/augs.py)
PER_FRAME_CROP = {"crop": "resized", "crop_frac": (0.8, 0.95), "crop_ratio": (0.7, 1.3)}
MASK_FILL = -1  # label of the corners a rotation uncovers: after relabelling they form one segment of their own


@dataclass
class AugParams:
    """One draw: geometric part (crop box in input pixels, flip, angle) and photometric part."""

    crop: tuple[int, int, int, int]  # top, left, height, width
    size: int
    flip: bool = False
    angle: float = 0.0
    jitter: tuple[list[int], float, float, float, float] | None = None  # op order, brightness, contrast, sat., hue
    gray: bool = False
    erase: tuple[int, int, int, int] | None = None  # top, left, height, width in output pixels


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown data.augment '{name}'; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def draw_params(preset: Preset, height: int, width: int, size: int, rng: random.Random) -> AugParams:
    """Draw one set of parameters for frames of ``height`` x ``width`` resized to ``size``²."""
    if preset.crop == "judo":
        side0 = min(height, width)
        top0, left0 = (height - side0) // 2, (width - side0) // 2
        side = max(1, round(rng.uniform(*preset.crop_frac) * side0))
        crop = (top0 + rng.randint(0, side0 - side), left0 + rng.randint(0, side0 - side), side, side)
    elif preset.crop == "resized":
        crop = resized_crop_box(height, width, preset.crop_frac, preset.crop_ratio, rng)
    else:
        crop = (0, 0, height, width)
    p = AugParams(crop=crop, size=size, flip=rng.random() < preset.flip_p)
    if rng.random() < preset.rotate_p:
        p.angle = rng.uniform(-preset.rotate_deg, preset.rotate_deg)
    draw_photometric(p, preset, rng)
    return p


def resized_crop_box(height: int, width: int, scale, ratio, rng: random.Random) -> tuple[int, int, int, int]:
    """v2.RandomResizedCrop.get_params with draws from ``rng``: 10 tries, then the central crop of clamped aspect."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draw_photometric(p: AugParams, preset: Preset, rng: random.Random) -> AugParams:
    """Fill the photometric part of ``p`` (v2.ColorJitter's ranges and random op order, v2.RandomErasing's boxes)."""
    p.jitter, p.gray, p.erase = None, False, None
    if rng.random() < preset.jitter_p:
        b, c, s, h = preset.jitter
        order = rng.sample(range(4), 4)
        p.jitter = (order, rng.uniform(1 - b, 1 + b), rng.uniform(1 - c, 1 + c), rng.uniform(1 - s, 1 + s),
                    rng.uniform(-h, h))  # fmt: skip
    p.gray = rng.random() < preset.gray_p
    if rng.random() < preset.erase_p:
        area = p.size * p.size
        for _ in range(10):  # v2.RandomErasing: scale (0.02, 0.33), log-uniform ratio (0.3, 3.3), 10 tries
            target = area * rng.uniform(0.02, 0.33)
            ratio = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
            h, w = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < h < p.size and 0 < w < p.size:
                p.erase = (rng.randint(0, p.size - h), rng.randint(0, p.size - w), h, w)
                break
    return p


def apply_geometric(frames: torch.Tensor, labels: torch.Tensor | None, p: AugParams):
    """``frames`` ``(T, 3, H, W)``, ``labels`` ``(T, H, W)`` (or None) through crop, resize, flip, rotation."""
    video = F.resized_crop(tv_tensors.Video(frames), *p.crop, [p.size, p.size], antialias=True)
    mask = None if labels is None else F.resized_crop(tv_tensors.Mask(labels), *p.crop, [p.size, p.size])
    if p.flip:
        video = F.horizontal_flip(video)
        mask = None if mask is None else F.horizontal_flip(mask)
    if p.angle:
        video = F.rotate(video, p.angle, fill=0)
        mask = None if mask is None else F.rotate(mask, p.angle, fill=MASK_FILL)
    # plain tensors out: photometric functionals refuse tv_tensors.Video, and batches hold plain tensors
    return video.as_subclass(torch.Tensor), None if mask is None else mask.as_subclass(torch.Tensor)


_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def _gray(x: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` float -> ``(..., 1, H, W)`` luma, torchvision's formula, on whole channel planes."""
    return x[..., 0, :, :].mul(_GRAY[0]).add_(x[..., 1, :, :], alpha=_GRAY[1]).add_(x[..., 2, :, :], alpha=_GRAY[2])[
        ..., None, :, :
    ]


def _blend_(x: torch.Tensor, other: torch.Tensor | float, ratio: float) -> torch.Tensor:
    """torchvision's ``_blend`` in place: ``ratio * x + (1 - ratio) * other`` clamped to [0, 1]."""
    x.mul_(ratio)
    if not isinstance(other, float) or other != 0.0:
        x.add_(other, alpha=1.0 - ratio)
    return x.clamp_(0, 1)


def apply_photometric(frames: torch.Tensor, p: AugParams) -> torch.Tensor:
    """Colour jitter and grayscale on ``(..., 3, H, W)`` frames (uint8, or float in [0, 1]) -> float in [0, 1].

    Same formulas and op order as v2.ColorJitter / v2.Grayscale on float images (tested equal to them), run in place
    on one float copy; the input is never modified."""
    x = to_float(frames) if frames.dtype == torch.uint8 else frames.contiguous().clone()
    return _photometric_(x, p)


def _photometric_(x: torch.Tensor, p: AugParams) -> torch.Tensor:
    """``apply_photometric`` in place on a contiguous float tensor in [0, 1] that the caller owns."""
    if p.jitter is not None:
        order, brightness, contrast, saturation, hue = p.jitter
        for k in order:
            if k == 0:
                _blend_(x, 0.0, brightness)
            elif k == 1:  # blend towards each frame's mean luma
                _blend_(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), contrast)
            elif k == 2:
                _blend_(x, _gray(x), saturation)
            elif hue:  # hue is the costly one (RGB<->HSV): skip a zero shift
                x = F.adjust_hue(x, hue)
    if p.gray:
        x.copy_(_gray(x).expand(x.shape))
    return x


def apply_erase(frames: torch.Tensor, p: AugParams, inplace: bool = False) -> torch.Tensor:
    """Random erasing on normalised frames (value 0 = the dataset mean colour), as v2.RandomErasing after Normalize."""
    if p.erase is None:
        return frames
    return F.erase(frames, *p.erase, v=torch.zeros((), dtype=frames.dtype, device=frames.device), inplace=inplace)


def cap_segments(labels: torch.Tensor, max_segments: int) -> torch.Tensor:
    """Relabel one map ``(H, W)`` contiguously; beyond ``max_segments`` merge the smallest into the nearest kept one."""
    inverse = relabel(labels[None])[0][0]
    counts = torch.bincount(inverse.view(-1))
    if len(counts) <= max_segments:
        return inverse
    keep = torch.zeros(len(counts), dtype=torch.bool)
    keep[torch.argsort(counts, descending=True, stable=True)[:max_segments]] = True
    kept_pixels = keep[inverse].numpy()
    # every dropped pixel takes the label of the nearest kept pixel (scipy's EDT gives that pixel's index)
    _, (rows, cols) = ndimage.distance_transform_edt(~kept_pixels, return_indices=True)
    merged = inverse.numpy()[rows, cols]
    _, merged = np.unique(merged, return_inverse=True)
    return torch.from_numpy(merged.reshape(labels.shape).astype(np.int64))


def augment_clip(
    frames: torch.Tensor,
    labels: torch.Tensor | None,
    cfg,
    rng: random.Random,
    per_frame: bool = False,
    photometric: bool = True,
    *,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``frames`` ``(T, 3, H, W) uint8``, ``labels`` ``(T, H, W)`` -> normalised float frames, capped long maps.

    One draw for the whole chunk, or one per frame when ``per_frame`` or ``cfg.per_frame_crop`` (which also gives a
    preset that only resizes videowalk's random resized crop, ``PER_FRAME_CROP``). ``photometric=False`` leaves colour
    jitter, grayscale and erasing to ``augment_batch_on_device`` (``data.gpu_augment``). ``out``: a contiguous float32
    ``(T, 3, crop_size, crop_size)`` tensor to write the frames into (the loader passes its slot of the sample's
    clips: no concatenation or stacking copies afterwards); returned as the clip.
    """
    preset = get_preset(cfg.augment)
    if getattr(cfg, "per_frame_crop", False):  # the reference videowalk's independent draw (and crop) per frame
        per_frame = True
        preset = dataclasses.replace(preset, **PER_FRAME_CROP) if preset.crop == "full" else preset
    count, (height, width), size = frames.shape[0], frames.shape[-2:], cfg.crop_size
    clip = torch.empty((count, 3, size, size), dtype=torch.float32) if out is None else out
    groups = [slice(t, t + 1) for t in range(count)] if per_frame else [slice(None)]
    if labels is not None:
        labels = labels.to(torch.int32)  # nearest resize / rotate of int32 is faster than of int64
    maps = None
    for group in groups:
        p = draw_params(preset, height, width, size, rng)
        video, mask = apply_geometric(frames[group], None if labels is None else labels[group], p)
        finish_frames(video, p, photometric, out=clip[group])
        if mask is None:
            continue
        if len(groups) == 1:
            maps = mask
        else:  # one buffer for the per-frame warps instead of a list and a concatenation
            maps = torch.empty((count, size, size), dtype=mask.dtype) if maps is None else maps
            maps[group] = mask
    return clip, None if maps is None else finish_maps(maps, cfg.max_superpixels)


def finish_frames(
    video: torch.Tensor, p: AugParams, photometric: bool = True, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Warped uint8 frames -> photometric draw (unless left to the device) -> normalised contiguous float32.

    Written into ``out`` when given (contiguous float32 of ``video``'s shape), else into a new tensor."""
    x = to_float(video, out)  # one copy; every later op runs in place on it
    if photometric:
        x = _photometric_(x, p)  # a hue shift returns a new tensor; everything else stays in x
    x = _normalise_(x)
    if photometric:
        x = apply_erase(x, p, inplace=True)
    if out is not None and x is not out:
        out.copy_(x)
        return out
    return x


def relabel(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Label maps ``(T, H, W)`` (any integer labels, e.g. -1 fill) -> contiguous long labels per frame, and counts.

    All frames at once: label ``l`` of frame ``t`` gets the key ``t * K + l - min``, one bincount over the keys gives
    every frame's histogram, and a running count of the labels present is the lookup table (O(pixels); torch.unique
    sorts and is ~4x slower at 256²). Returns ``(maps, n)`` with ``n[t]`` the number of segments of frame ``t``."""
    t = maps.shape[0]
    if maps.numel() == 0:
        return maps.long(), torch.zeros(t, dtype=torch.long)
    # int32 keys: indexing and bincount with them run ~4x faster than with int64 (few labels, no overflow)
    flat = maps.reshape(t, -1).to(torch.int32)
    low = flat.amin(1, keepdim=True)
    k = int((flat.amax(1, keepdim=True) - low).max()) + 1
    keys = flat - low + torch.arange(0, t * k, k, dtype=torch.int32).unsqueeze(1)
    present = torch.bincount(keys.view(-1), minlength=t * k) > 0
    lut = present.view(t, k).cumsum(1).view(-1) - 1
    return lut.index_select(0, keys.view(-1)).view(maps.shape), present.view(t, k).sum(1)


def finish_maps(maps: torch.Tensor, max_segments: int) -> torch.Tensor:
    """Warped label maps ``(T, H, W)`` -> contiguous long labels per frame, at most ``max_segments`` each."""
    out, counts = relabel(maps)
    for t in torch.nonzero(counts > max_segments).flatten().tolist():  # rare: only frames over the cap pay for EDT
        out[t] = cap_segments(out[t], max_segments)
    return out


def augment_batch_on_device(clips: torch.Tensor, cfg, rng: random.Random) -> torch.Tensor:
    """Photometric augmentation of a whole batch where it lives (``data.gpu_augment``): ``clips`` ``(B, V, T, 3, H, W)``
    normalised, as the loader made them with ``photometric=False``. One draw per (sample, view) chunk, or per frame in
    ``frames`` sampling; the ops are batched over each chunk's frames."""
    preset = get_preset(cfg.augment)
    per_frame = cfg.sampling == "frames" or getattr(cfg, "per_frame_crop", False)
    b, v, t = clips.shape[:3]
    out = clips.clone()
    for i in range(b):
        for j in range(v):
            for group in [slice(k, k + 1) for k in range(t)] if per_frame else [slice(None)]:
                p = draw_photometric(AugParams(crop=(0, 0, 0, 0), size=clips.shape[-1]), preset, rng)
                if p.jitter is None and not p.gray and p.erase is None:
                    continue
                x = _photometric_(denormalise(clips[i, j, group]).contiguous(), p)
                out[i, j, group] = apply_erase(_normalise_(x), p)
    return out
