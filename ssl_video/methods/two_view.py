"""The two-view base of MoCo v2, SimCLR, BYOL, SimSiam and VICReg: two views of a sample in, their features out.

Samples and positives. ``batch["clips"]`` is ``(B, V, T, C, H, W)``; views 0 and 1 are the two augmented (or, with
``data.positive=other_camera``, two-camera) views of the same frame indices.

- ``input_kind == "frames"`` (ResNet-18): every frame is an independent sample. A view becomes ``B*T`` frames
  ``(B*T, C, H, W)`` and the positive of frame t of view 0 is frame t of view 1; the other frames of the same clip are
  negatives like any other (so ``frames`` sampling, T independent frames per video, is the natural data mode).
- ``input_kind == "clip"`` (ResNet-18 + GRU, X3D-XS): a clip is one sample; a view is ``(B, T, C, H, W)``.

Batch norm across ranks: with ``world_size > 1`` and ``method.sync_bn`` every BN layer is converted when the method is
built (:func:`ssl_video.methods.registry.build_method`, before DDP wraps it: torch's SyncBatchNorm on CUDA,
:class:`ssl_video.distributed.CpuSyncBatchNorm` on CPU), so the statistics are those of the global batch. MoCo turns
this off and uses shuffle-BN instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ssl_video.methods.base import Method, MethodConfig
from ssl_video.models.backbones import build_backbone, pooled_features
from ssl_video.normalise import denormalise


@dataclass
class TwoViewConfig(MethodConfig):
    """Fields every two-view method has."""

    proj_hidden_dim: int = 2048  # projector hidden width
    proj_dim: int = 128  # embedding width the loss sees
    sync_bn: bool = True  # world size > 1: batch-norm statistics over the global batch


def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std of the L2-normalised embeddings (SimSiam's collapse monitor).

    0 means collapse to one point; unit vectors spread over ``d`` dimensions give about ``1/sqrt(d)``.
    """
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()


class TwoViewMethod(Method):
    """Backbone + helpers to cut two views out of the batch and encode them as samples (see the module docstring)."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.backbone = build_backbone(cfg.backbone)
        self.input_kind = self.backbone.input_kind
        self.feat_dim = self.backbone.out_dim

    def frames_per_sample(self) -> int:
        """Samples one clip contributes: its T frames for a ``frames`` backbone, 1 for a ``clip`` backbone."""
        if self.input_kind != "frames":
            return 1
        data = self.cfg.data
        return data.num_frames if data.sampling == "frames" else data.clip_len

    def views(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Views 0 and 1 as encoder inputs: ``(B*T, C, H, W)`` for frames backbones, ``(B, T, C, H, W)`` for clips."""
        clips, name = batch["clips"], self.cfg.method.name
        if clips.dim() != 6:
            raise ValueError(f"{name}: batch['clips'] must be (B, V, T, C, H, W), got {tuple(clips.shape)}")
        if clips.shape[1] < 2:
            raise ValueError(f"{name} needs two views per sample (data.num_views=2), got V={clips.shape[1]}")
        x0, x1 = clips[:, 0], clips[:, 1]
        if self.input_kind == "frames":
            x0, x1 = x0.flatten(0, 1), x1.flatten(0, 1)
        return x0, x1

    @staticmethod
    def features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Backbone output as ``(N, out_dim)`` vectors (:func:`ssl_video.models.backbones.pooled_features`)."""
        return pooled_features(backbone, x)

    def extra_logs(self, batch: dict[str, torch.Tensor], z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scalars every method logs: embedding std (collapse) and the fraction of cross-camera positives."""
        out = {"z_std": embedding_std(z)}
        if "camera" in batch and batch["camera"].dim() == 2 and batch["camera"].shape[1] >= 2:
            out["cross_camera"] = (batch["camera"][:, 0] != batch["camera"][:, 1]).float().mean()
        return out

    @torch.no_grad()
    def visualize(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """First frame of sample 0, view 0 beside view 1 (what the method is asked to match)."""
        clips = batch["clips"]
        if clips.dim() != 6 or clips.shape[1] < 2:
            return {}
        return {"views": torch.cat([denormalise(clips[0, 0, 0].float()), denormalise(clips[0, 1, 0].float())], dim=2)}
