"""MoCo v2: queue size check, EMA, 2-rank == 1-rank given the same keys and queue, shuffle-BN, queue, loss falls."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_video.config import ConfigError
from ssl_video.methods.registry import build_method
from ssl_video.synthetic.batches import two_view_batch
from tests.helpers import small_config, spawn_ranks, train_steps


def _cfg(*extra):
    # 2 samples x 2 frames per rank: 4 keys per rank, 8 per 2-rank step; K = 16
    return small_config("moco", "method.queue_size=16", "method.proj_dim=16", "method.split_bn=2", *extra,
                        batch_size=2, num_frames=2)


def _full_batch(dtype=torch.float64):
    batch = two_view_batch([0, 1], random.Random(0), batch_size=4, num_frames=2)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}


def _bn_eval(method):
    """Training mode (so the queue is updated) with every BN on running statistics: per-rank BN cannot differ."""
    method.train()
    for m in method.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return method


def test_queue_size_must_be_a_multiple_of_the_global_keys_per_step():
    with pytest.raises(ConfigError, match=r"queue_size=10 is not a multiple of the global keys per step \(4 "):
        build_method(small_config("moco", "method.queue_size=10", batch_size=2, num_frames=2))
    method = build_method(_cfg())
    with pytest.raises(ConfigError, match="not a multiple"):
        method.enqueue(torch.zeros(3, 16))


def test_momentum_update_follows_its_formula():
    torch.manual_seed(0)
    method = build_method(_cfg("method.momentum=0.9"))
    with torch.no_grad():
        for p in method.momentum_backbone.parameters():
            p.add_(torch.randn_like(p))
    before = {n: p.clone() for n, p in method.momentum_backbone.named_parameters()}
    online = dict(method.backbone.named_parameters())
    method.on_train_step_end(1)
    for n, p in method.momentum_backbone.named_parameters():
        torch.testing.assert_close(p, 0.9 * before[n] + 0.1 * online[n])
    assert not any(p.requires_grad for p in method.momentum_projector.parameters())


def test_one_rank_split_bn_feeds_the_key_encoder_a_permuted_batch():
    torch.manual_seed(0)
    method = build_method(_cfg()).train()
    seen = []
    method.momentum_backbone.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    x = _full_batch(torch.float32)["clips"][:2, 1].flatten(0, 1)
    k = method.keys(x)
    assert not torch.equal(seen[0], x)
    assert torch.equal(seen[0].sum((1, 2, 3)).sort().values, x.sum((1, 2, 3)).sort().values)
    _bn_eval(method)
    plain = F.normalize(method.momentum_projector(method.features(method.momentum_backbone, x)), dim=1)
    torch.testing.assert_close(method.keys(x), plain)  # un-shuffled back into the original order
    assert k.shape == plain.shape


def _rank_worker(rank, world, out):
    torch.manual_seed(0)
    method = _bn_eval(build_method(_cfg()).double())
    seen = []
    method.momentum_backbone.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    batch = {k: v[2 * rank : 2 * rank + 2] for k, v in _full_batch().items()}
    loss = method(batch)["loss"]
    loss.backward()
    grads = {n: p.grad for n, p in method.named_parameters() if p.grad is not None}
    for g in grads.values():  # DDP's gradient averaging
        torch.distributed.all_reduce(g)
        g /= world
    torch.distributed.all_reduce(loss.detach_())
    x_k = batch["clips"][:, 1].flatten(0, 1)
    no_shuffle = F.normalize(method.momentum_projector(method.features(method.momentum_backbone, x_k)), dim=1)
    keys = method.keys(x_k)
    # shuffle-BN with BN in training mode: statistics of the first BN on what the key encoder saw vs the local batch
    method.momentum_backbone.train()
    stem = method.momentum_backbone.conv1
    seen.clear()
    method.keys(x_k)
    torch.save({"loss": loss / world, "grads": grads, "queue": method.queue, "ptr": method.queue_ptr, "keys": keys,
                "no_shuffle": no_shuffle, "seen": seen[0], "local": x_k, "stem_seen": stem(seen[0]).mean((0, 2, 3)),
                "stem_local": stem(x_k).mean((0, 2, 3))}, f"{out}/r{rank}.pt")


@pytest.mark.dist
def test_two_ranks_equal_one_rank_and_shuffle_bn_permutes_across_ranks(tmp_path):
    spawn_ranks(_rank_worker, 2, str(tmp_path))
    torch.manual_seed(0)
    method = _bn_eval(build_method(_cfg()).double())  # one process, the whole batch: 8 keys enqueued
    full = _full_batch()
    loss = method(full)["loss"]
    loss.backward()
    r = [torch.load(tmp_path / f"r{k}.pt") for k in range(2)]
    for rank in range(2):
        torch.testing.assert_close(r[rank]["loss"], loss.detach(), atol=1e-5, rtol=0)
        for name, p in method.named_parameters():
            if p.grad is not None:
                torch.testing.assert_close(r[rank]["grads"][name], p.grad, atol=1e-5, rtol=0, msg=name)
        # the queue: identical on every rank, equal to the 1-rank queue (keys of all ranks, in rank order)
        assert torch.equal(r[rank]["queue"], r[0]["queue"]) and int(r[rank]["ptr"]) == 8
        torch.testing.assert_close(r[rank]["queue"], method.queue, atol=1e-6, rtol=0)
        # un-shuffling restores the order: with BN on running statistics the keys equal the no-shuffle keys
        torch.testing.assert_close(r[rank]["keys"], r[rank]["no_shuffle"], atol=1e-10, rtol=0)
    # the key encoder saw a permutation of the global key batch that mixes the ranks' samples
    seen = torch.cat([r[0]["seen"], r[1]["seen"]])
    local = torch.cat([r[0]["local"], r[1]["local"]])
    assert torch.equal(seen.sum((1, 2, 3)).sort().values, local.sum((1, 2, 3)).sort().values)
    owners = [[int(torch.isclose(local.sum((1, 2, 3)), s).nonzero()[0]) // 4 for s in r[k]["seen"].sum((1, 2, 3))]
              for k in range(2)]
    assert any(o != k for k in range(2) for o in owners[k]), owners
    for k in range(2):  # so the BN statistics differ from those of the unshuffled local batch
        assert not torch.allclose(r[k]["stem_seen"], r[k]["stem_local"], atol=1e-4)


def test_loss_falls_on_synthetic_takes():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic whatever the machine's core count or load
    try:
        torch.manual_seed(0)
        rng = random.Random(0)
        # 8 clips x 2 frames a step over 12 takes, split-BN over 2 sub-batches of 8 (smaller sub-batches make BN
        # statistics too noisy to learn in 30 steps); K = two steps' keys, so the loss is compared once the queue
        # holds real keys
        method = build_method(small_config("moco", "method.queue_size=32", "method.split_bn=2",
                                           "method.momentum=0.9", batch_size=8))
        batches = [two_view_batch(list(range(12)), rng, batch_size=8, num_frames=2) for _ in range(3)]
        losses = train_steps(method, 30, lambda step: batches[step % 3])
    finally:
        torch.set_num_threads(threads)
    early, late = sum(losses[3:8]) / 5, sum(losses[-5:]) / 5
    assert late < 0.9 * early, losses  # seeds 0-9, one thread: ratio 0.630-0.823 (seed 0: 0.630)
