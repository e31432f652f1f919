"""The stem check: batch dependence is measured (1 without batch statistics), the reference MoCo's queue and EMA."""

from __future__ import annotations

import json

import torch
from torch import nn

from ssl_video.experiments import moco_stem_check as check


def test_batch_dependence_is_one_without_batch_statistics_and_low_for_the_stock_stem_at_32px():
    torch.manual_seed(0)
    net = check.resnet18("imagenet")
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.BatchNorm2d):  # no batch statistics: a frame's feature is its own
            parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
            setattr(parent, name.rpartition(".")[2], nn.Identity())
    assert abs(check.batch_dependence(net, 32)["same_image"] - 1) < 1e-5
    for seed in (0, 1):  # measured 0.70-0.74 (stock) and 0.98-0.99 (cifar) over seeds 0-5
        torch.manual_seed(seed)
        assert check.batch_dependence(check.resnet18("imagenet"), 32, seed)["same_image"] < 0.85
        assert check.batch_dependence(check.resnet18("cifar"), 32, seed)["same_image"] > 0.95


def test_reference_moco_updates_its_key_encoder_by_ema_and_its_queue_as_a_ring():
    torch.manual_seed(0)
    moco = check.ReferenceMoCo("imagenet", queue_size=24, momentum=0.9)
    q0 = [p.detach().clone() for p in moco.q_enc.parameters()]
    k0 = [p.detach().clone() for p in moco.k_enc.parameters()]
    x = torch.randn(16, 3, 32, 32)
    out = moco.step(x, x)
    for pk, a, b in zip(moco.k_enc.parameters(), k0, q0, strict=True):  # the update before the step's forward
        torch.testing.assert_close(pk, 0.9 * a + 0.1 * b)
    assert moco.ptr == 16 and set(out) == {"loss", "acc_top1", "pos_sim", "neg_sim"}
    first_keys = moco.queue[:16].clone()
    moco.step(x, x)
    assert moco.ptr == 8  # 32 keys into 24 slots: the second batch wraps onto the oldest 8
    torch.testing.assert_close(moco.queue[8:16], first_keys[8:16])  # untouched by the wrap
    assert not torch.allclose(moco.queue[:8], first_keys[:8])


def test_cli_writes_rows_for_each_stem(tmp_path):
    out = tmp_path / "rows.jsonl"
    assert check.main(["--steps", "4", "--images", "8", "--stems", "imagenet", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["check"] for r in rows] == ["batch_dependence"] * 2 + ["moco"] * 4  # a row per quarter of the run
    assert [r["step"] for r in rows[2:]] == [1, 2, 3, 4] and 0 <= rows[-1]["acc_top1"] <= 1
