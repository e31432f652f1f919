"""SimCLR: NT-Xent against an independent computation, 2-rank == 1-rank equivalence, loss falls on synthetic takes."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from ssl_video.methods.registry import build_method
from ssl_video.methods.simclr import nt_xent
from ssl_video.synthetic.batches import two_view_batch
from tests.helpers import small_config, spawn_ranks, train_steps


def test_nt_xent_matches_a_per_anchor_loop():
    torch.manual_seed(0)
    z0, z1 = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 8), dim=1)
    loss, _ = nt_xent(z0, z1, 0.5)
    z = torch.cat([z0, z1])
    terms = []
    for i in range(10):
        pos = (i + 5) % 10
        others = [j for j in range(10) if j != i]
        denom = torch.logsumexp(torch.stack([z[i] @ z[j] / 0.5 for j in others]), 0)
        terms.append(denom - z[i] @ z[pos] / 0.5)
    torch.testing.assert_close(loss, torch.stack(terms).mean())


def _cfg():
    return small_config("simclr", "method.proj_dim=16", batch_size=2, num_frames=2)


def _full_batch():
    # float64: in float32 the summation order alone moves conv1's gradients (~15) by ~2e-4; float64 tests the logic
    return {k: v.double() if v.is_floating_point() else v for k, v in
            two_view_batch([0, 1], random.Random(0), batch_size=4, num_frames=2).items()}


def _rank_worker(rank, world, out):
    torch.manual_seed(0)
    method = build_method(_cfg()).double()  # 2 ranks: BN converted to CpuSyncBatchNorm, statistics over both ranks
    batch = {k: v[2 * rank : 2 * rank + 2] for k, v in _full_batch().items()}
    loss = method(batch)["loss"]
    loss.backward()
    grads = {n: p.grad for n, p in method.named_parameters()}
    for g in grads.values():  # what DDP does: average the gradients over ranks
        torch.distributed.all_reduce(g)
        g /= world
    torch.distributed.all_reduce(loss.detach_())
    torch.save({"loss": loss / world, "grads": grads}, f"{out}/r{rank}.pt")


@pytest.mark.dist
def test_two_ranks_equal_one_rank_on_the_concatenated_batch(tmp_path):
    spawn_ranks(_rank_worker, 2, str(tmp_path))
    torch.manual_seed(0)
    method = build_method(_cfg()).double()  # one process: plain BN over the whole (concatenated) batch
    loss = method(_full_batch())["loss"]
    loss.backward()
    for rank in range(2):
        r = torch.load(tmp_path / f"r{rank}.pt")
        torch.testing.assert_close(r["loss"], loss.detach(), atol=1e-5, rtol=0)
        for name, p in method.named_parameters():
            torch.testing.assert_close(r["grads"][name], p.grad, atol=1e-5, rtol=0, msg=name)


def test_loss_falls_on_synthetic_takes():
    # The loss of the 3 training batches (no gradient) before and after 24 steps: without learning the ratio is 1
    # exactly. The per-step curve used before (last 5 / first 5 steps) spread 0.13-0.93 over seeds 0-9 at one
    # thread, seed 0 the slow one, so its 0.8 bound failed. This ratio over seeds 0-9, one thread: 0.095-0.851
    # (seed 0: 0.851, the others <= 0.48); 0.9 passes every seed and fails a method that does not learn.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic whatever the machine's core count or load
    try:
        torch.manual_seed(0)
        rng = random.Random(0)
        method = build_method(small_config("simclr"))
        batches = [two_view_batch([0, 1, 2], rng, batch_size=4, num_frames=2) for _ in range(3)]

        def batches_loss() -> float:
            with torch.no_grad():
                return sum(float(method(b)["loss"]) for b in batches) / len(batches)

        before = batches_loss()
        losses = train_steps(method, 24, lambda step: batches[step % 3])
        after = batches_loss()
    finally:
        torch.set_num_threads(threads)
    assert after < 0.9 * before, (before, after, losses)
