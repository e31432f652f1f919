"""Collectives of ssl_video.distributed: gather with gradient, shuffle / unshuffle, CPU sync-BN, split-BN.

Multi-process tests start 2 gloo processes with torch.multiprocessing (``spawn_ranks``, also used by the method tests);
each rank writes what it saw to ``tmp_path`` and the parent compares with an independent 1-process computation.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from ssl_video.distributed import (
    CpuSyncBatchNorm,
    SplitBatchNorm,
    batch_shuffle,
    batch_unshuffle,
    concat_all_gather,
    convert_split_batchnorm,
    convert_sync_batchnorm,
    gather_with_grad,
)
from tests.helpers import spawn_ranks


def test_collectives_are_identity_on_one_process():
    x = torch.randn(6, 3)
    assert gather_with_grad(x) is x and concat_all_gather(x) is x
    shuffled, idx = batch_shuffle(x)
    assert not torch.equal(shuffled, x) and sorted(shuffled[:, 0].tolist()) == sorted(x[:, 0].tolist())
    assert torch.equal(batch_unshuffle(shuffled, idx), x)


# --------------------------------------------------------------------------------------------------------------------
def _gather_worker(rank, world, out):
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    y = gather_with_grad(x)
    w = torch.arange(y.numel(), dtype=torch.float32).view_as(y)  # the same weights on every rank
    (y * w).sum().backward()
    torch.save({"y": y.detach(), "grad": x.grad, "nograd": concat_all_gather(x).requires_grad}, f"{out}/r{rank}.pt")


@pytest.mark.dist
def test_gather_with_grad_sums_gradients_over_ranks(tmp_path):
    spawn_ranks(_gather_worker, 2, str(tmp_path))
    w = torch.arange(12, dtype=torch.float32).view(4, 3)
    for rank in range(2):
        r = torch.load(tmp_path / f"r{rank}.pt")
        assert torch.equal(r["y"], torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)]))
        # d/dx of sum over 2 ranks of sum(y * w): each rank's slice of w, counted once per rank
        assert torch.equal(r["grad"], 2 * w[2 * rank : 2 * rank + 2])
        assert r["nograd"] is False


# --------------------------------------------------------------------------------------------------------------------
def _shuffle_worker(rank, world, out):
    torch.manual_seed(100 + rank)  # different local RNG: the permutation must still be rank 0's
    x = torch.arange(4, dtype=torch.float32).view(4, 1) + 10 * rank
    local, idx = batch_shuffle(x)
    back = batch_unshuffle(local * 2, idx)
    torch.save({"local": local, "idx": idx, "back": back}, f"{out}/r{rank}.pt")


@pytest.mark.dist
def test_shuffle_is_one_cross_rank_permutation_and_unshuffle_restores_order(tmp_path):
    spawn_ranks(_shuffle_worker, 2, str(tmp_path))
    r = [torch.load(tmp_path / f"r{k}.pt") for k in range(2)]
    assert torch.equal(r[0]["idx"], r[1]["idx"])  # one permutation, broadcast from rank 0
    seen = torch.cat([r[0]["local"], r[1]["local"]]).flatten()
    everything = torch.tensor([0.0, 1, 2, 3, 10, 11, 12, 13])
    assert torch.equal(seen.sort().values, everything) and not torch.equal(seen, everything)
    for rank in range(2):
        assert torch.equal(r[rank]["back"].flatten(), 2 * (torch.arange(4.0) + 10 * rank))


# --------------------------------------------------------------------------------------------------------------------
def _bn_data():
    torch.manual_seed(0)
    return torch.randn(8, 3, 5, 5) * 3 + 1, torch.randn(8, 3, 5, 5)


def _sync_bn_worker(rank, world, out):
    x, g = _bn_data()
    bn = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))[0]
    assert isinstance(bn, CpuSyncBatchNorm)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    xl = x[4 * rank : 4 * rank + 4].clone().requires_grad_(True)
    y = bn(xl)
    (y * g[4 * rank : 4 * rank + 4]).sum().backward()
    dist.all_reduce(bn.weight.grad)
    dist.all_reduce(bn.bias.grad)
    torch.save({"y": y.detach(), "xg": xl.grad, "wg": bn.weight.grad, "bg": bn.bias.grad,
                "rm": bn.running_mean, "rv": bn.running_var}, f"{out}/r{rank}.pt")


@pytest.mark.dist
def test_cpu_sync_bn_equals_batch_norm_on_the_concatenated_batch(tmp_path):
    spawn_ranks(_sync_bn_worker, 2, str(tmp_path))
    x, g = _bn_data()
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    x = x.requires_grad_(True)
    y = bn(x)
    (y * g).sum().backward()
    for rank in range(2):
        r = torch.load(tmp_path / f"r{rank}.pt")
        sl = slice(4 * rank, 4 * rank + 4)
        torch.testing.assert_close(r["y"], y[sl].detach(), atol=1e-5, rtol=0)
        torch.testing.assert_close(r["xg"], x.grad[sl], atol=1e-5, rtol=0)
        torch.testing.assert_close(r["wg"], bn.weight.grad, atol=1e-5, rtol=0)
        torch.testing.assert_close(r["bg"], bn.bias.grad, atol=1e-5, rtol=0)
        torch.testing.assert_close(r["rm"], bn.running_mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(r["rv"], bn.running_var, atol=1e-5, rtol=0)


def test_convert_sync_batchnorm_uses_torch_on_cuda_and_ours_on_cpu():
    def net():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm1d(4)))

    cpu = convert_sync_batchnorm(net())
    assert isinstance(cpu[1], CpuSyncBatchNorm) and isinstance(cpu[2][0], CpuSyncBatchNorm)
    cuda = convert_sync_batchnorm(net(), device="cuda")  # conversion itself needs no GPU
    assert isinstance(cuda[1], nn.SyncBatchNorm) and isinstance(cuda[2][0], nn.SyncBatchNorm)
    x = torch.randn(4, 3, 6, 6)
    plain = net()
    torch.testing.assert_close(convert_sync_batchnorm(plain)(x), plain(x))  # one process: plain batch norm


def test_split_bn_normalises_each_interleaved_sub_batch_on_its_own():
    torch.manual_seed(0)
    bn = nn.Sequential(nn.BatchNorm2d(3))
    with torch.no_grad():
        bn[0].weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn[0].bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    split = convert_split_batchnorm(bn, 4)
    assert isinstance(split[0], SplitBatchNorm)
    x = torch.randn(8, 3, 2, 2) + torch.arange(8.0).view(8, 1, 1, 1)
    y = split(x)
    for j in range(4):
        ref = nn.functional.batch_norm(x[j::4], None, None, split[0].weight, split[0].bias, True)
        torch.testing.assert_close(y[j::4], ref)
    split.eval()
    torch.testing.assert_close(split(x), nn.functional.batch_norm(
        x, split[0].running_mean, split[0].running_var, split[0].weight, split[0].bias, False))
