"""Node extraction for the walk: patch grids with jitter, area-weighted superpixel pooling vs a dense computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_video.methods.walk_nodes import (
    cell_index,
    extract_patches,
    patch_boxes,
    patch_grid,
    superpixel_pool,
)


def test_patch_grid_reference_layout():
    assert patch_grid(256, 256, 64, 32).shape == (49, 2)  # videowalk: 7x7 nodes on 256² frames
    assert patch_grid(128, 128, 32, 16).shape == (49, 2)
    assert patch_grid(128, 128, 64, 32).shape == (9, 2)
    with pytest.raises(ValueError, match="patch size 64 does not fit"):
        patch_grid(48, 48, 64, 32)


def test_unjittered_patches_are_exact_windows():
    frames = torch.randn(2, 3, 40, 56)
    patches = extract_patches(frames, size=16, stride=8, jitter=False)
    corners = patch_grid(40, 56, 16, 8)
    assert patches.shape == (2, len(corners), 3, 16, 16)
    for p, (y, x) in enumerate(corners.tolist()):
        torch.testing.assert_close(patches[:, p], frames[:, :, y : y + 16, x : x + 16], atol=1e-5, rtol=0)


def test_jittered_boxes_stay_inside_their_window_with_the_requested_area():
    torch.manual_seed(0)
    boxes = patch_boxes(3, 128, 128, 32, 16, jitter=True, scale=(0.7, 0.9), ratio=(0.75, 4 / 3))
    corners = patch_grid(128, 128, 32, 16).float().repeat(3, 1)
    x1, y1, x2, y2 = boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    assert (x1 >= corners[:, 1] - 1e-4).all() and (x2 <= corners[:, 1] + 32 + 1e-4).all()
    assert (y1 >= corners[:, 0] - 1e-4).all() and (y2 <= corners[:, 0] + 32 + 1e-4).all()
    area = (x2 - x1) * (y2 - y1) / 32**2
    assert (area <= 0.9 + 1e-4).all() and (area >= 0.7 * 0.75 - 1e-4).all()  # clamping can only shrink the box
    assert area.std() > 0.01  # every patch gets its own jitter
    assert torch.equal(boxes[:, 0], torch.arange(3).float().repeat_interleave(49))


def _dense_pool(feats: torch.Tensor, labels: torch.Tensor, M: int):
    """Independent dense version of eq. 3.5: one-hot at pixel level, average-pooled to cell coverage fractions."""
    N, D, h, w = feats.shape
    onehot = F.one_hot(labels, M).permute(0, 3, 1, 2).double()  # (N, M, H, W)
    cover = F.avg_pool2d(onehot, kernel_size=labels.shape[-1] // w)  # fraction of each cell covered: (N, M, h, w)
    num = torch.einsum("nmhw,ndhw->nmd", cover, feats.double())
    den = cover.sum(dim=(-2, -1))
    emb = torch.where(den[..., None] > 0, num / den.clamp_min(1e-12)[..., None], torch.zeros_like(num))
    return emb, onehot.sum(dim=(-2, -1))


def test_superpixel_pool_equals_dense_computation():
    torch.manual_seed(0)
    N, D, h, w, s, M = 3, 5, 4, 6, 8, 9
    feats = torch.randn(N, D, h, w)
    # blocky random labels (superpixel-like, crossing cell borders) plus salt noise; label 8 absent in frame 1
    coarse = torch.randint(0, 8, (N, 1, 2 * h, 2 * w)).float()
    labels = F.interpolate(coarse, size=(h * s, w * s), mode="nearest")[:, 0].long()
    labels = labels.roll(shifts=(3, 5), dims=(1, 2))
    noise = torch.rand(labels.shape) < 0.05
    labels = torch.where(noise, torch.randint(0, M, labels.shape), labels)
    labels[1][labels[1] == 8] = 0
    emb, area = superpixel_pool(feats, labels, num_nodes=M)
    ref_emb, ref_area = _dense_pool(feats, labels, M)
    torch.testing.assert_close(emb.double(), ref_emb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(area.double(), ref_area)
    assert area[1, 8] == 0 and torch.equal(emb[1, 8], torch.zeros(D))


def test_superpixel_smaller_than_a_cell_gets_that_cells_feature():
    feats = torch.randn(1, 4, 4, 4)
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[0, 13, 21] = 1  # one pixel, inside cell (1, 2)
    emb, area = superpixel_pool(feats, labels)
    assert area[0, 1] == 1
    torch.testing.assert_close(emb[0, 1], feats[0, :, 1, 2])


def test_coverage_fractions_of_every_cell_sum_to_one_when_sizes_do_not_divide():
    cell = cell_index(30, 22, 4, 3)
    assert cell.min() == 0 and cell.max() == 11
    feats = torch.ones(1, 2, 4, 3)
    labels = torch.randint(0, 5, (1, 30, 22))
    emb, area = superpixel_pool(feats, labels)
    assert area.sum() == 30 * 22
    torch.testing.assert_close(emb[area > 0], torch.ones(int((area > 0).sum()), 2))  # a mean of ones is one


def test_superpixel_pool_gradient_matches_finite_differences():
    torch.manual_seed(1)
    feats = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (2, 8, 8))
    assert torch.autograd.gradcheck(lambda f: superpixel_pool(f, labels, 4)[0], (feats,))


def test_labels_out_of_range_raise_one_line():
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        superpixel_pool(torch.randn(1, 2, 2, 2), torch.full((1, 8, 8), 3), num_nodes=3)
