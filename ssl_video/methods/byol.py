"""BYOL (Grill et al. 2020): online encoder + projector + predictor regress an EMA target's projections.

``loss = sum over the two view orders of mean(2 - 2 cos(p_online(view a), z_target(view b)))``. The target is an EMA
of the online backbone and projector with BYOL's cosine schedule, applied after each optimiser step:
``tau(k) = tau_final - (tau_final - tau_base) * (cos(pi k / K) + 1) / 2`` with ``k`` the step (from 1) and
``K = train.steps``. ``z_std`` (std of the normalised online projections) is logged: it drops towards 0 when BYOL
collapses (the judo study saw it happen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_video.methods.two_view import TwoViewConfig, TwoViewMethod
from ssl_video.models.heads import MLP


@dataclass
class BYOLConfig(TwoViewConfig):
    name: str = "byol"
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    pred_hidden_dim: int = 4096
    tau_base: float = 0.99  # the paper: 0.996 for long runs
    tau_final: float = 1.0


def cosine_tau(step: int, total: int, base: float, final: float = 1.0) -> float:
    """BYOL's target momentum at optimiser step ``step`` of ``total``."""
    progress = min(max(step, 0), total) / max(total, 1)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


def regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``mean(2 - 2 cos(p, z))`` with ``z`` detached (the target gets no gradient)."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


class BYOL(TwoViewMethod):
    config_class = BYOLConfig

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        m = cfg.method
        self.projector = MLP(self.feat_dim, m.proj_hidden_dim, m.proj_dim)
        self.predictor = MLP(m.proj_dim, m.pred_hidden_dim, m.proj_dim)
        self.target_backbone = self.momentum_copy(self.backbone)
        self.target_projector = self.momentum_copy(self.projector)
        self.ema_momentum = m.tau_base

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x0, x1 = self.views(batch)
        x = torch.cat([x0, x1])
        z = self.projector(self.features(self.backbone, x))
        p0, p1 = self.predictor(z).chunk(2)
        with torch.no_grad():
            t0, t1 = self.target_projector(self.features(self.target_backbone, x)).chunk(2)
        loss = regression_loss(p0, t1) + regression_loss(p1, t0)
        tau = torch.tensor(self.ema_momentum)
        return {"loss": loss, "tau": tau} | self.extra_logs(batch, z.chunk(2)[0])

    def momentum_at(self, step: int) -> float:
        """BYOL's cosine schedule (the base updates the target with it after every optimiser step)."""
        m = self.cfg.method
        return cosine_tau(step, self.cfg.train.steps, m.tau_base, m.tau_final)
