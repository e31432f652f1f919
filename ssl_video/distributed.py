"""Process-group setup for every launch (plain process, torchrun, SLURM via submitit) and collectives.

``init_distributed()`` reads the standard variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), which torchrun sets and which ``submitit.helpers.TorchDistributedEnvironment``
exports under SLURM; without them it runs as a single process and every collective is the identity.
"""

from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto", timeout_s: int = 1800) -> DistInfo:
    """Join the process group described by the environment (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size == 1:
        return DistInfo(0, 1, local_rank, "none")
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())
    from ssl_video.device import resolve_device

    use_cuda = resolve_device(device, local_rank).type == "cuda"
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend=backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s)
    )
    return DistInfo(rank, world_size, local_rank, backend)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


# ----------------------------------------------------------------------------------------------------------
# Collectives for the two-view methods (owner: methods). Every one is the identity on a single process.
# ----------------------------------------------------------------------------------------------------------
def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` of every rank along dim 0, differentiably.

    ``torch.distributed.nn.functional.all_gather``'s backward sums the gradients of all ranks and returns this rank's
    slice, so a loss computed on the gathered tensor backpropagates into every rank's encoder.
    """
    if not is_dist():
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # torch 2.x flags it deprecated, but it is the autograd-aware all_gather on gloo
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x), dim=0)


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` of every rank along dim 0, without gradient (keys, queues, indices)."""
    if not is_dist():
        return x
    out = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks whose backward sums the gradients over ranks too (every rank's loss depends on the sum)."""
    if not is_dist():
        return x
    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():  # deprecated in torch 2.x like all_gather above, still the autograd-aware one
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(x)


@torch.no_grad()
def batch_shuffle(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo's shuffle-BN, step 1: gather ``x`` from every rank, permute it, return this rank's slice.

    The permutation is drawn on rank 0 and broadcast, so every rank cuts the same permuted global batch. Returns
    ``(local_slice, idx_unshuffle)``; pass ``idx_unshuffle`` to :func:`batch_unshuffle` after encoding. On one
    process the permutation is local (use it with split-BN, :func:`convert_split_batchnorm`).
    """
    x_all = concat_all_gather(x)
    n_all = x_all.shape[0]
    idx_shuffle = torch.randperm(n_all, generator=generator).to(x.device)
    if is_dist():
        dist.broadcast(idx_shuffle, src=0)
    idx_unshuffle = torch.argsort(idx_shuffle)
    n_local = x.shape[0]
    idx_this = idx_shuffle.view(get_world_size(), n_local)[get_rank()]
    return x_all[idx_this], idx_unshuffle


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, idx_unshuffle: torch.Tensor) -> torch.Tensor:
    """MoCo's shuffle-BN, step 2: gather the encoded slices and return this rank's rows in the original order."""
    x_all = concat_all_gather(x)
    n_local = x.shape[0]
    idx_this = idx_unshuffle.view(get_world_size(), n_local)[get_rank()]
    return x_all[idx_this]


def _copy_bn(src: nn.modules.batchnorm._BatchNorm, dst: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    if src.affine:
        with torch.no_grad():
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        dst.weight.requires_grad_(src.weight.requires_grad)
        dst.bias.requires_grad_(src.bias.requires_grad)
    if src.track_running_stats:
        dst.running_mean.copy_(src.running_mean)
        dst.running_var.copy_(src.running_var)
        dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.train(src.training)
    ref = src.weight if src.affine else src.running_mean
    return dst.to(ref.device) if ref is not None else dst


def _replace_bn(module: nn.Module, make) -> nn.Module:
    """Return ``module`` with every batch-norm layer ``bn`` replaced by ``make(bn)`` (in place for children)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return make(module)
    for name, child in module.named_children():
        new = _replace_bn(child, make)
        if new is not child:
            setattr(module, name, new)
    return module


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are computed over the batch of every rank; works on CPU / gloo.

    Hand-written because ``torch.nn.SyncBatchNorm`` refuses CPU modules. One differentiable all_reduce of
    ``[sum, sum of squares, count]`` per channel: its backward sums the gradients of every rank, which is what the
    gradient of a loss summed over ranks needs. Any input rank (N, C, ...) is accepted.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"CpuSyncBatchNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training or not self.track_running_stats) or not is_dist():
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        stats = all_reduce_sum_with_grad(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        c = x.shape[1]
        n = stats[-1].detach()
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)  # biased, as BN normalises with
        if self.training and self.track_running_stats:
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * var.detach() * n / max(float(n) - 1, 1.0))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module, device: str | torch.device | None = None) -> nn.Module:
    """Make every batch norm in ``module`` compute statistics over all ranks.

    ``device`` is where the module will run (default: where its parameters are now): CUDA gets
    ``torch.nn.SyncBatchNorm``, anything else :class:`CpuSyncBatchNorm`. Call before wrapping in DDP.
    """
    if device is None:
        ref = next(iter(module.parameters()), None)
        device = ref.device if ref is not None else "cpu"
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)

    def make(bn):
        new = CpuSyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        return _copy_bn(bn, new)

    return _replace_bn(module, make)


def split_for_batch(n: int, num_splits: int) -> int:
    """Split-BN sub-batches for a batch of ``n``: the largest divisor of ``n`` that is <= ``num_splits`` and leaves
    at least 2 samples per sub-batch (batch statistics of one sample are degenerate); 1 (plain BN) if none does."""
    return max([d for d in range(1, min(n // 2, num_splits) + 1) if n % d == 0] or [1])


class SplitBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm with training statistics over ``num_splits`` interleaved sub-batches (samples i, i+s, i+2s, ...).

    One process's stand-in for shuffle-BN (MoCo's single-GPU recipe): query and key encoders normalise over
    different sub-batches, so the contrastive task cannot be solved from batch statistics. Running statistics are
    the mean over splits; evaluation is plain batch norm. A batch that ``num_splits`` does not divide (e.g. a batch
    of 6 with the default 8) uses :func:`split_for_batch` sub-batches instead (3), with a warning.
    """

    def __init__(self, num_features: int, num_splits: int, **kw) -> None:
        super().__init__(num_features, **kw)
        self.num_splits = num_splits

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"SplitBatchNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        if not self.training or s <= 1:
            return super().forward(x)
        n, c = x.shape[:2]
        s = split_for_batch(n, s)
        if s != self.num_splits:
            warnings.warn(f"split-BN: a batch of {n} uses {s} sub-batches (num_splits={self.num_splits} does not "
                          f"divide it; set method.split_bn to a divisor of the batch to choose)", stacklevel=2)
        if s <= 1:
            return super().forward(x)
        rm, rv = self.running_mean.repeat(s), self.running_var.repeat(s)
        w = self.weight.repeat(s) if self.affine else None
        b = self.bias.repeat(s) if self.affine else None
        y = nn.functional.batch_norm(
            x.reshape(n // s, s * c, *x.shape[2:]), rm, rv, w, b, True, self.momentum or 0.1, self.eps
        ).view_as(x)
        with torch.no_grad():
            self.running_mean.copy_(rm.view(s, c).mean(0))
            self.running_var.copy_(rv.view(s, c).mean(0))
            self.num_batches_tracked.add_(1)
        return y


def convert_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every batch norm of ``module`` by a :class:`SplitBatchNorm` with ``num_splits`` splits."""

    def make(bn):
        new = SplitBatchNorm(bn.num_features, num_splits, eps=bn.eps, momentum=bn.momentum, affine=bn.affine)
        return _copy_bn(bn, new)

    return _replace_bn(module, make)
