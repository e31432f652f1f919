"""ssl_video.export (ssl-video-export, tools/export_backbone.py, hubconf.py): exported backbones load strictly into
torchvision's ResNet-18 / pytorchvideo's X3D-XS and compute the same features as the trained method's backbone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from ssl_video import checkpoint as ckpt
from ssl_video import export as export_backbone
from ssl_video.config import load_config, to_yaml
from ssl_video.methods.registry import build_method

REPO = Path(__file__).resolve().parent.parent


def _checkpoint(tmp_path: Path, method: str, backbone: str, *extra: str) -> tuple[nn.Module, Path]:
    """A method whose BN statistics are not the defaults (so buffers must be carried over too), saved at step 7."""
    torch.manual_seed(0)
    cfg = load_config([f"method={method}", f"backbone={backbone}", *extra])
    m = build_method(cfg)
    for module in m.backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    state = {"model": m.state_dict(), "step": 7, "config": to_yaml(cfg), "world_size": 1}
    return m.eval(), ckpt.save_checkpoint(state, tmp_path / "run", 7, keep_last=1)


def _strict_resnet(path: Path, **kw) -> nn.Module:
    net = torchvision.models.resnet18(**kw)
    result = net.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return net.eval()


def _pooled(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision ResNet up to (not including) fc."""
    return torch.flatten(nn.Sequential(*list(net.children())[:-1])(x), 1)


@torch.no_grad()
def test_resnet18_loads_strictly_and_gives_the_same_features(tmp_path):
    method, path = _checkpoint(tmp_path, "simclr", "resnet18")
    out = tmp_path / "r18.pt"
    info = export_backbone.export(path, out)
    assert info["backbone"] == "resnet18" and info["step"] == 7
    net = _strict_resnet(out)
    x = torch.randn(2, 3, 64, 64)
    expected = method.backbone(x)
    torch.testing.assert_close(_pooled(net, x), expected, rtol=1e-5, atol=1e-5)
    assert net(x).shape == (2, 1000)
    # the added fc is a fixed-seed fresh init: a second export is identical
    export_backbone.export(path, tmp_path / "again.pt")
    again = torch.load(tmp_path / "again.pt", weights_only=True)
    first = torch.load(out, weights_only=True)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert json.loads(out.with_suffix(".json").read_text())["classifier"].startswith("fc: fresh initialisation")


