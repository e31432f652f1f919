"""The reference CRW step of tools/gpu_report.py: same loss as ours where they should agree, trains, right shapes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssl_video.experiments.videowalk_crw import VideowalkCRW, crw_loss, grid_patches, stochastic
from ssl_video.methods.walk import walk_loss


def test_loss_without_dropout_equals_ours_from_the_two_frame_cycle_on():
    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(3, 16, 5, 9, generator=gen), dim=1)  # (B, C, T, N)
    ref, acc = crw_loss(q, temperature=0.07)
    ours = walk_loss(q.permute(0, 2, 3, 1), torch.ones(3, 5, 9, dtype=torch.bool), 0.07, shortest_cycle=2)
    torch.testing.assert_close(ref[0], ours.loss, atol=1e-5, rtol=1e-5)  # the reference returns shape (1,)
    assert sorted(acc) == sorted(ours.acc) == [2, 3, 4]
    for k in acc:
        torch.testing.assert_close(acc[k], ours.acc[k])


def test_edge_dropout_is_written_into_the_affinity_so_backward_drops_include_forward_drops():
    torch.manual_seed(0)
    affinity = torch.randn(2, 6, 6)
    forward = stochastic(affinity, 0.1, edge_dropout=0.3)
    dropped = affinity == -1e20
    assert 0 < dropped.float().mean() < 1
    torch.testing.assert_close(forward.sum(-1), torch.ones(2, 6))
    assert torch.all(forward[dropped & ~dropped.all(-1, keepdim=True)] == 0)  # a row dropped whole is uniform
    backward = stochastic(affinity.transpose(-1, -2), 0.1, edge_dropout=0.0)
    back_dropped = dropped.transpose(-1, -2)
    assert torch.all(backward[back_dropped & ~back_dropped.all(-1, keepdim=True)] == 0)


def test_grid_patches_are_node_major_and_cut_where_they_should():
    clips = torch.arange(2 * 3 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 3, 32, 32)
    patches = grid_patches(clips, size=16, stride=8)  # 3 x 3 = 9 patches per frame
    assert patches.shape == (2, 3, 27, 16, 16)
    node = patches.view(2, 3, 9, 3, 16, 16)
    assert torch.equal(node[1, 2, 5], clips[1, 2, :, 8:24, 16:32])  # row 1, column 2 of the grid


def test_step_trains_the_encoder_at_output_stride_8():
    torch.manual_seed(0)
    model = VideowalkCRW(edge_dropout=0.1)
    x = grid_patches(torch.randn(2, 3, 3, 64, 64), size=32, stride=16)  # 3 x 3 nodes of 32 px
    assert model.encoder(x.view(2, 3, 9, 3, 32, 32)[:, :, 0].transpose(1, 2)).shape == (2, 512, 3, 4, 4)
    out = model(x)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and 0 <= float(out["walk_acc"]) <= 1
    conv1 = model.encoder.net[0]
    assert conv1.padding_mode == "reflect" and conv1.weight.grad.abs().sum() > 0
