"""Cross-camera view-invariance scores: oracle and random features, precise BN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_video.eval.view_invariance import cross_camera_scores, precise_bn, take

SEEDS = [100, 101]


class InstantCode(nn.Module):
    """Features that name the (take, instant) of each frame: the input is camera 0's frames then camera 1's."""

    def __init__(self, noise: float = 0.0, camera_shift: int = 0) -> None:
        super().__init__()
        self.noise, self.shift = noise, camera_shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0] // 2
        codes = torch.eye(n)
        cam1 = codes.roll(self.shift, dims=0)  # shift: camera 1's frame i looks like instant i - shift
        out = torch.cat([codes, cam1]) + self.noise * torch.randn(2 * n, n, generator=torch.Generator().manual_seed(0))
        return out


def test_an_instant_code_is_perfect():
    scores = cross_camera_scores(InstantCode(), SEEDS)
    assert scores == {"top1": 1.0, "top1_near": 1.0, "instant_auc": 1.0}


def test_one_frame_off_counts_as_near_not_exact():
    scores = cross_camera_scores(InstantCode(camera_shift=1), SEEDS)
    t = take(SEEDS[0]).shape[1]
    # every query's nearest is the next instant, except each take's last frame, whose match is in the next take
    assert scores["top1"] == 0.0
    assert scores["top1_near"] == pytest.approx((len(SEEDS) * t - len(SEEDS)) / (len(SEEDS) * t))


def test_random_features_are_at_chance():
    class Random(nn.Module):
        def forward(self, x):
            return torch.randn(x.shape[0], 256, generator=torch.Generator().manual_seed(1))

    scores = cross_camera_scores(Random(), SEEDS)
    assert abs(scores["instant_auc"] - 0.5) < 0.1 and scores["top1"] < 0.1


def test_precise_bn_replaces_running_statistics_by_the_evaluation_average():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    net[1].running_mean.fill_(100.0)
    precise_bn(net, SEEDS, crop=16, chunk=12)  # 96 frames: 8 equal chunks
    from ssl_video.eval.view_invariance import _frames

    with torch.no_grad():
        y = net[0](_frames(SEEDS, (0, 1), 16).flatten(0, 1))
    # the cumulative average of chunk means equals the overall mean when chunks are equal-sized
    torch.testing.assert_close(net[1].running_mean, y.mean((0, 2, 3)), atol=1e-4, rtol=1e-4)
    assert not net.training and net[1].momentum == 0.1
