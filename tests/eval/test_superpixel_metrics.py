"""Superpixel metrics on hand-built cases with known values."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_video.eval.superpixel_metrics import (
    achievable_segmentation_accuracy,
    boundary_recall,
    contingency,
    frame_metrics,
    oracle_labels,
    tolerance_pixels,
    undersegmentation_error,
)


def _halves(h: int = 8, w: int = 8) -> np.ndarray:
    gt = np.zeros((h, w), np.uint8)
    gt[:, w // 2:] = 1
    return gt


def test_perfect_segmentation():
    gt = _halves()
    sp = gt.astype(np.int64) * 7 + 3  # other label values, same partition
    m = frame_metrics(sp, gt)
    assert m == {"br": 1.0, "ue": 0.0, "asa": 1.0, "segments": 2.0}


def test_oversegmentation_is_still_perfect_for_ue_and_asa():
    gt = _halves()
    sp = np.arange(64).reshape(8, 8)  # one superpixel per pixel
    assert undersegmentation_error(sp, gt) == 0.0
    assert achievable_segmentation_accuracy(sp, gt) == 1.0
    assert boundary_recall(sp, gt) == 1.0


def test_hand_computed_imperfect_case():
    # GT: columns 0-3 label 0, 4-7 label 1 (8x8). Superpixels: A = columns 0-2, B = columns 3-5, C = columns 6-7.
    gt = _halves()
    sp = np.zeros((8, 8), np.int64)
    sp[:, 3:6] = 1
    sp[:, 6:] = 2
    # B overlaps label 0 with 8 pixels and label 1 with 16: ASA = (24 + 16 + 16) / 64
    assert achievable_segmentation_accuracy(sp, gt) == pytest.approx(56 / 64)
    # UE: B contributes min(8, 16) for label 0 and min(16, 8) for label 1; A and C contribute 0
    assert undersegmentation_error(sp, gt) == pytest.approx(16 / 64)
    # oracle: B takes label 1
    np.testing.assert_array_equal(oracle_labels(sp, gt), (np.arange(8) >= 3)[None].repeat(8, 0).astype(np.uint8))
    np.testing.assert_array_equal(contingency(sp, gt), [[24, 0], [8, 16], [0, 16]])


def test_boundary_recall_tolerance():
    # 100x100: tolerance ceil(0.0025 * 141.4) = 1 px. GT edge between columns 49|50 (thick: columns 49 and 50).
    gt = np.zeros((100, 100), np.uint8)
    gt[:, 50:] = 1
    assert tolerance_pixels(gt.shape) == 1
    near = np.zeros_like(gt)
    near[:, 51:] = 1  # thick boundary at columns 50, 51: every GT boundary pixel within 1 px
    assert boundary_recall(near, gt) == 1.0
    far = np.zeros_like(gt)
    far[:, 53:] = 1  # boundary columns 52, 53: column 50 is 2 px away, 49 is 3 px away
    assert boundary_recall(far, gt) == 0.0
    half = np.zeros_like(gt)
    half[:50, 50:] = 1  # boundary correct on the top half only, plus a horizontal edge at rows 49|50
    # covered: rows 0-49 of columns 49 and 50 (100), and near the thick horizontal edge (rows 49-50, columns >= 50):
    # (50, 49) and (51, 50) at distance 1 from (50, 50), and (50, 50) itself; (51, 49) is sqrt(2) away
    assert boundary_recall(half, gt) == pytest.approx(103 / 200)
    assert boundary_recall(np.zeros_like(gt), gt) == 0.0


def test_shape_mismatch_is_one_clear_error():
    with pytest.raises(ValueError, match="same"):
        frame_metrics(np.zeros((4, 4)), np.zeros((4, 5)))
