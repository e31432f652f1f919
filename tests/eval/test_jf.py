"""J and F against hand-computed values and an independent brute-force boundary measure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from ssl_video.eval import jf


def _square(shape, r0, r1, c0, c1):
    m = np.zeros(shape, bool)
    m[r0 : r1 + 1, c0 : c1 + 1] = True
    return m


def test_jaccard_known_values():
    gt = _square((8, 8), 0, 3, 0, 3)  # 16 px
    pred = _square((8, 8), 0, 3, 2, 5)  # 16 px, 8 shared
    assert jf.jaccard(gt, pred) == pytest.approx(8 / 24)
    assert jf.jaccard(gt, gt) == 1.0
    empty = np.zeros((8, 8), bool)
    assert jf.jaccard(empty, empty) == 1.0  # empty union counts as perfect
    assert jf.jaccard(gt, empty) == 0.0
    assert jf.jaccard(empty, pred) == 0.0
    void = _square((8, 8), 0, 3, 4, 5)  # hides pred's unshared half
    assert jf.jaccard(gt, pred, void) == pytest.approx(8 / 16)


def test_seg2bmap_is_the_half_pixel_shifted_ring():
    seg = _square((6, 6), 1, 3, 1, 3)
    expected = _square((6, 6), 0, 3, 0, 3) & ~_square((6, 6), 1, 2, 1, 2)
    np.testing.assert_array_equal(jf.seg2bmap(seg), expected)
    half = np.zeros((5, 7), bool)
    half[:, :3] = True  # vertical edge: only the last inside column is boundary
    expected = np.zeros((5, 7), bool)
    expected[:, 2] = True
    np.testing.assert_array_equal(jf.seg2bmap(half), expected)


def test_tolerance_radius_is_ceil_of_diagonal_fraction():
    assert jf.tolerance_pixels((480, 854)) == math.ceil(0.008 * math.hypot(480, 854)) == 8
    assert jf.tolerance_pixels((64, 64)) == 1
    assert jf.tolerance_pixels((64, 64), 3) == 3


def test_f_measure_shift_within_and_beyond_tolerance():
    gt = np.zeros((64, 64), bool)
    gt[:, :30] = True
    within, beyond = np.zeros_like(gt), np.zeros_like(gt)
    within[:, :31] = True  # boundary 1 px away; tolerance ceil(0.008 * 90.5) = 1
    beyond[:, :32] = True
    assert jf.f_measure(gt, gt) == 1.0
    assert jf.f_measure(gt, within) == 1.0
    assert jf.f_measure(gt, beyond) == 0.0
    assert jf.f_measure(gt, beyond, bound_th=2) == 1.0


def test_f_measure_precision_recall_mix():
    gt = np.zeros((64, 64), bool)
    gt[:, :30] = True  # boundary: 64 pixels of column 29
    pred = gt.copy()
    pred[10:12, 60:62] = True  # a far blob: its ring has 3*3 - 1 = 8 unmatched boundary pixels
    precision, recall = 64 / 72, 1.0
    assert jf.f_measure(gt, pred) == pytest.approx(2 * precision * recall / (precision + recall))
    assert jf.f_measure(pred, gt) == pytest.approx(jf.f_measure(gt, pred))


def test_f_measure_empty_cases():
    empty = np.zeros((32, 32), bool)
    full_obj = _square((32, 32), 5, 10, 5, 10)
    assert jf.f_measure(empty, empty) == 1.0
    assert jf.f_measure(full_obj, empty) == 0.0
    assert jf.f_measure(empty, full_obj) == 0.0


def _brute_f(gt, pred, radius):
    """Independent F: boundary by explicit neighbour loops, matching by Euclidean distance <= radius."""

    def bmap(seg):
        h, w = seg.shape
        out = np.zeros_like(seg)
        for r in range(h):
            for c in range(w):
                if r == h - 1 and c == w - 1:
                    continue
                if r == h - 1:
                    out[r, c] = seg[r, c] != seg[r, c + 1]
                elif c == w - 1:
                    out[r, c] = seg[r, c] != seg[r + 1, c]
                else:
                    neighbours = (seg[r, c + 1], seg[r + 1, c], seg[r + 1, c + 1])
                    out[r, c] = any(seg[r, c] != n for n in neighbours)
        return out

    gb, pb = bmap(gt), bmap(pred)
    if not gb.any() and not pb.any():
        return 1.0
    if not gb.any() or not pb.any():
        return 0.0
    near_g = distance_transform_edt(~gb) <= radius
    near_p = distance_transform_edt(~pb) <= radius
    p = (pb & near_g).sum() / pb.sum()
    r = (gb & near_p).sum() / gb.sum()
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


@pytest.mark.parametrize("seed", range(4))
def test_f_measure_matches_brute_force_on_random_blobs(seed):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    shape = (40, 56)
    gt = gaussian_filter(rng.normal(size=shape), 3) > 0
    pred = gaussian_filter(rng.normal(size=shape) * 0.5 + gt, 2) > 0.4
    for th in (0.008, 0.05, 3):
        radius = jf.tolerance_pixels(shape, th)
        assert jf.f_measure(gt, pred, th) == pytest.approx(_brute_f(gt, pred, radius))


def test_statistics_mean_recall_decay():
    v = np.arange(8) / 7
    mean, recall, decay = jf.statistics(v)
    assert mean == pytest.approx(0.5)
    assert recall == pytest.approx(0.5)  # 4/7, 5/7, 6/7, 1 exceed 0.5
    # bins of 8 values: [0:3], [2:5], [4:6], [5:8]; decay = mean of the first - mean of the last
    assert decay == pytest.approx((0 + 1 + 2) / 21 - (5 + 6 + 7) / 21)
    assert jf.statistics([1, 1, 1, 0, 0, 0, 0, 0])[2] == pytest.approx(1.0)


def test_evaluate_sequence_several_objects_excludes_first_and_last():
    t, shape = 6, (32, 32)
    gt = np.zeros((t, *shape), np.uint8)
    gt[:, 2:10, 2:10] = 1
    gt[:, 20:30, 15:25] = 2
    gt[3, 20:30, 15:25] = 0  # object 2 absent from frame 3: empty union there
    gt[:, 0, 0] = 255  # void pixel: ignored (treated as background, as the official loader does)
    pred = np.where(gt == 255, 0, gt).astype(np.uint8)
    pred[0] = 0  # first and last frames are wrong but excluded
    pred[-1] = 0
    pred[2][pred[2] == 1] = 0  # object 1 missed in frame 2 of the 4 evaluated frames
    res = jf.evaluate_sequence(gt, pred)
    assert set(res) == {1, 2}
    assert res[1]["J"] == [1.0, 0.0, 1.0, 1.0]
    assert res[1]["F"] == [1.0, 0.0, 1.0, 1.0]
    assert res[1]["J-Mean"] == pytest.approx(0.75)
    assert res[1]["J-Recall"] == pytest.approx(0.75)
    assert res[2]["J"] == [1.0] * 4 and res[2]["F-Mean"] == 1.0
    table = jf.summarize({"seq": res})
    assert table["J-Mean"] == pytest.approx((0.75 + 1) / 2)
    assert table["J&F-Mean"] == pytest.approx((table["J-Mean"] + table["F-Mean"]) / 2)


def test_bad_shapes_raise_one_line():
    with pytest.raises(ValueError, match="same shape|one shape"):
        jf.jaccard(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="at least 3 frames"):
        jf.evaluate_sequence(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
