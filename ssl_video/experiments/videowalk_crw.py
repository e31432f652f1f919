"""The reference contrastive random walk step (videowalk's ``CRW``, Jabri et al. 2020) for speed comparisons.

A minimal reimplementation of what ``code/model.py`` and ``code/resnet.py`` of github.com/ajabri/videowalk compute in
one training step with the published command (``--model-type scratch --dropout 0.1 --clip-len 4 --temp 0.05
--head-depth 0 --lr 0.0001``, Adam, fp32, no autocast), written from that code so that ``tools/gpu_report.py`` can
time it on the same GPU and input as ``walk_patch``. It keeps the reference's costs, not only its maths:

- encoder: torchvision ResNet-18 with every convolution of layer3 and layer4 at stride 1 (output stride 8), reflect
  padding in every padded convolution, no avgpool/fc; frames go through a 2D-as-3D wrapper that permutes
  ``(N, C, T, h, w)`` to ``(N*T, C, h, w)`` with a contiguous copy and back;
- nodes: patches arrive pre-cut (the reference cuts and jitters them in its data-loader workers, so that work is not
  in its step); node = spatial mean of the patch's map, then a linear head (512 → 128), then L2 normalisation;
- walk: affinities of adjacent frames, edge dropout written **in place** into the affinity (so a forward-dropped edge
  is also dropped backward), softmax at the temperature; for every cycle length ``k = 2..T-1`` both the right and the
  left products are formed (the reference keeps the right one unless ``--flip``); loss per cycle is
  ``CrossEntropyLoss(log(P + 1e-20), identity)``, total = their sum over the number of cycles.

With edge dropout off, :func:`crw_loss` equals ``ssl_video.methods.walk.walk_loss(..., shortest_cycle=2)`` on the
same embeddings (tested in ``tests/experiments/test_videowalk_crw.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

EPS = 1e-20


def videowalk_resnet18() -> nn.Module:
    """ResNet-18 trunk as videowalk's ``resnet.py`` modifies it: stride 1 in layer3/4, reflect padding."""
    net = torchvision.models.resnet18()
    for layer in (net.layer3, net.layer4):
        for m in layer.modules():
            if isinstance(m, nn.Conv2d):
                m.stride = (1, 1)
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and sum(m.padding) > 0:
            m.padding_mode = "reflect"
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)


class From3D(nn.Module):
    """``(N, C, T, h, w)`` → 2D network per frame → ``(N, C', T, h', w')``, with the reference's copies."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        maps = self.net(x.permute(0, 2, 1, 3, 4).contiguous().view(-1, c, h, w))
        return maps.view(n, t, *maps.shape[-3:]).permute(0, 2, 1, 3, 4)


def stochastic(affinity: torch.Tensor, temperature: float, edge_dropout: float) -> torch.Tensor:
    """Row softmax of ``affinity / τ``; dropped edges are set to -1e20 **in ``affinity`` itself**, as the reference."""
    if edge_dropout > 0:
        affinity[torch.rand_like(affinity) < edge_dropout] = -1e20
    return F.softmax(affinity / temperature, dim=-1)


def crw_loss(q: torch.Tensor, temperature: float = 0.05, edge_dropout: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Walk loss of node embeddings ``q`` ``(B, C, T, N)`` (L2-normalised over C); returns (loss, accuracies)."""
    _, _, t, _ = q.shape
    affinities = torch.einsum("bctn,bctm->btnm", q[:, :, :-1], q[:, :, 1:])
    forward = [stochastic(affinities[:, i], temperature, edge_dropout) for i in range(t - 1)]
    backward = [stochastic(affinities[:, i].transpose(-1, -2), temperature, edge_dropout) for i in range(t - 1)]
    xent = nn.CrossEntropyLoss(reduction="none")
    losses, acc = [torch.zeros(1, device=q.device)], {}
    for i in range(1, t - 1):
        chain = forward[: i + 1] + backward[: i + 1][::-1]
        right = left = chain[0]
        for a in chain[1:]:
            right, left = right @ a, a @ left  # the reference forms both; "left" is its pre-fix (--flip) order
        logits = torch.log(right + EPS).flatten(0, -2)
        target = torch.arange(right.shape[-1], device=q.device).repeat(right.shape[0])
        losses.append(xent(logits, target).mean())
        acc[i + 1] = (logits.argmax(dim=-1) == target).float().mean().detach()
    return sum(losses) / max(1, len(losses) - 1), acc


class VideowalkCRW(nn.Module):
    """Encoder + linear head + :func:`crw_loss` on pre-cut patches ``(B, T, N*3, p, p)`` (the reference's input)."""

    def __init__(self, temperature: float = 0.05, edge_dropout: float = 0.1, embed_dim: int = 128) -> None:
        super().__init__()
        self.encoder = From3D(videowalk_resnet18())
        self.head = nn.Linear(512, embed_dim)  # head depth 0: one linear layer
        self.temperature, self.edge_dropout = temperature, edge_dropout

    def nodes(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, N*3, p, p)`` → node embeddings ``(B, 128, T, N)``."""
        b, t, nc, h, w = x.shape
        n = nc // 3
        x = x.transpose(1, 2).reshape(b, n, 3, t, h, w)
        maps = self.encoder(x.flatten(0, 1))  # (B*N, 512, T, h', w')
        feats = maps.sum(-1).sum(-1) / (maps.shape[-2] * maps.shape[-1])
        feats = F.normalize(self.head(feats.transpose(-1, -2)).transpose(-1, -2), p=2, dim=1)
        return feats.view(b, n, feats.shape[1], t).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        loss, acc = crw_loss(self.nodes(x), self.temperature, self.edge_dropout if self.training else 0.0)
        return {"loss": loss, "walk_acc": acc[max(acc)] if acc else torch.zeros(())}


def grid_patches(clips: torch.Tensor, size: int = 64, stride: int = 32) -> torch.Tensor:
    """``(B, T, 3, H, W)`` → ``(B, T, N*3, size, size)``: the reference's grid of patches, without its jitter."""
    b, t, c, _, _ = clips.shape
    tiles = clips.flatten(0, 1).unfold(2, size, stride).unfold(3, size, stride)  # (BT, 3, gy, gx, p, p)
    tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(b, t, -1, size, size)  # (B, T, N*3, p, p), node-major channels
    return tiles.contiguous()
