"""The judo probe diagnosis: the pixel baseline is the pooled frame, and many probes share one feature pass."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_video.eval import online_action as oa
from ssl_video.experiments import judo_probe_diagnosis as diag


def test_pixel_encoder_is_the_average_pooled_frame():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = diag.PixelEncoder(2)(x)
    assert out.shape == (2, 12)
    # independent: mean of each 4x4 block, channel-major
    blocks = x.view(2, 3, 2, 4, 2, 4).mean((3, 5)).flatten(1)
    torch.testing.assert_close(out, blocks)


def test_random_encoders_take_the_stem_of_the_encoders_they_are_compared_with():
    plain, cifar = diag.build_encoder("random:3"), diag.build_encoder("random:3:cifar")
    assert plain.conv1.kernel_size == (7, 7) and cifar.conv1.kernel_size == (3, 3)
    again = diag.build_encoder("random:3:cifar")  # the seed fixes the weights
    torch.testing.assert_close(cifar.layer4[0].conv1.weight, again.layer4[0].conv1.weight)


class _Counting(nn.Module):
    out_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.frames_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.frames_seen += len(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def test_probes_of_one_encoder_share_one_pass_over_the_frames():
    rng = np.random.default_rng(0)
    clips = [oa.Clip("t", 0, torch.from_numpy(rng.integers(0, 255, (12, 3, 8, 8), dtype=np.uint8)),
                     np.array([0] * 6 + [1] * 6)) for _ in range(2)]
    encoder = _Counting()
    with diag.cached_features():
        for seed in (0, 1):
            probe = oa.Probe(encoder, "gru", 2, hidden=4)
            oa.train_probe(probe, clips, diag.probe_config(2, 2, 0.05, [1], 8, seed), torch.device("cpu"),
                           show_progress=False)
    assert encoder.frames_seen == 24  # every frame of both clips once, not once per probe
    assert oa._Features.__name__ == "_Features"  # restored after the block


def test_each_row_carries_the_majority_class_rate_of_its_test_windows():
    """The rate of always answering the commonest class, counted independently over the probe's test windows."""
    import argparse

    rng = np.random.default_rng(1)
    labels = [np.array([0] * 20 + [2] * 12), np.array([1] * 16 + [0] * 16)]
    clips = [oa.Clip("t", i, torch.from_numpy(rng.integers(0, 255, (32, 3, 8, 8), dtype=np.uint8)), lab)
             for i, lab in enumerate(labels)]
    args = argparse.Namespace(probe_seeds=[0], steps=2, batch=2, lr=0.05, milestones=[1], crop=8, centre=False)
    with diag.cached_features():
        [row] = diag._probes("test", "stored", _Counting(), clips, clips, 3, args)
    cfg = diag.probe_config(2, 2, 0.05, [1], 8, 0)
    overlap = oa.resolve_overlap(cfg.chunk_len, cfg.overlap)
    windows = [oa.chunk_label(lab[s : s + cfg.chunk_len]) for lab in labels
               for s in oa.window_starts(len(lab), cfg.chunk_len, overlap)]
    assert row["majority"] == round(100 * max(np.bincount(windows)) / len(windows), 2)
    assert 0 < row["majority"] < 100
