"""Standard superpixel quality metrics of one frame, against a ground-truth label map.

- boundary recall: fraction of ground-truth boundary pixels within ``ceil(tol * diagonal)`` pixels (Euclidean) of a
  superpixel boundary; boundaries are ``skimage.segmentation.find_boundaries(mode="thick")`` of both maps.
- undersegmentation error (Neubert & Protzel 2012): ``1/N sum_G sum_{S overlaps G} min(|S & G|, |S - G|)``.
- achievable segmentation accuracy: ``1/N sum_S max_G |S & G|``.
- :func:`oracle_labels`: each superpixel takes the ground-truth label it overlaps most (the segmentation whose J and F
  the benchmark reports).
"""

from __future__ import annotations

import math

import numpy as np

BOUND_TH = 0.0025  # boundary tolerance as a fraction of the image diagonal (DAVIS's F default)


def _check(sp: np.ndarray, gt: np.ndarray) -> None:
    if sp.shape != gt.shape or sp.ndim != 2:
        raise ValueError(f"superpixels {sp.shape} and ground truth {gt.shape} must be the same (H, W) shape")


def contingency(sp: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(n_sp, n_gt)`` pixel counts of each (superpixel, ground-truth label) overlap; labels are made contiguous."""
    _check(sp, gt)
    _, s = np.unique(sp, return_inverse=True)
    _, g = np.unique(gt, return_inverse=True)
    s, g = s.ravel(), g.ravel()
    n_g = int(g.max()) + 1
    return np.bincount(s * n_g + g, minlength=(int(s.max()) + 1) * n_g).reshape(-1, n_g)


def tolerance_pixels(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """The boundary tolerance in pixels: ``bound_th`` itself if >= 1, else ``ceil(bound_th * diagonal)`` (DAVIS)."""
    return int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(*shape))


def boundary_recall(sp: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Fraction of ground-truth boundary pixels within the tolerance of a superpixel boundary (1.0 if none)."""
    from scipy.ndimage import distance_transform_edt
    from skimage.segmentation import find_boundaries

    _check(sp, gt)
    gt_b = find_boundaries(gt, connectivity=1, mode="thick")
    if not gt_b.any():
        return 1.0
    sp_b = find_boundaries(sp, connectivity=1, mode="thick")
    if not sp_b.any():
        return 0.0
    near = distance_transform_edt(~sp_b) <= tolerance_pixels(sp.shape, bound_th)
    return float((gt_b & near).sum() / gt_b.sum())


def undersegmentation_error(sp: np.ndarray, gt: np.ndarray) -> float:
    """Neubert & Protzel's undersegmentation error; 0 when every superpixel lies inside one ground-truth region."""
    m = contingency(sp, gt)
    leak = np.minimum(m, m.sum(1, keepdims=True) - m)
    return float(leak[m > 0].sum() / m.sum())


def achievable_segmentation_accuracy(sp: np.ndarray, gt: np.ndarray) -> float:
    """Fraction of pixels labelled correctly when each superpixel takes its majority ground-truth label."""
    m = contingency(sp, gt)
    return float(m.max(1).sum() / m.sum())


def oracle_labels(sp: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Each superpixel filled with the ground-truth label it overlaps most (ties: the smaller label)."""
    _check(sp, gt)
    _, s = np.unique(sp, return_inverse=True)
    values, g = np.unique(gt, return_inverse=True)
    m = contingency(sp, gt)
    return values[m.argmax(1)][s.reshape(sp.shape)].astype(gt.dtype)


def frame_metrics(sp: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> dict[str, float]:
    """``{"br", "ue", "asa", "segments"}`` of one frame."""
    return {
        "br": boundary_recall(sp, gt, bound_th),
        "ue": undersegmentation_error(sp, gt),
        "asa": achievable_segmentation_accuracy(sp, gt),
        "segments": float(len(np.unique(sp))),
    }
