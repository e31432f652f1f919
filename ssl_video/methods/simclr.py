"""SimCLR (Chen et al. 2020): NT-Xent over the global batch.

Both views go through one encoder call (so BN statistics cover both). The L2-normalised embeddings of every rank
are gathered with :func:`ssl_video.distributed.gather_with_grad`, whose backward sums the gradients of all ranks and
returns this rank's slice; each rank scores its own 2N anchors against all 2M global embeddings (its own excluded),
and DDP's gradient averaging then gives exactly the gradient of the 1-rank loss on the concatenated batch. With
several ranks BN becomes synchronised (``method.sync_bn``). For large batches use ``optim.name=lars``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_video.distributed import gather_with_grad, get_rank
from ssl_video.methods.two_view import TwoViewConfig, TwoViewMethod
from ssl_video.models.heads import MLP


@dataclass
class SimCLRConfig(TwoViewConfig):
    name: str = "simclr"
    temperature: float = 0.1


def nt_xent(z0: torch.Tensor, z1: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent of this rank's anchors; ``z0``, ``z1`` ``(N, d)`` L2-normalised local embeddings of the two views.

    Returns ``(loss, top-1 accuracy of the positive)``; the mean over ranks of ``loss`` is the global loss.
    """
    n = z0.shape[0]
    all0, all1 = gather_with_grad(z0), gather_with_grad(z1)
    m = all0.shape[0]
    candidates = torch.cat([all0, all1])  # (2M, d): column g is view 0 of global sample g, M + g its view 1
    anchors = torch.cat([z0, z1])  # (2N, d)
    logits = anchors @ candidates.T / temperature
    g = torch.arange(n, device=z0.device) + get_rank() * n  # global indices of this rank's samples
    own = torch.cat([g, g + m])
    positive = torch.cat([g + m, g])
    logits = logits.masked_fill(F.one_hot(own, 2 * m).bool(), float("-inf"))
    loss = F.cross_entropy(logits, positive)
    acc = (logits.detach().argmax(dim=1) == positive).float().mean()
    return loss, acc


class SimCLR(TwoViewMethod):
    config_class = SimCLRConfig

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        m = cfg.method
        self.projector = MLP(self.feat_dim, m.proj_hidden_dim, m.proj_dim)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x0, x1 = self.views(batch)
        z = F.normalize(self.projector(self.features(self.backbone, torch.cat([x0, x1]))), dim=1)
        z0, z1 = z.chunk(2)
        loss, acc = nt_xent(z0, z1, self.cfg.method.temperature)
        return {"loss": loss, "acc_top1": acc} | self.extra_logs(batch, z0)
