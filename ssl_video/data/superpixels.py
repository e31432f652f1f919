"""Superpixels for packing and training: one entry point, ``segment(frames, algo, **params)``.

Algorithms: scikit-image's ``slic``, ``felzenszwalb``, ``quickshift`` (parameters are skimage's).
Output labels are ``uint16``, contiguous ``0..n-1`` per frame.
"""

from __future__ import annotations

import numpy as np

ALGOS = ("slic", "felzenszwalb", "quickshift")


def relabel_contiguous(labels: np.ndarray) -> np.ndarray:
    """Map the labels of one frame onto ``0..n-1`` in order of first appearance of their sorted values."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.uint16)


def _segment_one(frame: np.ndarray, algo: str, params: dict) -> np.ndarray:
    from skimage import segmentation

    if algo == "slic":
        return segmentation.slic(frame, channel_axis=-1, **params)
    if algo == "felzenszwalb":
        return segmentation.felzenszwalb(frame, channel_axis=-1, **params)
    if algo == "quickshift":
        return segmentation.quickshift(frame, channel_axis=-1, **params)
    raise ValueError(f"unknown superpixel algorithm '{algo}'; choose from {', '.join(ALGOS)}")


def segment(frames: np.ndarray, algo: str = "slic", **params) -> np.ndarray:
    """Superpixels of ``frames`` ``(N, H, W, 3) uint8`` -> ``(N, H, W) uint16`` contiguous labels per frame."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3), got {tuple(frames.shape)}")
    out = np.empty(frames.shape[:3], dtype=np.uint16)
    for i, frame in enumerate(frames):
        labels = relabel_contiguous(_segment_one(frame, algo, params))
        if labels.max() >= np.iinfo(np.uint16).max:
            raise ValueError(f"{algo} produced more than 65535 segments in one frame; lower n_segments/scale")
        out[i] = labels
    return out
