"""SimSiam (Chen & He 2021): siamese encoder, predictor, stop-gradient; no negatives, no momentum encoder.

``loss = -(cos(p0, sg(z1)) + cos(p1, sg(z0))) / 2`` (minimum -1). ``z_std``, the std of the L2-normalised
projections, is the paper's collapse monitor: about ``1/sqrt(proj_dim)`` when healthy, 0 when collapsed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_video.methods.two_view import TwoViewConfig, TwoViewMethod
from ssl_video.models.heads import MLP


@dataclass
class SimSiamConfig(TwoViewConfig):
    name: str = "simsiam"
    proj_hidden_dim: int = 2048
    proj_dim: int = 2048
    pred_hidden_dim: int = 512  # the bottleneck of the predictor


class SimSiam(TwoViewMethod):
    config_class = SimSiamConfig

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        m = cfg.method
        self.projector = MLP(self.feat_dim, m.proj_hidden_dim, m.proj_dim, num_layers=3, last_norm=True)
        self.predictor = MLP(m.proj_dim, m.pred_hidden_dim, m.proj_dim)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x0, x1 = self.views(batch)
        z = self.projector(self.features(self.backbone, torch.cat([x0, x1])))
        z0, z1 = z.chunk(2)
        p0, p1 = self.predictor(z).chunk(2)
        cos01 = F.cosine_similarity(p0, z1.detach(), dim=1).mean()
        cos10 = F.cosine_similarity(p1, z0.detach(), dim=1).mean()
        return {"loss": -(cos01 + cos10) / 2} | self.extra_logs(batch, z0)
