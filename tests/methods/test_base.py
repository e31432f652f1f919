"""The method base: momentum pairs declared with momentum_copy and updated once per step by the base."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from torch import nn

from ssl_video.methods.base import Method, MethodConfig


@dataclass
class ToyConfig(MethodConfig):
    name: str = "toy"
    momentum: float = 0.9


class Toy(Method):
    config_class = ToyConfig

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.backbone = nn.Linear(3, 2)
        self.head = nn.Linear(2, 2)
        self.target_backbone = self.momentum_copy(self.backbone)
        self.target_head = self.momentum_copy(self.head)


class ScheduledToy(Toy):
    def momentum_at(self, step: int) -> float:
        return 1.0 - 0.1 / step


def _cfg():
    return OmegaConf.structured({"method": ToyConfig()})


def test_momentum_copy_is_frozen_and_recorded_once():
    toy = Toy(_cfg())
    assert toy.momentum_pairs == [(toy.backbone, toy.target_backbone), (toy.head, toy.target_head)]
    assert not any(p.requires_grad for p in toy.target_backbone.parameters())
    assert all(torch.equal(a, b) for a, b in zip(toy.backbone.parameters(), toy.target_backbone.parameters()))


def test_base_updates_every_pair_once_per_step_with_momentum_at():
    torch.manual_seed(0)
    for cls, coefficient in ((Toy, lambda step: 0.9), (ScheduledToy, lambda step: 1.0 - 0.1 / step)):
        toy = cls(_cfg())
        for step in (1, 2, 3):
            with torch.no_grad():  # the optimiser moved the online weights
                for p in [*toy.backbone.parameters(), *toy.head.parameters()]:
                    p.add_(torch.randn_like(p))
            before = [t.clone() for _, target in toy.momentum_pairs for t in target.parameters()]
            online = [o.clone() for source, _ in toy.momentum_pairs for o in source.parameters()]
            toy.on_train_step_end(step)
            m = coefficient(step)
            after = [t for _, target in toy.momentum_pairs for t in target.parameters()]
            for b, o, a in zip(before, online, after):
                torch.testing.assert_close(a, m * b + (1 - m) * o)
            assert toy.ema_momentum == m


def test_a_method_without_pairs_has_nothing_to_update():
    class Plain(Method):
        pass

    plain = Plain(_cfg())
    plain.on_train_step_end(1)  # no momentum key needed in its config
    assert plain.momentum_pairs == [] and plain.ema_momentum is None
