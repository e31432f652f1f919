"""ImageNet normalisation: the one home of the mean/std and of the conversions both sides of a batch use.

The loader and the evaluations normalise frames (:func:`normalise`); the methods' pictures for TensorBoard undo it
(:func:`denormalise`). Every backbone sees frames normalised by exactly these functions.
"""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MEAN, _STD = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)


def to_float(frames: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 frames of any memory layout -> contiguous float32 in [0, 1]: a new tensor, or ``out`` written in place.

    The warps leave channels-last uint8 (their fast path); the colour ops broadcast per channel, which is 3-4x slower
    in that layout (innermost dimension of 3), so the layout changes once, with the dtype, in a single copy."""
    if out is None:
        out = torch.empty(frames.shape, dtype=torch.float32, device=frames.device)
    return out.copy_(frames).mul_(1.0 / 255)


def normalise(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (or [0, 1] float) frames ``(..., 3, H, W)`` -> new contiguous float32, ImageNet mean/std normalised."""
    return normalise_(to_float(frames) if frames.dtype == torch.uint8 else frames.float().contiguous().clone())


def normalise_(x: torch.Tensor) -> torch.Tensor:
    """In place on contiguous [0, 1] floats: ``x / std - mean / std`` (per-channel ops on whole planes are fast)."""
    return x.mul_((1.0 / _STD).to(x.device)).add_((-_MEAN / _STD).to(x.device))


def denormalise(frames: torch.Tensor) -> torch.Tensor:
    """Normalised frames ``(..., 3, H, W)`` -> [0, 1] (clamped), e.g. for TensorBoard pictures."""
    return (frames * _STD.to(frames.device) + _MEAN.to(frames.device)).clamp(0, 1)
