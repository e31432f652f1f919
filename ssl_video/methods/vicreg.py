"""VICReg (Bardes, Ponce & LeCun 2022): variance-invariance-covariance regularisation of two views' embeddings.

No negatives, no momentum encoder, no predictor: an expander (3-layer MLP) maps both views' features to ``z_a``,
``z_b`` ``(N, D)`` and :func:`vicreg_loss` pulls them together (invariance: mean squared error) while keeping every
dimension's std above 1 over the batch (variance: hinge) and the dimensions decorrelated (covariance: squared
off-diagonal covariances). Coefficients 25 / 25 / 1 as the paper.

With several ranks the embeddings are gathered with :func:`ssl_video.distributed.gather_with_grad` (as the paper's
``FullGatherLayer``), so the variance and covariance are those of the global batch; every rank computes the same
global loss, and DDP's gradient averaging then gives exactly the 1-rank gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_video.distributed import gather_with_grad
from ssl_video.methods.two_view import TwoViewConfig, TwoViewMethod
from ssl_video.models.heads import MLP


@dataclass
class VICRegConfig(TwoViewConfig):
    name: str = "vicreg"
    proj_hidden_dim: int = 2048  # expander width (the paper: 8192 on ImageNet; 2048 for ResNet-18 as solo-learn)
    proj_dim: int = 2048
    sim_coeff: float = 25.0  # lambda: invariance
    std_coeff: float = 25.0  # mu: variance
    cov_coeff: float = 1.0  # nu: covariance
    eps: float = 1e-4  # inside the std's square root


def vicreg_loss(z_a: torch.Tensor, z_b: torch.Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0, eps: float = 1e-4) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg's loss of embeddings ``z_a``, ``z_b`` ``(N, D)`` (one row per sample, N >= 2).

    ``invariance = mean((z_a - z_b)^2)``; ``variance = mean_j relu(1 - sqrt(var_j(z) + eps))``, averaged over the two
    views (``var_j`` unbiased, over the batch); ``covariance = sum_{i != j} C_ij^2 / D`` summed over the two views, with
    ``C`` the unbiased covariance matrix. Returns ``(loss, {"invariance", "variance", "covariance"})``.
    """
    n, d = z_a.shape
    if n < 2:
        raise ValueError(f"vicreg needs at least 2 samples per batch to estimate variances, got {n}")
    invariance = F.mse_loss(z_a, z_b)
    z_a, z_b = z_a - z_a.mean(dim=0), z_b - z_b.mean(dim=0)
    std_a, std_b = torch.sqrt(z_a.var(dim=0) + eps), torch.sqrt(z_b.var(dim=0) + eps)
    variance = (F.relu(1 - std_a).mean() + F.relu(1 - std_b).mean()) / 2
    off_diagonal = ~torch.eye(d, dtype=torch.bool, device=z_a.device)
    cov_a, cov_b = (z_a.T @ z_a) / (n - 1), (z_b.T @ z_b) / (n - 1)
    covariance = (cov_a[off_diagonal].pow(2).sum() + cov_b[off_diagonal].pow(2).sum()) / d
    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return loss, {"invariance": invariance, "variance": variance, "covariance": covariance}


class VICReg(TwoViewMethod):
    config_class = VICRegConfig

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        m = cfg.method
        self.projector = MLP(self.feat_dim, m.proj_hidden_dim, m.proj_dim, num_layers=3)  # the paper's expander

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x0, x1 = self.views(batch)
        z0, z1 = self.projector(self.features(self.backbone, torch.cat([x0, x1]))).float().chunk(2)
        m = self.cfg.method
        with torch.autocast(device_type=z0.device.type, enabled=False):  # covariances in float32, not bf16
            invariance = F.mse_loss(z0, z1)  # local: DDP's averaging makes it the global mean
            _, terms = vicreg_loss(gather_with_grad(z0), gather_with_grad(z1), m.sim_coeff, m.std_coeff,
                                   m.cov_coeff, m.eps)
        loss = m.sim_coeff * invariance + m.std_coeff * terms["variance"] + m.cov_coeff * terms["covariance"]
        logs = {k: v.detach() for k, v in terms.items()} | {"invariance": invariance.detach()}
        return {"loss": loss} | logs | self.extra_logs(batch, z0)
