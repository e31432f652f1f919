"""Backbone registry and the ResNet-18 family.

Every backbone has ``out_dim`` and ``input_kind``:

- ``"frames"``: input ``(N, 3, H, W)``, frames treated independently (ResNet-18, ResNet-18 stride 8);
- ``"clip"``: input ``(B, T, 3, H, W)`` (ResNet-18 + GRU, X3D-XS; X3D permutes to ``(B, 3, T, H, W)`` itself).

``resnet18`` returns pooled ``(N, 512)`` vectors; ``resnet18_s8`` returns ``(N, 512, H/8, W/8)`` maps;
``resnet18_gru`` returns the GRU's last hidden state ``(B, gru_hidden)``; ``x3d_xs`` returns ``(B, 2048)``.
Parameter names are torchvision's so ``tools/export_backbone.py`` writes a state_dict that
``torchvision.models.resnet18()`` loads (``fc`` excepted, which self-supervision does not train).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from ssl_video.schema import choice

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
STEMS = ("imagenet", "cifar")


def backbone_names() -> list[str]:
    return sorted(_BACKBONES)


@dataclass
class BackboneConfig:
    """The ``backbone`` section (ssl_video/configs/backbone/*.yaml)."""

    name: str = choice("resnet18", backbone_names)  # resnet18 | resnet18_s8 | resnet18_gru | x3d_xs
    gru_hidden: int = 512  # resnet18_gru: clip feature size (its out_dim)
    gru_layers: int = 1
    zero_init_residual: bool = False
    x3d_head_dim: int = 2048  # x3d_xs: width of the projected-pooling feature (its out_dim)
    # ResNet-18 family: imagenet (torchvision's 7x7 stride-2 conv + max-pool) or cifar (3x3 stride-1 conv, no
    # max-pool; SimCLR's and solo-learn's stem for 32-64 px images). With torchvision's stem a 32² frame is 1x1 at
    # layer4, so in training batch norm normalises each channel over one value per frame and a frame's feature
    # depends on its batch mates more than on itself (docs/results.md); cifar keeps layer4 at 4x4 (16x the compute).
    stem: str = choice("imagenet", STEMS)


def register_backbone(name: str):
    def wrap(fn):
        _BACKBONES[name] = fn
        return fn

    return wrap


def build_backbone(cfg) -> nn.Module:
    """Build ``cfg.name`` (a :class:`BackboneConfig` node)."""
    if cfg.name not in _BACKBONES:
        raise KeyError(f"unknown backbone '{cfg.name}'; registered: {', '.join(backbone_names())}")
    return _BACKBONES[cfg.name](cfg)


def pooled_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Backbone output as ``(N, out_dim)`` vectors: feature maps (e.g. ``resnet18_s8``'s) are average-pooled."""
    y = backbone(x)
    return y.flatten(2).mean(2) if y.dim() > 2 else y


def set_cifar_stem(net: nn.Module) -> nn.Module:
    """Give a torchvision ResNet the CIFAR stem in place: ``conv1`` 3x3 stride 1 (freshly initialised), no max-pool."""
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's conv init
    net.maxpool = nn.Identity()
    return net


def stem_of(state: dict[str, torch.Tensor]) -> str:
    """The ResNet stem a state_dict was trained with, read from its ``conv1`` kernel (7x7 imagenet, 3x3 cifar)."""
    for key in ("conv1.weight", "frame_encoder.conv1.weight"):
        if key in state and state[key].dim() == 4:
            return "cifar" if state[key].shape[-1] == 3 else "imagenet"
    return "imagenet"


class ResNet18(nn.Module):
    """torchvision ResNet-18 trunk without ``fc``; ``stride8=True`` sets the strides of layer3/layer4 to 1.

    The stride-8 variant (videowalk's encoder) keeps the full feature map: 256² frames give 32² maps. Its
    weights have the same names and shapes as torchvision's; only the two strides differ, which
    ``tools/export_backbone.py`` records beside the weights.
    """

    def __init__(self, stride8: bool = False, zero_init_residual: bool = False, stem: str = "imagenet") -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None, zero_init_residual=zero_init_residual)
        if stem == "cifar":
            set_cifar_stem(net)
        elif stem != "imagenet":
            raise ValueError(f"backbone.stem must be one of {', '.join(STEMS)}, got '{stem}'")
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
    return ResNet18(stride8=False, zero_init_residual=cfg.zero_init_residual, stem=cfg.stem)


@register_backbone("resnet18_s8")
def resnet18_s8(cfg) -> nn.Module:
    return ResNet18(stride8=True, zero_init_residual=cfg.zero_init_residual, stem=cfg.stem)


class ResNet18GRU(nn.Module):
    """ResNet-18 per frame, then a GRU over the T frame features; the clip feature is the last hidden state.

    ``frame_encoder`` is a plain :class:`ResNet18` (torchvision names under ``frame_encoder.``), so the per-frame
    trunk can be exported alone; probes that want frame features call ``frame_features``.
    """

    def __init__(self, hidden: int = 512, layers: int = 1, zero_init_residual: bool = False,
                 stem: str = "imagenet") -> None:
        super().__init__()
        self.frame_encoder = ResNet18(stride8=False, zero_init_residual=zero_init_residual, stem=stem)
        self.gru = nn.GRU(self.frame_encoder.out_dim, hidden, num_layers=layers, batch_first=True)
        self.out_dim = hidden
        self.input_kind = "clip"

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` -> ``(B, T, 512)``."""
        b, t = x.shape[:2]
        return self.frame_encoder(x.flatten(0, 1)).view(b, t, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"resnet18_gru expects clips (B, T, 3, H, W), got shape {tuple(x.shape)}")
        _, h_n = self.gru(self.frame_features(x))
        return h_n[-1]


class X3D(nn.Module):
    """pytorchvideo's X3D without its classifier: stem, 4 stages, then the head's projected pooling (2048-d).

    ``create_x3d`` sizes its head pooling for one input size; it is replaced by global average pooling so any
    clip length / crop works (the judo study: 4-frame chunks at 160-182 px).
    """

    def __init__(self, clip_len: int = 4, crop_size: int = 160, depth_factor: float = 2.2, width_factor: float = 2.0,
                 head_dim: int = 2048) -> None:
        super().__init__()
        from pytorchvideo.models.x3d import create_x3d

        net = create_x3d(input_clip_length=clip_len, input_crop_size=crop_size, depth_factor=depth_factor,
                         width_factor=width_factor, head_dim_out=head_dim, model_num_class=1)
        self.blocks = nn.ModuleList(net.blocks[:-1])
        pool = net.blocks[-1].pool  # ProjectedPool: 1x1x1 conv, BN, ReLU, pool, 1x1x1 conv, ReLU
        pool.pool = nn.AdaptiveAvgPool3d(1)
        self.head_pool = pool
        self.out_dim = head_dim
        self.input_kind = "clip"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"x3d_xs expects clips (B, T, 3, H, W), got shape {tuple(x.shape)}")
        x = x.permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
        for block in self.blocks:
            x = block(x)
        return torch.flatten(self.head_pool(x), 1)


@register_backbone("resnet18_gru")
def resnet18_gru(cfg) -> nn.Module:
    return ResNet18GRU(cfg.gru_hidden, cfg.gru_layers, zero_init_residual=cfg.zero_init_residual, stem=cfg.stem)


@register_backbone("x3d_xs")
def x3d_xs(cfg) -> nn.Module:
    if cfg.stem != "imagenet":
        raise ValueError(f"backbone.stem={cfg.stem} applies to the ResNet-18 backbones, not x3d_xs")
    # X3D-XS = X3D-S widths (x2.0) and depths (x2.2) on 4 frames at 160 px (Feichtenhofer 2020, Table 1)
    return X3D(clip_len=4, crop_size=160, depth_factor=2.2, width_factor=2.0, head_dim=cfg.x3d_head_dim)
