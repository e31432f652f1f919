"""Projection and prediction heads: one MLP with configurable widths, depth and batch norm.

The methods' standard heads, all built by :class:`MLP`:

- MoCo v2 projector: ``MLP(d, 2048, 128, norm=False)`` (Linear-ReLU-Linear);
- SimCLR projector: ``MLP(d, 2048, 128)`` (Linear-BN-ReLU-Linear);
- BYOL projector and predictor: ``MLP(d, 4096, 256)`` / ``MLP(256, 4096, 256)``;
- SimSiam projector: ``MLP(d, 2048, 2048, num_layers=3, last_norm=True)``; predictor ``MLP(2048, 512, 2048)``.

The judo study found hidden width 2048 best for ResNet-18 and 1024 for X3D (``method.proj_hidden_dim``).
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Sequential):
    """``num_layers`` linear layers; every hidden layer is Linear-[BN]-ReLU, the last is Linear-[BN without affine].

    Args:
        in_dim: input width. hidden_dim: width of the hidden layers. out_dim: output width.
        num_layers: number of linear layers (>= 1; 1 is a single linear map).
        norm: batch norm after every hidden linear layer (which then has no bias).
        last_norm: batch norm (no affine) after the last layer, as SimSiam's projector.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, norm: bool = True,
                 last_norm: bool = False) -> None:
        if num_layers < 1:
            raise ValueError(f"MLP needs num_layers >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim, bias=not norm)]
            if norm:
                layers += [nn.BatchNorm1d(hidden_dim)]
            layers += [nn.ReLU(inplace=True)]
            dim = hidden_dim
        layers += [nn.Linear(dim, out_dim, bias=not last_norm)]
        if last_norm:
            layers += [nn.BatchNorm1d(out_dim, affine=False)]
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)
