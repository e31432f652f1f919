"""Backbones: shapes, input kinds, the GRU's clip feature, X3D-XS without its classifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_video.config import BackboneConfig
from ssl_video.models.backbones import backbone_names, build_backbone, stem_of
from ssl_video.models.heads import MLP


def test_registry_has_all_four():
    assert {"resnet18", "resnet18_s8", "resnet18_gru", "x3d_xs"} <= set(backbone_names())
    with pytest.raises(KeyError, match="unknown backbone 'resnet19'"):
        build_backbone(BackboneConfig(name="resnet19"))


def test_resnet18_gru_is_a_gru_over_per_frame_resnet_features():
    torch.manual_seed(0)
    net = build_backbone(BackboneConfig(name="resnet18_gru", gru_hidden=32, gru_layers=2)).eval()
    assert net.input_kind == "clip" and net.out_dim == 32
    x = torch.randn(2, 3, 3, 32, 32)
    y = net(x)
    assert y.shape == (2, 32)
    frames = torch.stack([net.frame_encoder(x[b]) for b in range(2)])  # independent: frame by frame, clip by clip
    _, h = net.gru(frames)
    torch.testing.assert_close(y, h[-1], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"expects clips \(B, T, 3, H, W\)"):
        net(torch.randn(2, 3, 32, 32))


def test_x3d_xs_gives_2048_d_clip_features_at_any_size():
    torch.manual_seed(0)
    net = build_backbone(BackboneConfig(name="x3d_xs")).eval()
    assert net.input_kind == "clip" and net.out_dim == 2048
    assert not any("proj" in n for n, _ in net.named_parameters())  # the Kinetics classifier is gone
    n_params = sum(p.numel() for p in net.parameters())
    assert 2.9e6 < n_params < 3.1e6  # X3D-XS: 3.8 M with its 2048x400 classifier, ~3.0 M without
    assert net(torch.randn(2, 4, 3, 64, 64)).shape == (2, 2048)
    assert net(torch.randn(1, 6, 3, 48, 48)).shape == (1, 2048)


def test_resnet18_unchanged():
    net = build_backbone(BackboneConfig(name="resnet18"))
    assert net.input_kind == "frames" and net(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_cifar_stem_keeps_a_32px_frame_at_4x4_in_layer4():
    imagenet = build_backbone(BackboneConfig(name="resnet18"))
    cifar = build_backbone(BackboneConfig(name="resnet18", stem="cifar"))
    x = torch.randn(2, 3, 32, 32)
    assert imagenet.forward_until(x, "layer4").shape[-2:] == (1, 1)  # one value per frame and channel for BN
    assert cifar.forward_until(x, "layer4").shape[-2:] == (4, 4)
    assert cifar(x).shape == (2, 512)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1) and isinstance(cifar.maxpool, nn.Identity)
    assert stem_of(cifar.state_dict()) == "cifar" and stem_of(imagenet.state_dict()) == "imagenet"
    s8 = build_backbone(BackboneConfig(name="resnet18_s8", stem="cifar"))
    assert s8(x).shape == (2, 512, 16, 16)  # stride 2 overall: only layer2 downsamples
    gru = build_backbone(BackboneConfig(name="resnet18_gru", stem="cifar", gru_hidden=8))
    assert stem_of(gru.state_dict()) == "cifar" and gru(torch.randn(1, 2, 3, 32, 32)).shape == (1, 8)
    with pytest.raises(ValueError, match="applies to the ResNet-18 backbones, not x3d_xs"):
        build_backbone(BackboneConfig(name="x3d_xs", stem="cifar"))


def test_mlp_widths_and_norms():
    head = MLP(16, 64, 8, num_layers=3, last_norm=True)
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU",
                                                "Linear", "BatchNorm1d"]
    assert head(torch.randn(4, 16)).shape == (4, 8) and not head[-1].affine
    plain = MLP(16, 64, 8, norm=False)
    assert [type(m).__name__ for m in plain] == ["Linear", "ReLU", "Linear"]
    with pytest.raises(ValueError, match="num_layers >= 1"):
        MLP(16, 64, 8, num_layers=0)


def test_pooled_features_average_pools_maps_and_passes_vectors():
    from ssl_video.models import pooled_features

    torch.manual_seed(0)
    maps = build_backbone(BackboneConfig(name="resnet18_s8")).eval()
    x = torch.randn(2, 3, 32, 32)
    fmap = maps(x)
    assert fmap.shape == (2, 512, 4, 4)
    torch.testing.assert_close(pooled_features(maps, x), fmap.mean(dim=(2, 3)))
    vectors = build_backbone(BackboneConfig(name="resnet18")).eval()
    torch.testing.assert_close(pooled_features(vectors, x), vectors(x))
