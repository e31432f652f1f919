"""ssl_video/optim.py: LARS against a hand computation in float64, its exclusions, warmup + cosine / step schedules."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ssl_video.config import ConfigError, load_config
from ssl_video.optim import LARS, build_optimizer, build_scheduler, lr_factor


def _optim(*extra):
    return load_config([f"optim.{kv}" for kv in extra]).optim


def _lars_reference(w, grads, lr, momentum, wd, eta):
    """The SimCLR/BYOL LARS update in numpy float64, written out from the formula (not from ssl_video.optim)."""
    w, v = np.array(w, dtype=np.float64), np.zeros(np.shape(w))
    for g in grads:
        d = np.asarray(g, dtype=np.float64) + wd * w
        trust = eta * np.sqrt((w**2).sum()) / np.sqrt((d**2).sum())
        v = momentum * v + lr * trust * d
        w = w - v
    return w


def test_lars_steps_match_the_formula():
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(4, 3, generator=gen) * 2.0
    grads = [torch.randn(4, 3, generator=gen) * s for s in (0.1, 5.0, 1.0)]  # trust ratios far from 1 and varying
    w = nn.Parameter(w0.clone())
    opt = build_optimizer([w], _optim("name=lars", "lr=0.7", "momentum=0.9", "weight_decay=0.01", "lars_eta=0.02"))
    assert isinstance(opt, LARS)
    for g in grads:
        w.grad = g.clone()
        opt.step()
    expected = _lars_reference(w0.numpy(), [g.numpy() for g in grads], lr=0.7, momentum=0.9, wd=0.01, eta=0.02)
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-5, atol=1e-7)
    # the step is not plain SGD: with these gradients the trust ratio changes the result by orders of magnitude
    sgd = w0.numpy() - 0.7 * (grads[0].numpy() + 0.01 * w0.numpy())
    assert not np.allclose(_lars_reference(w0.numpy(), grads[:1], 0.7, 0.9, 0.01, 0.02), sgd, rtol=0.1)


def test_biases_and_norm_parameters_get_plain_momentum_sgd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    model[1].weight.data.uniform_(0.5, 1.5)  # BN scales away from 1 so weight decay would show
    model[1].bias.data.uniform_(-1, 1)
    opt = build_optimizer(model, _optim("name=lars", "lr=0.3", "momentum=0.9", "weight_decay=0.1"))
    adapted, excluded = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in adapted["params"]} == {"0.weight", "3.weight"}
    assert {names[id(p)] for p in excluded["params"]} == {"0.bias", "1.weight", "1.bias", "3.bias"}
    assert adapted["weight_decay"] == 0.1 and adapted["lars_adapt"]
    assert excluded["weight_decay"] == 0.0 and not excluded["lars_adapt"]

    # the excluded tensors follow torch's momentum SGD without weight decay (equal while lr is constant)
    reference = [p.detach().clone().requires_grad_() for p in excluded["params"]]
    sgd = torch.optim.SGD(reference, lr=0.3, momentum=0.9, weight_decay=0.0)
    for _ in range(3):
        x = torch.randn(8, 3, 8, 8)
        opt.zero_grad()
        model(x).square().mean().backward()
        for p, r in zip(excluded["params"], reference):
            r.grad = p.grad.clone()
        opt.step()
        sgd.step()
    for p, r in zip(excluded["params"], reference):
        torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-6, atol=1e-7)


def test_zero_weight_or_zero_gradient_keeps_trust_ratio_one():
    w = nn.Parameter(torch.zeros(2, 2))  # ||w|| = 0: the trust ratio would zero the step; LARS keeps lr * g
    opt = LARS([w], lr=0.5, momentum=0.0, weight_decay=0.0, eta=0.001)
    w.grad = torch.ones(2, 2)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((2, 2), -0.5))
    w.grad = torch.zeros(2, 2)  # ||d|| = 0: no NaN from 0 / 0
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((2, 2), -0.5))


def test_lars_state_survives_a_weights_only_checkpoint():
    """Resume: 2 steps + state_dict through torch.load(weights_only=True) + 2 steps == 4 steps."""
    gen = torch.Generator().manual_seed(1)
    w0, b0 = torch.randn(3, 3, generator=gen), torch.randn(3, generator=gen)
    grads = [(torch.randn(3, 3, generator=gen), torch.randn(3, generator=gen)) for _ in range(4)]
    cfg = _optim("name=lars", "lr=0.1", "weight_decay=1e-3", "warmup_steps=2")

    def run(opt, sched, params, gs):
        for gw, gb in gs:
            params[0].grad, params[1].grad = gw.clone(), gb.clone()
            opt.step()
            sched.step()

    full = [nn.Parameter(w0.clone()), nn.Parameter(b0.clone())]
    opt = build_optimizer(full, cfg)
    run(opt, build_scheduler(opt, cfg, 4), full, grads)

    part = [nn.Parameter(w0.clone()), nn.Parameter(b0.clone())]
    opt = build_optimizer(part, cfg)
    sched = build_scheduler(opt, cfg, 4)
    run(opt, sched, part, grads[:2])
    buf = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = build_optimizer(part, cfg)
    sched2 = build_scheduler(opt2, cfg, 4)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    run(opt2, sched2, part, grads[2:])
    for a, b in zip(full, part):
        assert torch.equal(a, b)


def test_warmup_then_cosine_at_known_steps():
    cfg = _optim("lr=2.0", "warmup_steps=10", "schedule=cosine")
    w = nn.Parameter(torch.zeros(1))
    opt = build_optimizer([w], cfg)
    sched = build_scheduler(opt, cfg, total_steps=110)
    lrs = []
    for _ in range(111):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # lr used for the update after s steps; values worked out by hand:
    # warmup (s+1)/10 * 2; then 0.5 * (1 + cos(pi * (s - 10) / 100)) * 2
    expected = {0: 0.2, 4: 1.0, 9: 2.0, 10: 2.0, 35: 1.0 + math.cos(math.pi / 4), 60: 1.0, 85: 1.0 - math.sqrt(0.5),
                110: 0.0}  # fmt: skip
    for step, value in expected.items():
        assert lrs[step] == pytest.approx(value, abs=1e-12), step
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone after warmup


def test_step_and_constant_schedules_and_lars_groups_share_the_schedule():
    step_cfg = _optim("name=lars", "schedule=step", "step_milestones=[3,6]", "lr=1.0")
    assert [lr_factor(s, step_cfg, 10) for s in (0, 2, 3, 5, 6, 9)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_factor(7, _optim("schedule=constant"), 10) == 1.0
    model = nn.Linear(3, 2)  # weight adapted, bias excluded: both groups follow the schedule
    opt = build_optimizer(model, step_cfg)
    sched = build_scheduler(opt, step_cfg, 10)
    for _ in range(3):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.1])


def test_bad_names_are_one_line_config_errors():
    # load_config rejects them first (tests/test_config.py); the builders still check a config made another way
    with pytest.raises(ConfigError, match=r"config key 'optim.name' got 'lamb'; choose from: sgd, adam, adamw, lars"):
        _optim("name=lamb")
    unchecked = OmegaConf.merge(_optim(), {"name": "lamb"})
    with pytest.raises(ConfigError, match="optim.name 'lamb' is not supported"):
        build_optimizer(nn.Linear(2, 2), unchecked)
    opt = build_optimizer(nn.Linear(2, 2), _optim())
    with pytest.raises(ConfigError, match="optim.schedule 'poly' is not supported"):
        build_scheduler(opt, OmegaConf.merge(_optim(), {"schedule": "poly"}), 10)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        build_optimizer(frozen, _optim())
