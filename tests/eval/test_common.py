"""ssl_video.eval.common.load_backbone reads what tools/export_backbone.py writes: an X3D-XS export (pytorchvideo's
create_x3d names, blocks.5.pool.* for our head_pool.*, classifier blocks.5.proj.*) loads back with equal weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from ssl_video.config import BackboneConfig
from ssl_video.eval.common import load_backbone
from ssl_video.models import build_backbone

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("export_backbone", REPO / "tools" / "export_backbone.py")
export_backbone = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export_backbone)


def _x3d_checkpoint(tmp_path: Path) -> tuple[nn.Module, Path]:
    """An x3d_xs backbone whose weights and BN statistics all differ from a fresh init, as a training checkpoint."""
    torch.manual_seed(0)
    src = build_backbone(BackboneConfig(name="x3d_xs"))
    with torch.no_grad():
        for key, tensor in src.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in key else torch.randn_like(tensor) * 0.1)
            else:
                tensor.fill_(7)  # num_batches_tracked
    path = tmp_path / "step_00000007.pt"
    torch.save({"model": {f"backbone.{k}": v for k, v in src.state_dict().items()},
                "config": "backbone:\n  name: x3d_xs\nmethod:\n  name: moco\n", "step": 7}, path)
    return src.eval(), path


@pytest.mark.parametrize("fc", [True, False])
@torch.no_grad()
def test_x3d_export_loads_back_with_equal_weights(tmp_path, fc):
    src, ckpt = _x3d_checkpoint(tmp_path)
    out = tmp_path / "x3d.pt"
    export_backbone.export(ckpt, out, fc=fc)
    exported = torch.load(out, weights_only=True)
    assert any(k.startswith("blocks.5.pool.") for k in exported)
    assert not any(k.startswith("head_pool.") for k in exported)
    assert any(k.startswith("blocks.5.proj.") for k in exported) == fc

    for name in ("x3d_xs", None):  # named, and inferred from the export's create_x3d names (it holds no config)
        net, info = load_backbone(out, name)
        assert info["backbone"] == "x3d_xs" and not info["missing"]
        assert sorted(info["ignored"]) == (["blocks.5.proj.bias", "blocks.5.proj.weight"] if fc else [])
        own, ref = net.state_dict(), src.state_dict()
        assert own.keys() == ref.keys()
        assert all(torch.equal(own[k], ref[k]) for k in ref), [k for k in ref if not torch.equal(own[k], ref[k])][:3]
    clip = torch.randn(1, 4, 3, 64, 64)
    torch.testing.assert_close(net(clip), src(clip), rtol=0, atol=0)


def test_x3d_export_does_not_fit_a_resnet(tmp_path):
    _, ckpt = _x3d_checkpoint(tmp_path)
    out = tmp_path / "x3d.pt"
    export_backbone.export(ckpt, out, fc=False)
    with pytest.raises(ValueError, match="does not fit backbone 'resnet18'"):
        load_backbone(out, "resnet18")
