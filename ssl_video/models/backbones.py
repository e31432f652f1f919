"""Backbone registry and the ResNet-18 family.

Every backbone has ``out_dim`` and ``input_kind``:

- ``"frames"``: input ``(N, 3, H, W)``, frames treated independently (ResNet-18, ResNet-18 stride 8);
- ``"clip"``: input ``(B, T, 3, H, W)`` (ResNet-18 + GRU, X3D-XS; X3D permutes to ``(B, 3, T, H, W)`` itself).

``resnet18`` returns pooled ``(N, 512)`` vectors; ``resnet18_s8`` returns ``(N, 512, H/8, W/8)`` maps.
Parameter names are torchvision's so ``tools/export_backbone.py`` writes a state_dict that
``torchvision.models.resnet18()`` loads (``fc`` excepted, which self-supervision does not train).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str):
    def wrap(fn):
        _BACKBONES[name] = fn
        return fn

    return wrap


def backbone_names() -> list[str]:
    return sorted(_BACKBONES)


def build_backbone(cfg) -> nn.Module:
    """Build ``cfg.name`` (a :class:`ssl_video.config.BackboneConfig` node)."""
    if cfg.name not in _BACKBONES:
        raise KeyError(f"unknown backbone '{cfg.name}'; registered: {', '.join(backbone_names())}")
    return _BACKBONES[cfg.name](cfg)


class ResNet18(nn.Module):
    """torchvision ResNet-18 trunk without ``fc``; ``stride8=True`` sets the strides of layer3/layer4 to 1.

    The stride-8 variant (videowalk's encoder) keeps the full feature map: 256² frames give 32² maps. Its
    weights have the same names and shapes as torchvision's; only the two strides differ, which
    ``tools/export_backbone.py`` records beside the weights.
    """

    def __init__(self, stride8: bool = False, zero_init_residual: bool = False) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None, zero_init_residual=zero_init_residual)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.stride8 = stride8
        if stride8:
            for layer in (self.layer3, self.layer4):
                layer[0].conv1.stride = (1, 1)
                layer[0].downsample[0].stride = (1, 1)
        self.out_dim = 512
        self.input_kind = "frames"

    def forward_until(self, x: torch.Tensor, stage: str = "layer4") -> torch.Tensor:
        """Feature map after ``stage`` (``layer1`` … ``layer4``)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            if name == stage:
                return x
        raise ValueError(f"unknown stage '{stage}'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.forward_until(x, "layer4")
        return fmap if self.stride8 else torch.flatten(nn.functional.adaptive_avg_pool2d(fmap, 1), 1)


@register_backbone("resnet18")
def resnet18(cfg) -> nn.Module:
    return ResNet18(stride8=False, zero_init_residual=cfg.zero_init_residual)


@register_backbone("resnet18_s8")
def resnet18_s8(cfg) -> nn.Module:
    return ResNet18(stride8=True, zero_init_residual=cfg.zero_init_residual)
