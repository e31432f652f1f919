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


def test_queue_must_hold_one_step_of_keys_and_any_larger_size_is_accepted():
    with pytest.raises(ConfigError, match=r"queue_size=3 is smaller than the global keys per step \(4 = batch x "):
        build_method(small_config("moco", "method.queue_size=3", "method.proj_dim=16", batch_size=2, num_frames=2))
    method = build_method(_cfg("method.queue_size=10"))  # not a multiple of 4 keys per step: accepted (ring buffer)
    with pytest.raises(ConfigError, match="smaller than the global keys per step"):
        method.enqueue(torch.zeros(11, 16))


def test_the_judo_studys_batch_of_210_frames_fits_the_default_queue():
    # 210 frames a step (the study's batch) and K = 65536: 65536 % 210 != 0, which the old rule rejected
    cfg = small_config("moco", "method.proj_dim=8", batch_size=105, num_frames=2)
    method = build_method(cfg)
    assert method.queue.shape == (65536, 8)
    method.enqueue(torch.ones(210, 8))
    assert int(method.queue_ptr) == 210


def test_enqueue_is_a_ring_buffer_of_the_newest_keys():
    torch.manual_seed(0)
    method = build_method(_cfg("method.queue_size=10"))
    expected = [row.clone() for row in method.queue]  # slot i holds the key written there last
    ptr = 0
    for _ in range(7):  # 4 keys a step into 10 slots: wraps around the end on steps 2, 4, 7
        keys = torch.randn(4, 16)
        method.enqueue(keys)
        for key in keys:  # independent computation: one key at a time into the next slot
            expected[ptr] = key
            ptr = (ptr + 1) % 10
        torch.testing.assert_close(method.queue, torch.stack(expected), rtol=0, atol=0)
        assert int(method.queue_ptr) == ptr


def test_head_output_width_follows_the_study_per_backbone_unless_set():
    from ssl_video.methods.moco import head_output_dim

    m = small_config("moco").method  # proj_dim: null in moco.yaml
    assert m.proj_dim is None and m.proj_hidden_dim == 128  # (small_config narrows the hidden width)
    assert head_output_dim(m, "resnet18") == 128  # MoCo v2's default
    assert head_output_dim(m, "resnet18_gru") == 2048 and head_output_dim(m, "x3d_xs") == 1024  # the study's best
    method = build_method(small_config("moco", "backbone=resnet18_gru", "data.sampling=clip", "method.queue_size=64"))
    linears = [layer for layer in method.projector if isinstance(layer, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(512, 128), (128, 2048)]
    assert method.queue.shape == (64, 2048)
    set_dim = small_config("moco", "backbone=x3d_xs", "method.proj_dim=256").method
    assert head_output_dim(set_dim, "x3d_xs") == 256


def test_default_split_bn_works_on_a_batch_it_does_not_divide():
    # default split_bn 8, a batch of 2 clips x 3 frames = 6 frames: split-BN uses the largest divisor of 6 that is
    # <= 8 and leaves 2 samples per sub-batch, i.e. 3
    from ssl_video.distributed import SplitBatchNorm, split_for_batch

    assert [split_for_batch(n, 8) for n in (1, 2, 4, 6, 7, 12, 16, 32)] == [1, 1, 2, 3, 1, 6, 8, 8]
    torch.manual_seed(0)
    method = build_method(small_config("moco", "method.queue_size=64", "method.proj_dim=16", batch_size=2,
                                       num_frames=3))
    assert method.cfg.method.split_bn == 8
    batch = two_view_batch([0, 1], random.Random(0), batch_size=2, num_frames=3)
    with pytest.warns(UserWarning, match="a batch of 6 uses 3 sub-batches"):
        out = method(batch)
    assert torch.isfinite(out["loss"])
    # the statistics are those of 3 interleaved sub-batches {0, 3}, {1, 4}, {2, 5}: compare the first BN with BN
    # computed on each sub-batch explicitly
    bn = next(m for m in method.backbone.modules() if isinstance(m, SplitBatchNorm))
    x = torch.randn(6, bn.num_features, 4, 4)
    ref = torch.empty_like(x)
    for k in range(3):
        ref[k::3] = F.batch_norm(x[k::3], None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    with pytest.warns(UserWarning):
        torch.testing.assert_close(bn(x), ref)


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