@torch.no_grad()
def test_cifar_stem_exports_with_its_stem_and_loads_back_everywhere(tmp_path):
    from ssl_video.eval.common import load_backbone

    method, path = _checkpoint(tmp_path, "moco", "resnet18", "backbone.stem=cifar")
    out = tmp_path / "r18_cifar.pt"
    info = export_backbone.export(path, out, fc=False)
    assert export_backbone.CIFAR_STEM in info["load"]
    with pytest.raises(RuntimeError, match="conv1.weight"):  # the stock stem does not fit
        torchvision.models.resnet18().load_state_dict(torch.load(out, weights_only=True), strict=False)
    net = torchvision.models.resnet18()  # the stem the JSON names, built by hand
    net.conv1, net.maxpool, net.fc = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity(), nn.Identity()
    net.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = torch.randn(2, 3, 32, 32)
    expected = method.backbone(x)
    torch.testing.assert_close(net.eval()(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(export_backbone.load_model(path)(x), expected, rtol=1e-5, atol=1e-5)
    for source in (path, out):  # the training checkpoint's config and the export's conv1 both tell the stem
        backbone, _ = load_backbone(source, "resnet18")
        assert backbone.conv1.kernel_size == (3, 3)
        torch.testing.assert_close(backbone(x), expected, rtol=1e-5, atol=1e-5)
    random, _ = load_backbone("random", "resnet18", stem="cifar")
    assert random.conv1.kernel_size == (3, 3) and random(x).shape == (2, 512)


@torch.no_grad()
def test_stride8_walk_encoder_with_the_documented_stride_change(tmp_path):
    method, path = _checkpoint(tmp_path, "walk_superpixel", "resnet18_s8")
    out = tmp_path / "s8.pt"
    info = export_backbone.export(path, out)
    assert "stride 1" in info["differs"]
    net = _strict_resnet(out)
    x = torch.randn(1, 3, 64, 64)
    trunk = nn.Sequential(*list(net.children())[:-2])  # up to layer4, no pooling
    # as loaded (torchvision strides): same up to layer2, where the strides still agree
    layer2 = nn.Sequential(*list(net.children())[:-4])
    torch.testing.assert_close(layer2(x), method.backbone.forward_until(x, "layer2"), rtol=1e-5, atol=1e-5)
    assert trunk(x).shape[-1] == 2  # stride 32
    for layer in (net.layer3, net.layer4):  # the change the docstring prescribes
        layer[0].conv1.stride = (1, 1)
        layer[0].downsample[0].stride = (1, 1)
    expected = method.backbone(x)
    assert expected.shape == (1, 512, 8, 8)
    torch.testing.assert_close(trunk(x), expected, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_cli_no_fc_loads_strictly_with_identity_fc(tmp_path):
    method, path = _checkpoint(tmp_path, "walk_superpixel", "resnet18_s8")
    out = tmp_path / "nofc.pt"
    proc = subprocess.run([sys.executable, "tools/export_backbone.py", str(path), str(out), "--no-fc"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "load: torchvision.models.resnet18(num_classes=1000) with fc = torch.nn.Identity()" in proc.stdout
    assert "note: trained with stride 1" in proc.stdout
    state = torch.load(out, weights_only=True)
    assert not any(k.startswith("fc.") for k in state)
    plain = torchvision.models.resnet18()
    assert sorted(plain.load_state_dict(state, strict=False).missing_keys) == ["fc.bias", "fc.weight"]
    net = torchvision.models.resnet18()
    net.fc = nn.Identity()
    net.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 64)
    expected = method.backbone.forward_until(x, "layer2")
    torch.testing.assert_close(nn.Sequential(*list(net.children())[:-4]).eval()(x), expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_gru_backbone_exports_its_frame_trunk(tmp_path):
    method, path = _checkpoint(tmp_path, "byol", "resnet18_gru")
    info = export_backbone.export(path, tmp_path / "gru.pt")
    assert "GRU" in info["differs"]
    net = _strict_resnet(tmp_path / "gru.pt")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(_pooled(net, x), method.backbone.frame_encoder(x), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_x3d_xs_loads_strictly_into_create_x3d_and_gives_the_same_features(tmp_path):
    from pytorchvideo.models.x3d import create_x3d

    method, path = _checkpoint(tmp_path, "moco", "x3d_xs")
    out = tmp_path / "x3d.pt"
    info = export_backbone.export(path, out)
    assert "create_x3d(input_clip_length=4, input_crop_size=160" in info["load"]
    # the arguments the docstring names, written out here rather than taken from the tool
    net = create_x3d(input_clip_length=4, input_crop_size=160, depth_factor=2.2, width_factor=2.0, head_dim_out=2048,
                     model_num_class=400)  # fmt: skip
    result = net.load_state_dict(torch.load(out, weights_only=True), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    net.eval()
    clip = torch.randn(1, 4, 3, 160, 160)  # (B, T, C, H, W) as the method takes it
    h = clip.permute(0, 2, 1, 3, 4)
    for block in net.blocks[:5]:
        h = block(h)
    features = torch.flatten(net.blocks[5].pool(h), 1)  # projected pooling, before dropout / proj
    torch.testing.assert_close(features, method.backbone(clip), rtol=1e-4, atol=1e-5)
    assert net(clip.permute(0, 2, 1, 3, 4)).shape == (1, 400)


def test_bad_inputs_are_one_line_errors(tmp_path):
    _, path = _checkpoint(tmp_path, "simclr", "resnet18")
    with pytest.raises(export_backbone.ExportError, match="has no reference model"):
        export_backbone.export(path, tmp_path / "x.pt", backbone="vit")
    plain = tmp_path / "plain.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, plain)
    with pytest.raises(export_backbone.ExportError, match="is not a training checkpoint"):
        export_backbone.export(plain, tmp_path / "y.pt")
    with pytest.raises(export_backbone.ExportError, match="do not fit"):  # resnet weights declared as X3D
        export_backbone.export(path, tmp_path / "z.pt", backbone="x3d_xs")



def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    assert export_backbone.main([str(tmp_path / "missing.pt"), str(tmp_path / "w.pt")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: checkpoint not found: {tmp_path / 'missing.pt'}"]
    with pytest.raises(SystemExit) as exc:
        export_backbone.main(["--bogus"])
    assert exc.value.code == 2 and capsys.readouterr().err.startswith("error: ")


@torch.no_grad()
def test_load_model_and_torch_hub_give_the_trained_features(tmp_path):
    method, path = _checkpoint(tmp_path, "simclr", "resnet18")
    x = torch.randn(2, 3, 64, 64)
    expected = method.backbone(x)
    model = export_backbone.load_model(path)
    assert isinstance(model, torchvision.models.ResNet) and isinstance(model.fc, nn.Identity)
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    hub = torch.hub.load(str(REPO), "resnet18", checkpoint=str(path), source="local")
    assert isinstance(hub, torchvision.models.ResNet) and not hub.training
    torch.testing.assert_close(hub(x), expected, rtol=1e-4, atol=1e-5)
    with_fc = torch.hub.load(str(REPO), "resnet18", checkpoint=str(path), source="local", fc=True, num_classes=7)
    assert with_fc(x).shape == (2, 7)
    with pytest.raises(export_backbone.ExportError, match="not a x3d_xs"):
        torch.hub.load(str(REPO), "x3d_xs", checkpoint=str(path), source="local")


@torch.no_grad()
def test_load_model_of_the_walk_encoder_runs_at_stride_8(tmp_path):
    method, path = _checkpoint(tmp_path, "walk_superpixel", "resnet18_s8")
    model = export_backbone.load_model(path)
    assert model.layer3[0].conv1.stride == (1, 1) and model.layer4[0].downsample[0].stride == (1, 1)
    x = torch.randn(1, 3, 64, 64)
    trunk = nn.Sequential(*list(model.children())[:-2])  # up to layer4: the 1/8-resolution map
    assert trunk(x).shape[-2:] == (8, 8)
    assert export_backbone.load_model(path, stride8=False).layer3[0].conv1.stride == (2, 2)
