"""MoCo v2 (He et al. 2020; Chen et al. 2020): momentum key encoder, a queue of K negative keys, MLP head.

Per step: queries ``q`` from view 0 (online encoder), keys ``k`` from view 1 (momentum encoder, no gradient);
``logits = [q.k, q.queue] / T``, cross-entropy with the positive at index 0; then the keys of all ranks are enqueued
(``K`` must be a multiple of the global number of keys per step). The momentum update runs after each optimiser step
(``on_train_step_end``), which is MoCo's order: its update at the start of step s+1 follows step s's optimiser step.

Shuffle-BN: with several ranks the key batch is gathered, permuted by one permutation broadcast from rank 0, the
local slice encoded, and the keys gathered and un-shuffled, so the key encoder's BN statistics never come from the
same sub-batch as the queries'. On one rank ``split_bn`` sub-batches emulate it (BN statistics over interleaved
sub-batches, keys shuffled before splitting); ``split_bn: 1`` turns it off, which is logged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_video.config import ConfigError
from ssl_video.distributed import (
    batch_shuffle,
    batch_unshuffle,
    concat_all_gather,
    convert_split_batchnorm,
    get_world_size,
)
from ssl_video.methods.contrastive import TwoViewConfig, TwoViewMethod, ema_update, momentum_copy
from ssl_video.methods.registry import register
from ssl_video.models.heads import MLP


@dataclass
class MocoConfig(TwoViewConfig):
    name: str = "moco"
    queue_size: int = 65536  # K: a multiple of the global keys per step (batch x frames-per-sample x ranks)
    momentum: float = 0.999  # key encoder EMA
    temperature: float = 0.2
    shuffle_bn: bool = True  # several ranks: shuffle-BN; one rank: split-BN with split_bn sub-batches
    split_bn: int = 8  # one rank: sub-batches of the split-BN emulation (1: off)
    sync_bn: bool = False  # MoCo uses shuffle-BN, not global BN


@register("moco", MocoConfig)
class MoCo(TwoViewMethod):
    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        m = cfg.method
        self.projector = MLP(self.feat_dim, m.proj_hidden_dim, m.proj_dim, norm=False)  # MoCo v2: no BN in the head
        self.world_size = get_world_size()
        keys_per_step = cfg.train.batch_size * self.frames_per_sample() * self.world_size
        self._check_queue(keys_per_step)
        self.split = 1
        if m.shuffle_bn and self.world_size == 1 and m.split_bn > 1:
            self.split = m.split_bn
            convert_split_batchnorm(self, m.split_bn)
        elif self.world_size == 1:
            print("moco: shuffle-BN is off (one rank, method.split_bn <= 1 or method.shuffle_bn=false)", flush=True)
        self.finish_init()
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)
        # same initial queue on every rank whatever the rank's seed: a fixed generator
        queue = torch.randn(m.queue_size, m.proj_dim, generator=torch.Generator().manual_seed(0))
        self.register_buffer("queue", F.normalize(queue, dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _check_queue(self, keys_per_step: int) -> None:
        k = self.cfg.method.queue_size
        if k % keys_per_step:
            raise ConfigError(
                f"method.queue_size={k} is not a multiple of the global keys per step ({keys_per_step} = batch x "
                f"frames-per-sample x ranks)"
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
        """Put the gathered keys of all ranks into the queue (oldest first out)."""
        n = keys.shape[0]
        self._check_queue(n)
        ptr = int(self.queue_ptr)
        self.queue[ptr : ptr + n] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + n) % self.queue.shape[0])

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

    @torch.no_grad()
    def on_train_step_end(self, step: int) -> None:
        m = self.cfg.method.momentum
        ema_update(self.momentum_backbone, self.backbone, m)
        ema_update(self.momentum_projector, self.projector, m)
