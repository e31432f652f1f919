"""The interface every method implements (see docs/design.md, "Method interface", and docs/extending.md).

A method is a :class:`Method` subclass plus a :class:`MethodConfig` subclass (its ``method`` section, validated when
the config is loaded) and a YAML file in ``ssl_video/configs/method/``; ``ssl_video.methods.registry.METHODS`` lists
it by name.

Momentum (EMA) encoders, solo-learn style: a subclass makes a frozen copy with :meth:`Method.momentum_copy`, which
records the ``(online, target)`` pair in ``momentum_pairs``; after every optimiser step the base updates every pair
once with the coefficient :meth:`Method.momentum_at` gives (``method.momentum`` by default; BYOL overrides it with
its cosine schedule). No subclass writes its own update.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MethodConfig:
    """Fields every method has; each method subclasses this for its ``method`` section."""

    name: str = "walk_superpixel"


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online`` for every parameter (buffers are the target's own)."""
    t_params, o_params = list(target.parameters()), list(online.parameters())
    torch._foreach_lerp_(t_params, [p.detach() for p in o_params], 1.0 - momentum)


class Method(nn.Module):
    """A self-supervised method: a backbone plus whatever heads, targets and queues it needs.

    Subclasses set ``self.backbone`` (what ``tools/export_backbone.py`` saves) and implement ``forward``.
    ``forward(batch)`` takes the batch dict of docs/design.md and returns ``{"loss": scalar, ...}``; every other
    scalar entry is logged to TensorBoard under ``Method/<key>`` by the trainer.
    """

    backbone: nn.Module
    config_class: type[MethodConfig] = MethodConfig  # the dataclass of this method's ``method`` section

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        # (online, target) EMA pairs, filled by momentum_copy and updated by on_train_step_end; a plain list (not a
        # ModuleList): both modules are already registered as attributes of the subclass
        self.momentum_pairs: list[tuple[nn.Module, nn.Module]] = []
        self.ema_momentum: float | None = None  # the coefficient of the last update (for logging)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def momentum_copy(self, online: nn.Module) -> nn.Module:
        """A frozen copy of ``online`` (no gradients), updated as an EMA of it after every optimiser step."""
        target = copy.deepcopy(online)
        for p in target.parameters():
            p.requires_grad_(False)
        self.momentum_pairs.append((online, target))
        return target

    def momentum_at(self, step: int) -> float:
        """EMA coefficient of the update after optimiser step ``step`` (from 1): ``method.momentum`` by default."""
        return float(self.cfg.method.momentum)

    @torch.no_grad()
    def on_train_step_end(self, step: int) -> None:
        """Called after every optimiser step (``step`` counts from 1): updates the momentum pairs.

        Subclasses that extend it (queues, schedules) call ``super().on_train_step_end(step)``.
        """
        if self.momentum_pairs:
            self.ema_momentum = self.momentum_at(step)
            for online, target in self.momentum_pairs:
                ema_update(target, online, self.ema_momentum)

    @torch.no_grad()
    def visualize(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Images for TensorBoard, ``{tag: (3, H, W) float in [0, 1]}``; called every ``train.image_every``."""
        return {}
