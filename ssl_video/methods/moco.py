"""MoCo v2 (He et al. 2020; Chen et al. 2020): momentum key encoder, a queue of K negative keys, MLP head.

Per step: queries ``q`` from view 0 (online encoder), keys ``k`` from view 1 (momentum encoder, no gradient);
``logits = [q.k, q.queue] / T``, cross-entropy with the positive at index 0; then the keys of all ranks are enqueued.
The queue is a ring buffer: a step's keys overwrite the oldest ones, wrapping around the end, so any
``queue_size >= keys per step`` works (e.g. the judo study's batch of 210 frames with K = 65536; the original code
needed K to be a multiple of the keys per step). The momentum update runs after each optimiser step (the base's
``on_train_step_end``), which is MoCo's order: its update at the start of step s+1 follows step s's optimiser step.

Head: Linear(feat, ``proj_hidden_dim``)-ReLU-Linear(``proj_dim``), no BN (MoCo v2). ``proj_dim: null`` takes the judo
study's best output width for the backbone (``proj_dim_by_backbone``: 2048 for resnet18_gru, 1024 for x3d_xs), else
MoCo v2's 128.

Shuffle-BN: with several ranks the key batch is gathered, permuted by one permutation broadcast from rank 0, the
local slice encoded, and the keys gathered and un-shuffled, so the key encoder's BN statistics never come from the
same sub-batch as the queries'. On one rank ``split_bn`` sub-batches emulate it (BN statistics over interleaved
sub-batches, keys shuffled before splitting; our addition, not in the study); a batch that ``split_bn`` does not
divide uses its largest divisor below ``split_bn`` that leaves 2 samples per sub-batch (one warning);
``split_bn: 1`` turns it off, which is logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ssl_video.distributed import (
    batch_shuffle,
    batch_unshuffle,
    concat_all_gather,
    convert_split_batchnorm,
    get_world_size,
)
from ssl_video.errors import ConfigError
from ssl_video.methods.two_view import TwoViewConfig, TwoViewMethod
from ssl_video.models.heads import MLP

MOCO_V2_PROJ_DIM = 128


@dataclass
class MocoConfig(TwoViewConfig):
    name: str = "moco"
    proj_hidden_dim: int = 2048  # hidden width of the head (MoCo v2 and the judo study)
    proj_dim: int | None = None  # output width; null: proj_dim_by_backbone[backbone.name], else 128 (MoCo v2)
    # the judo study's best output widths (its default was 128)
    proj_dim_by_backbone: dict[str, int] = field(default_factory=lambda: {"resnet18_gru": 2048, "x3d_xs": 1024})
    queue_size: int = 65536  # K >= the global keys per step (batch x frames-per-sample x ranks); a ring buffer
    momentum: float = 0.999  # key encoder EMA
    temperature: float = 0.2
    shuffle_bn: bool = True  # several ranks: shuffle-BN; one rank: split-BN with split_bn sub-batches
    split_bn: int = 8  # one rank: sub-batches of the split-BN emulation (at most; 1: off)
    sync_bn: bool = False  # MoCo uses shuffle-BN, not global BN


def head_output_dim(method_cfg, backbone_name: str) -> int:
    """``method.proj_dim``, or for ``null`` the study's width for the backbone, else MoCo v2's 128."""
    if method_cfg.proj_dim is not None:
        return int(method_cfg.proj_dim)
    return int(method_cfg.proj_dim_by_backbone.get(backbone_name, MOCO_V2_PROJ_DIM))


class MoCo(TwoViewMethod):
    config_class = MocoConfig

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        m = cfg.method
        self.embed_dim = head_output_dim(m, cfg.backbone.name)
        self.projector = MLP(self.feat_dim, m.proj_hidden_dim, self.embed_dim, norm=False)  # MoCo v2: no BN in head
        self.world_size = get_world_size()
        keys_per_step = cfg.train.batch_size * self.frames_per_sample() * self.world_size
        self._check_queue(keys_per_step)
        self.split = 1
        if m.shuffle_bn and self.world_size == 1 and m.split_bn > 1:
            self.split = m.split_bn
            convert_split_batchnorm(self, m.split_bn)
        elif self.world_size == 1:
            print("moco: shuffle-BN is off (one rank, method.split_bn <= 1 or method.shuffle_bn=false)", flush=True)
        self.momentum_backbone = self.momentum_copy(self.backbone)
        self.momentum_projector = self.momentum_copy(self.projector)
        # same initial queue on every rank whatever the rank's seed: a fixed generator
        queue = torch.randn(m.queue_size, self.embed_dim, generator=torch.Generator().manual_seed(0))
        self.register_buffer("queue", F.normalize(queue, dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _check_queue(self, keys_per_step: int) -> None:
        k = self.cfg.method.queue_size
        if k < keys_per_step:
            raise ConfigError(
                f"method.queue_size={k} is smaller than the global keys per step ({keys_per_step} = batch x "
                f"frames-per-sample x ranks): raise method.queue_size to at least {keys_per_step}"
            )

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised keys of ``x`` in the original order, through the momentum encoder with shuffle-BN."""
        shuffle = self.cfg.method.shuffle_bn and (self.world_size > 1 or self.split > 1) and self.training
        if shuffle:
            x, idx_unshuffle = batch_shuffle(x)
        k = self.momentum_projector(self.features(self.momentum_backbone, x))
        if shuffle:
            k = batch_unshuffle(k, idx_unshuffle)
        return F.normalize(k, dim=1)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Put the gathered keys of all ranks into the queue over its oldest entries, wrapping around the end."""
        n, size = keys.shape[0], self.queue.shape[0]
        self._check_queue(n)
        ptr = int(self.queue_ptr)
        idx = (ptr + torch.arange(n, device=self.queue.device)) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + n) % size)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x_q, x_k = self.views(batch)
        q = F.normalize(self.projector(self.features(self.backbone, x_q)), dim=1)
        k = self.keys(x_k)
        l_pos = (q * k).sum(dim=1, keepdim=True)
        l_neg = q @ self.queue.clone().detach().T
        logits = torch.cat([l_pos, l_neg], dim=1) / self.cfg.method.temperature
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
        if self.training:
            self.enqueue(concat_all_gather(k))
        out = {
            "loss": loss,
            "acc_top1": (logits.detach().argmax(dim=1) == 0).float().mean(),
            "pos_sim": l_pos.detach().mean(),
            "neg_sim": l_neg.detach().mean(),
        }
        return out | self.extra_logs(batch, q)
