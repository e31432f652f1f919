"""J (region similarity) and F (boundary measure) exactly as the official davis2017-evaluation computes them.

- :func:`jaccard`: IoU of two binary masks, void pixels ignored, 1 when the union is empty (``db_eval_iou``).
- :func:`f_measure`: boundaries by :func:`seg2bmap` (1-pixel wide, offset half a pixel towards the origin), each
  dilated by a disk of radius ``ceil(bound_th * diagonal)`` (``bound_th >= 1``: that many pixels), precision and recall
  of matched boundary pixels, F = 2PR / (P + R); empty boundaries follow the official special cases.
- :func:`statistics`: mean, recall (fraction of frames > 0.5) and decay (mean of the first of 4 bins minus the last)
  of one object's per-frame values (``db_statistics``).
- :func:`evaluate_sequence` / :func:`summarize`: per object with the first and last frame excluded (semi-supervised
  task), objects 1..max(first ground-truth frame), and the table's ``J&F-Mean = (J-Mean + F-Mean) / 2`` where every
  mean is over all objects of all sequences.

The official code uses OpenCV for the dilation; ``scipy.ndimage.binary_dilation`` with the same structuring element is
the same operation on binary images (both treat outside pixels as background).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

BOUND_TH = 0.008  # official default: boundary tolerance as a fraction of the image diagonal
VOID_LABEL = 255
MEASURES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} must be (H, W) masks of one shape")


def jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J: IoU of binary masks ``gt`` and ``pred`` outside ``void``; 1.0 if the union is empty."""
    _check_pair(gt, pred)
    gt, pred = gt.astype(bool), pred.astype(bool)
    keep = np.ones_like(gt) if void is None else ~void.astype(bool)
    union = np.sum((gt | pred) & keep)
    if union == 0:
        return 1.0
    return float(np.sum(gt & pred & keep) / union)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """1-pixel-wide boundary map of a binary mask (David Martin's ``seg2bmap``, as davis2017-evaluation uses it).

    A pixel is boundary when it differs from its east, south or south-east neighbour; the last row compares only
    east, the last column only south, the bottom-right pixel never is. Hand-written: no library offers this exact
    half-pixel-offset definition, and F depends on it.
    """
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def tolerance_pixels(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> int:
    """Boundary tolerance in pixels: ``bound_th`` if >= 1, else ``ceil(bound_th * diagonal)``."""
    return int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH, void: np.ndarray | None = None) -> float:
    """Boundary measure F of binary masks (official ``f_measure``; symmetric in ``gt`` and ``pred``)."""
    from scipy.ndimage import binary_dilation
    from skimage.morphology import disk

    _check_pair(gt, pred)
    keep = np.ones(gt.shape, bool) if void is None else ~void.astype(bool)
    fg_boundary = seg2bmap(pred.astype(bool) & keep)
    gt_boundary = seg2bmap(gt.astype(bool) & keep)
    n_fg, n_gt = int(fg_boundary.sum()), int(gt_boundary.sum())
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0  # official: (P, R) = (1, 0) or (0, 1), so F = 0
    se = disk(tolerance_pixels(gt.shape, bound_th)).astype(bool)
    fg_dil = binary_dilation(fg_boundary, structure=se)
    gt_dil = binary_dilation(gt_boundary, structure=se)
    precision = np.sum(fg_boundary & gt_dil) / n_fg
    recall = np.sum(gt_boundary & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def statistics(values: Iterable[float]) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame values (official ``db_statistics``, NaNs ignored)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("statistics need at least one per-frame value")
    mean = float(np.nanmean(v))
    recall = float(np.nanmean(v > 0.5))
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(int)
    bins = [v[ids[i] : ids[i + 1] + 1] for i in range(4)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def evaluate_sequence(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> dict[int, dict[str, float]]:
    """Per-object J/F statistics of one sequence.

    Args:
        gt: ``(T, H, W)`` integer label maps (0 background, 1..K objects, 255 void); objects are 1..max(gt[0]).
        pred: ``(T, H, W)`` predicted label maps.
        bound_th: F's boundary tolerance.

    Returns:
        ``{object_id: {"J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay", "J", "F"}}`` where ``J``
        and ``F`` are the per-frame value lists over frames 1..T-2 (first and last excluded).
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} must be (T, H, W) of one shape")
    if gt.shape[0] < 3:
        raise ValueError(f"a sequence needs at least 3 frames (first and last are excluded), got {gt.shape[0]}")
    void = gt == VOID_LABEL
    gt = np.where(void, 0, gt)
    out = {}
    for obj in range(1, int(gt[0].max()) + 1):
        js = [jaccard(g == obj, p == obj) for g, p in zip(gt[1:-1], pred[1:-1])]
        fs = [f_measure(g == obj, p == obj, bound_th) for g, p in zip(gt[1:-1], pred[1:-1])]
        jm, jr, jd = statistics(js)
        fm, fr, fd = statistics(fs)
        out[obj] = {"J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm, "F-Recall": fr, "F-Decay": fd,
                    "J": js, "F": fs}
    return out


def summarize(per_sequence: dict[str, dict[int, dict[str, float]]]) -> dict[str, float]:
    """The official global row: every measure averaged over all objects of all sequences; J&F-Mean = (J + F) / 2."""
    objects = [stats for seq in per_sequence.values() for stats in seq.values()]
    if not objects:
        raise ValueError("no objects to summarise")
    row = {m: float(np.mean([o[m] for o in objects])) for m in MEASURES[1:]}
    return {"J&F-Mean": (row["J-Mean"] + row["F-Mean"]) / 2, **row}
