"""View invariance on in-memory synthetic takes: what hard positive mining (``data.positive=other_camera``) aims for.

For every instant of a take seen by two cameras, is the nearest frame of the other camera the same instant? Measured
on the frame features of a backbone over several held-out takes (:func:`cross_camera_scores`):

- ``top1`` / ``top1_near``: camera-0 frame retrieves the exact instant (within +-1 frame) among camera-1 frames of all
  takes;
- ``instant_auc``: the probability that a same-instant cross-camera pair is more similar than a cross-camera pair of
  the same take at instants more than 2 frames apart. It uses every pair, so it is far less noisy than top-1 on a
  small set and is the figure the hard-positive benchmark and test compare.

Also :func:`precise_bn`, which re-estimates BN statistics on the evaluation
frames: a few dozen steps with 8-sample BN leave running statistics that collapse eval-mode features (measured: feature
norm 30 in train mode, 255 in eval mode, all cosines > 0.94), which would hide any difference between encoders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_video.eval.common import recompute_bn_stats
from ssl_video.normalise import normalise
from ssl_video.synthetic.batches import take


def _frames(seeds: list[int], cameras: tuple[int, int], crop: int) -> torch.Tensor:
    """``(2, len(seeds) * T, 3, crop, crop)`` normalised frames of the two cameras, takes one after the other."""
    out = []
    for seed in seeds:
        frames = take(seed)[list(cameras)]
        small = F.interpolate(frames.flatten(0, 1).float(), size=(crop, crop), mode="bilinear", antialias=True)
        out.append(normalise(small.round().clamp(0, 255).to(torch.uint8)).view(2, frames.shape[1], 3, crop, crop))
    return torch.cat(out, dim=1)


def precise_bn(backbone: nn.Module, seeds: list[int], crop: int = 32, chunk: int = 48) -> None:
    """Replace every BN's running statistics by their average over the evaluation frames (then eval mode)."""
    recompute_bn_stats(backbone, _frames(seeds, (0, 1), crop).flatten(0, 1).split(chunk))


@torch.no_grad()
def cross_camera_scores(backbone: nn.Module, seeds: list[int], crop: int = 32,
                        cameras: tuple[int, int] = (0, 1)) -> dict[str, float]:
    """``top1``, ``top1_near`` and ``instant_auc`` (module docstring) of ``backbone``'s features in eval mode."""
    backbone.eval()
    x = _frames(seeds, cameras, crop)
    f = F.normalize(backbone(x.flatten(0, 1)), dim=1).view(2, x.shape[1], -1)
    sim = f[0] @ f[1].T
    t = take(seeds[0]).shape[1]
    take_id = torch.arange(len(seeds)).repeat_interleave(t)
    instant = torch.arange(t).repeat(len(seeds))
    same_take = take_id[:, None] == take_id[None, :]
    gap = (instant[:, None] - instant[None, :]).abs()
    nearest = sim.argmax(dim=1)
    hit = same_take[torch.arange(len(nearest)), nearest]
    top1 = (hit & (nearest == torch.arange(len(nearest)))).float().mean()
    top1_near = (hit & (gap[torch.arange(len(nearest)), nearest] <= 1)).float().mean()
    pos = sim.diagonal()  # same take, same instant
    # for each query: the fraction of its far same-take candidates that the same-instant pair beats (ties count half)
    far = same_take & (gap > 2)
    beats = (pos[:, None] > sim).float() + 0.5 * (pos[:, None] == sim).float()
    auc = ((beats * far).sum(1) / far.sum(1)).mean()
    return {"top1": float(top1), "top1_near": float(top1_near), "instant_auc": float(auc)}
