"""The interface every method implements (see docs/design.md, "Method interface")."""

from __future__ import annotations

import torch
from torch import nn


class Method(nn.Module):
    """A self-supervised method: a backbone plus whatever heads, targets and queues it needs.

    Subclasses set ``self.backbone`` (what ``tools/export_backbone.py`` saves) and implement ``forward``.
    ``forward(batch)`` takes the batch dict of docs/design.md and returns ``{"loss": scalar, ...}``; every other
    scalar entry is logged to TensorBoard under ``Method/<key>`` by the trainer.
    """

    backbone: nn.Module

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def on_train_step_end(self, step: int) -> None:
        """Called after every optimiser step (momentum encoders, queues). ``step`` counts from 1."""

    @torch.no_grad()
    def visualize(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Images for TensorBoard, ``{tag: (3, H, W) float in [0, 1]}``; called every ``train.image_every``."""
        return {}
