"""Optimisers and the learning-rate schedule: SGD, Adam(W), LARS; linear warmup then cosine / constant / step decay.

``build_optimizer(method, cfg.optim)`` and ``build_scheduler(optimizer, cfg.optim, cfg.train.steps)`` are what the
trainer calls. ``optim.name=lars`` is LARS as SimCLR and BYOL use it (You et al. 2017, "Large batch training of
convolutional networks"): SGD with momentum whose step for each parameter tensor is scaled by the trust ratio
``eta * ||w|| / ||g + wd * w||``. Biases and normalisation parameters (every tensor with ``ndim <= 1``: conv/linear
biases, BN / LayerNorm / GroupNorm scales and shifts) get neither weight decay nor the trust ratio, as in SimCLR/BYOL:
for them LARS is plain momentum SGD.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from ssl_video.errors import ConfigError
from ssl_video.schema import choice

OPTIMIZERS = ("sgd", "adam", "adamw", "lars")
SCHEDULES = ("cosine", "constant", "step")


@dataclass
class OptimConfig:
    """The ``optim`` section."""

    name: str = choice("sgd", OPTIMIZERS)  # sgd | adam | adamw | lars
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    schedule: str = choice("cosine", SCHEDULES)  # cosine | constant | step
    step_milestones: list[int] = field(default_factory=list)
    grad_clip: float | None = None
    lars_eta: float = 0.001  # LARS trust coefficient (SimCLR/BYOL); biases and norm parameters are not adapted


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling on top of heavy-ball momentum.

    Per parameter tensor ``w`` with gradient ``g``, in a group with learning rate ``lr``:

    - ``d = g + weight_decay * w``;
    - if the group has ``lars_adapt``: ``d *= eta * ||w|| / ||d||`` (the trust ratio; 1 where either norm is 0);
    - ``v = momentum * v + lr * d``; ``w -= v``.

    The learning rate sits inside the momentum buffer, as in SimCLR's and BYOL's LARS (and You et al.'s algorithm);
    torch's SGD keeps it outside. The two agree while ``lr`` is constant and differ slightly while it changes.
    """

    def __init__(
        self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001,
        lars_adapt: bool = True,
    ) -> None:  # fmt: skip
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(f"LARS needs lr, momentum, weight_decay >= 0 and eta > 0 (got {lr}, {momentum}, "
                             f"{weight_decay}, {eta})")  # fmt: skip
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta, "lars_adapt": lars_adapt}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if group["weight_decay"]:
                    d = d.add(p, alpha=group["weight_decay"])
                if group["lars_adapt"]:
                    w_norm = torch.linalg.vector_norm(p)
                    d_norm = torch.linalg.vector_norm(d)
                    # a zero weight (fresh bias-like init) or a zero update keeps the plain step
                    trust = torch.where((w_norm > 0) & (d_norm > 0), group["eta"] * w_norm / d_norm, 1.0)
                    d = d * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(d, alpha=group["lr"])
                p.sub_(buf)
        return loss


def excluded_from_lars(p: torch.Tensor) -> bool:
    """Biases and normalisation parameters: the tensors with at most one dimension."""
    return p.ndim <= 1


def build_optimizer(params_or_model: nn.Module | Iterable[torch.Tensor], optim_cfg) -> torch.optim.Optimizer:
    """The optimiser named by ``optim_cfg.name`` over the trainable parameters.

    ``params_or_model``: a module (its parameters with ``requires_grad``) or an iterable of tensors. SGD and Adam(W)
    get one group (weight decay on every tensor); LARS gets two: adapted weights, and biases / norm parameters with
    neither weight decay nor trust ratio (:func:`excluded_from_lars`).
    """
    o = optim_cfg
    source = params_or_model.parameters() if isinstance(params_or_model, nn.Module) else params_or_model
    params = [p for p in source if p.requires_grad]
    if not params:
        raise ConfigError("no trainable parameters to optimise")
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name in ("adam", "adamw"):
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        return cls(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.name == "lars":
        adapted = [p for p in params if not excluded_from_lars(p)]
        excluded = [p for p in params if excluded_from_lars(p)]
        groups = [{"params": adapted}] if adapted else []
        groups += [{"params": excluded, "weight_decay": 0.0, "lars_adapt": False}] if excluded else []
        return LARS(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, eta=o.lars_eta)
    raise ConfigError(f"optim.name '{o.name}' is not supported ({' | '.join(OPTIMIZERS)})")


def lr_factor(step: int, optim_cfg, total_steps: int) -> float:
    """The factor of ``optim.lr`` after ``step`` optimiser steps: linear warmup, then cosine / constant / step decay.

    Warmup reaches the full rate at step ``warmup_steps - 1`` (``(step + 1) / warmup_steps``), so the very first
    update is not taken with a zero rate. Cosine decays from 1 after warmup to 0 at ``total_steps``.
    """
    o, total = optim_cfg, max(1, total_steps)
    if o.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule '{o.schedule}' is not supported ({' | '.join(SCHEDULES)})")
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "cosine":
        progress = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if o.schedule == "step":
        return 0.1 ** sum(step >= m for m in o.step_milestones)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, optim_cfg, total_steps: int) -> LRScheduler:
    """A per-step ``LambdaLR`` applying :func:`lr_factor` to every group's ``optim.lr``."""
    lr_factor(0, optim_cfg, total_steps)  # a bad schedule name fails here, not at the first step
    # a plain function (not a callable object): LambdaLR then keeps no config in its state_dict, so checkpoints stay
    # loadable with weights_only=True
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, optim_cfg, total_steps))
