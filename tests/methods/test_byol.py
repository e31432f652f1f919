"""BYOL: cosine momentum schedule, EMA update with it, collapse monitor, loss falls on synthetic takes."""

from __future__ import annotations

import math
import random

import torch

from ssl_video.methods.byol import cosine_tau
from ssl_video.methods.registry import build_method
from ssl_video.methods.two_view import embedding_std
from ssl_video.synthetic.batches import two_view_batch
from tests.helpers import small_config, train_steps


def test_cosine_schedule_goes_from_base_to_final():
    assert cosine_tau(0, 100, 0.99) == 0.99 and cosine_tau(100, 100, 0.99) == 1.0
    assert math.isclose(cosine_tau(50, 100, 0.99), 0.995)
    assert math.isclose(cosine_tau(25, 100, 0.9, 0.98), 0.98 - 0.08 * (math.cos(math.pi / 4) + 1) / 2)


def test_target_update_uses_the_scheduled_momentum():
    torch.manual_seed(0)
    method = build_method(small_config("byol", "method.proj_dim=16", "method.pred_hidden_dim=32", "train.steps=10"))
    with torch.no_grad():
        for p in method.target_projector.parameters():
            p.add_(torch.randn_like(p))
    before = {n: p.clone() for n, p in method.target_projector.named_parameters()}
    online = dict(method.projector.named_parameters())
    method.on_train_step_end(3)
    tau = 1 - 0.01 * (math.cos(math.pi * 3 / 10) + 1) / 2
    for n, p in method.target_projector.named_parameters():
        torch.testing.assert_close(p, tau * before[n] + (1 - tau) * online[n])
    batch = two_view_batch([0], random.Random(0), batch_size=4, num_frames=2)
    assert math.isclose(float(method(batch)["tau"]), tau, rel_tol=1e-6)


def test_collapse_shows_in_the_logged_std():
    z = torch.randn(4096, 256)
    assert abs(float(embedding_std(z)) - 1 / 16) < 0.003  # spread: about 1/sqrt(d)
    assert float(embedding_std(torch.ones(8, 256))) == 0.0
    torch.manual_seed(0)
    method = build_method(small_config("byol", "method.proj_dim=16", "method.pred_hidden_dim=32"))
    batch = two_view_batch([0], random.Random(0), batch_size=4, num_frames=2)
    assert float(method(batch)["z_std"]) > 0.05
    with torch.no_grad():  # collapse the projector: every embedding the same point
        method.projector[-1].weight.zero_()
        method.projector[-1].bias.fill_(1.0)
    assert float(method(batch)["z_std"]) < 1e-6


def test_loss_falls_on_synthetic_takes():
    # last 5 / first 5 losses over seeds 0-9, one thread: 0.511-0.574 (seed 0: 0.544); bound 0.7
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic whatever the machine's core count or load
    try:
        torch.manual_seed(0)
        rng = random.Random(0)
        method = build_method(small_config("byol", "method.proj_dim=64", "method.pred_hidden_dim=128",
                                           "train.steps=24"))
        batches = [two_view_batch([0, 1, 2], rng, batch_size=4, num_frames=2) for _ in range(3)]
        losses = train_steps(method, 24, lambda step: batches[step % 3])
    finally:
        torch.set_num_threads(threads)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
