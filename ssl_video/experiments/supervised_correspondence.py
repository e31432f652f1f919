"""A label-trained reference encoder for the DAVIS evaluation: ``resnet18_s8`` taught correspondence with masks.

Why it exists: an evaluation that cannot tell a trained encoder from a random one measures nothing. The hand-made
colour oracle of the tests checks propagation, not the encoder path (checkpoint -> backbone -> stage -> BN ->
features); this encoder is a real trained network going through that path. On the synthetic set of
``tools/make_synthetic.py`` the self-supervised walks do not leave random init's ±0.05 band in the few hundred steps a
CPU affords (``python -m ssl_video.experiments.davis_training``), while this one, trained on other synthetic
sequences, does in about
100 steps. It reads instance masks, so it is the evaluation's check and an upper reference for the walk curves, not a
pretraining method.

Objective: supervised contrastive loss (Khosla et al. 2020) over the feature cells of two frames of one sequence.

- a pair: frames ``a`` and ``b`` of one training sequence with ``|a - b| <= max_gap``;
- cell labels: the majority instance id of each ``stride``² block of the mask (ties: the smaller id), on the grid the
  stride-8 backbone produces (a partial last block counts its own pixels);
- features: ``stage`` map (``layer3``, as the evaluation reads it), L2-normalised per cell;
- for every cell ``i`` of ``a`` whose label occurs in ``b``:
  ``loss_i = -mean_{j in b, y_j = y_i} log softmax_j(f_i . f_j / tau)`` (softmax over all cells of ``b``);
  the loss is the mean over those cells, then over the pairs of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ssl_video.normalise import normalise


def cell_labels(masks: torch.Tensor, stride: int = 8) -> torch.Tensor:
    """``(N, H, W)`` integer masks -> ``(N, ceil(H/stride), ceil(W/stride))`` majority label per cell."""
    n_labels = int(masks.max()) + 1
    onehot = F.one_hot(masks.long(), n_labels).permute(0, 3, 1, 2).float()
    counts = F.avg_pool2d(onehot, stride, ceil_mode=True, divisor_override=1)
    return counts.argmax(1)  # argmax returns the first maximum: ties go to the smaller id


def dense_supcon_loss(feats_a: torch.Tensor, feats_b: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor,
                      tau: float = 0.1) -> torch.Tensor:
    """Mean over pairs of the supervised contrastive loss of ``a``'s cells against ``b``'s (module docstring).

    ``feats_*`` ``(N, C, h, w)`` L2-normalised along C; ``labels_*`` ``(N, h, w)`` integers.
    """
    fa, fb = feats_a.flatten(2), feats_b.flatten(2)  # (N, C, L)
    ya, yb = labels_a.flatten(1), labels_b.flatten(1)  # (N, L)
    log_p = torch.einsum("nci,ncj->nij", fa, fb).div(tau).log_softmax(-1)  # (N, La, Lb)
    pos = (ya[:, :, None] == yb[:, None, :]).float()
    n_pos = pos.sum(-1)
    per_cell = -(log_p * pos).sum(-1) / n_pos.clamp(min=1)
    valid = n_pos > 0
    per_pair = (per_cell * valid).sum(-1) / valid.sum(-1).clamp(min=1)
    return per_pair.mean()


def sample_pairs(rng: np.random.Generator, sequences: Sequence[tuple[np.ndarray, np.ndarray]], batch: int,
                 max_gap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` pairs from ``(frames (T,H,W,3) uint8, masks (T,H,W))`` sequences of one size.

    Returns frames ``(2, batch, 3, H, W)`` normalised and masks ``(2, batch, H, W)``; index 0 is ``a``, 1 is ``b``.
    """
    frames, masks = [], []
    for _ in range(batch):
        seq_frames, seq_masks = sequences[int(rng.integers(len(sequences)))]
        a = int(rng.integers(len(seq_frames)))
        b = int(np.clip(a + rng.integers(-max_gap, max_gap + 1), 0, len(seq_frames) - 1))
        frames.append(np.stack([seq_frames[a], seq_frames[b]]))
        masks.append(np.stack([seq_masks[a], seq_masks[b]]))
    x = normalise(torch.from_numpy(np.stack(frames, 1)).permute(0, 1, 4, 2, 3))
    return x, torch.from_numpy(np.stack(masks, 1).astype(np.int64))


def train_reference(backbone: nn.Module, sequences: Sequence[tuple[np.ndarray, np.ndarray]], steps: int, *,
                    lr: float = 1e-3, batch: int = 2, tau: float = 0.1, max_gap: int = 8, stage: str = "layer3",
                    stride: int = 8, seed: int = 0, device: torch.device | str = "cpu", show_progress: bool = True,
                    after_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``backbone`` (a :class:`ssl_video.models.backbones.ResNet18`) in place with Adam; returns the losses.

    ``after_step(step, loss)`` is called after every step (1-based), e.g. to evaluate; it may switch the backbone to
    eval mode, training switches it back.
    """
    if steps < 0 or batch < 1 or max_gap < 0 or tau <= 0 or not sequences:
        raise ValueError(f"need steps >= 0, batch >= 1, max_gap >= 0, tau > 0 and sequences; got {steps=}, "
                         f"{batch=}, {max_gap=}, {tau=}, {len(sequences)} sequences")
    rng = np.random.default_rng(seed)
    backbone.to(device)
    opt = torch.optim.Adam(backbone.parameters(), lr=lr)
    losses = []
    for step in tqdm(range(1, steps + 1), desc="supervised reference", disable=not show_progress):
        backbone.train()
        x, masks = sample_pairs(rng, sequences, batch, max_gap)
        feats = F.normalize(backbone.forward_until(x.flatten(0, 1).to(device), stage), dim=1)
        labels = cell_labels(masks.flatten(0, 1), stride).to(device)
        if labels.shape[-2:] != feats.shape[-2:]:
            raise ValueError(f"{stage} map {tuple(feats.shape[-2:])} is not the {stride}-pixel cell grid "
                             f"{tuple(labels.shape[-2:])}: use a stride-{stride} backbone (resnet18_s8)")
        fa, fb = feats.unflatten(0, (2, batch))
        ya, yb = labels.unflatten(0, (2, batch))
        loss = dense_supcon_loss(fa, fb, ya, yb, tau)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"supervised reference loss is {loss.item()} after {len(losses)} steps")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if after_step is not None:
            after_step(step, losses[-1])
    backbone.eval()
    return losses
