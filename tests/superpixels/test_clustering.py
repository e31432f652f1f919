"""slic_fast's clustering core against an independent computation; the grid; the benchmarks' helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ssl_video.superpixels.segment as seg


def _frame(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth colour blobs with noise: clusters that move during the iterations."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    img = np.stack([np.sin(6 * yy + c) * np.cos(5 * xx - c) for c in (0.0, 1.3, 2.1)], -1) * 90 + 128
    return torch.from_numpy(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("n_segments", [12, 30])
def test_grid_gives_about_n_segments_and_near_square_cells(n_segments):
    rows, cols, step = seg.grid(256, 256, n_segments)
    assert abs(rows * cols - n_segments) <= max(2, n_segments // 10)
    assert abs(rows - cols) <= 1
    assert step == pytest.approx((256 * 256 / (rows * cols)) ** 0.5)
    rows, cols, _ = seg.grid(120, 360, 27)  # wide frames: more columns than rows, cells near square
    assert (rows, cols) == (3, 9)


def test_assignment_is_the_nearest_of_the_nine_neighbouring_centres_and_centres_are_means():
    h, w, m = 37, 45, 10.0  # the frame does not divide into whole cells: padding must not count
    rgb = _frame(h, w)[None]
    rows, cols, step = seg.grid(h, w, 12)
    ch, cw = -(-h // rows), -(-w // cols)
    feats = seg._features(rgb, m, rows, cols, step)
    layout = seg._layout(h, w, rows, cols, step, 1, feats.device)
    assign, centres = seg._cluster(feats, 1, rows, cols, layout, 60, (ch, cw), subsample=1, tol=0.0)
    labels = assign.view(rows, cols, ch, cw).permute(0, 2, 1, 3).reshape(rows * ch, cols * cw)[:h, :w].numpy()
    # independent: Lab from the tested rgb_to_lab, float64 L1 distances, each pixel against its 3x3 cells' centres
    lab = seg.rgb_to_lab(rgb[0]).double().numpy() / m
    yy, xx = np.mgrid[:h, :w]
    feat = np.concatenate([lab, yy[..., None] / step, xx[..., None] / step], -1)
    c = centres[0].double().numpy()
    r, q = yy // ch, xx // cw
    best = np.full((h, w), np.inf)
    ref = np.zeros((h, w), np.int64)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            rr, qq = r + dr, q + dc
            ok = (rr >= 0) & (rr < rows) & (qq >= 0) & (qq < cols)
            k = np.where(ok, rr * cols + qq, 0)
            d = np.where(ok, np.abs(feat - c[k]).sum(-1), np.inf)  # L1
            ref = np.where(d < best, k, ref)
            best = np.minimum(d, best)
    assert (labels == ref).mean() > 0.998  # float32 vs float64 may flip near-ties only
    # converged (tol 0, 60 passes at most): each centre is the mean of the pixels it holds
    for k in np.unique(labels):
        np.testing.assert_allclose(feat[labels == k].mean(0), c[k], atol=2e-4)


def test_cached_tables_are_per_shape_and_batch():
    a = seg._layout(64, 64, 4, 4, 16.0, 1, torch.device("cpu"))
    b = seg._layout(64, 64, 4, 4, 16.0, 3, torch.device("cpu"))
    assert a[1].shape == (16, 9) and b[1].shape == (48, 9)
    assert torch.equal(b[1][16:32] - 17, a[1])  # frame 1's centres are numbered after frame 0's K+1 slots
    assert seg._layout(64, 64, 4, 4, 16.0, 1, torch.device("cpu")) is a


def test_benchmark_composite_ground_truth_matches_the_pixels():
    from benchmarks.superpixels import composite

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (9, 48, 48, 3), dtype=np.uint8)
    out, masks = composite(frames)
    assert out.shape == frames.shape and masks.shape == frames.shape[:3]
    for i in range(len(frames)):
        for k in np.unique(masks[i]):
            src = frames[(i + 7 * k) % len(frames)]
            assert np.array_equal(out[i][masks[i] == k], src[masks[i] == k])
    assert any(len(np.unique(mk)) > 1 for mk in masks)


def test_fast_slic_is_optional(monkeypatch):
    import benchmarks.superpixels as bench

    monkeypatch.setattr(bench, "fast_slic_class", lambda: None)
    names = list(bench.algorithms(10, 30.0, 4))
    assert "fast-slic" not in names and "skimage slic" in names and "slic_fast batch 4" in names


@pytest.mark.parametrize("shape,n_segments", [((1, 8, 8, 3), 100), ((2, 5, 300, 3), 10), ((1, 1, 1, 3), 4),
                                              ((3, 64, 48, 3), 1), ((2, 33, 97, 3), 7)])
def test_odd_shapes_give_contiguous_labels(shape, n_segments):
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for kw in ({}, {"enforce_connectivity": False}, {"sigma": 1.0}, {"downsample": 1, "subsample": 1, "tol": 0.0},
               {"backend": "torch"}, {"backend": "torch", "enforce_connectivity": False}):
        out = seg.slic_fast(x, n_segments=n_segments, **kw)
        assert out.shape == shape[:3]
        for frame in out:
            assert torch.equal(torch.unique(frame), torch.arange(int(frame.max()) + 1))
    rows, cols, _ = seg.grid(shape[1], shape[2], n_segments)  # at most one cluster per centre before connectivity
    assert int(seg.slic_fast(x, n_segments=n_segments, enforce_connectivity=False).max()) < rows * cols
