"""Hard positives (``data.positive=other_camera``) with the two-view methods, on in-memory synthetic takes."""

from __future__ import annotations

import random

import pytest
import torch

from ssl_video.eval.view_invariance import cross_camera_scores, precise_bn
from ssl_video.methods.registry import build_method
from ssl_video.synthetic.batches import two_view_batch
from tests.helpers import small_config, train_steps

TRAIN_TAKES, TEST_TAKES = list(range(12)), list(range(100, 106))


def view_invariance_after_training(positive: str, steps: int, seed: int = 0) -> dict[str, float]:
    """python -m ssl_video.experiments.hard_positives's protocol: MoCo from one initialisation, BN re-estimated on
    held-out takes."""
    torch.manual_seed(seed)
    method = build_method(small_config("moco", "method.queue_size=256", "method.split_bn=2", "method.momentum=0.99",
                                       batch_size=8))
    rng = random.Random(seed)
    train_steps(method, steps, lambda _: two_view_batch(TRAIN_TAKES, rng, 8, 2, positive=positive))
    precise_bn(method.backbone, TEST_TAKES)
    return cross_camera_scores(method.backbone, TEST_TAKES)


@pytest.mark.slow
def test_hard_positives_make_the_same_instant_closer_across_cameras():
    # python -m ssl_video.experiments.hard_positives at 100 steps, seed 0 (this test): instant AUC 0.716 hard vs
    # 0.554 plain, top-1
    # within +-1 frame 0.153 vs 0.062. Over seeds 0-4 hard wins 4 of 5 on AUC (mean 0.673 vs 0.580): a CPU-budget
    # effect, not a guarantee for every seed; the README quotes the longer runs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the benchmark's arithmetic, whatever the machine's core count
    try:
        plain = view_invariance_after_training("same_clip", steps=100)
        hard = view_invariance_after_training("other_camera", steps=100)
    finally:
        torch.set_num_threads(threads)
    print(f"plain MoCo {plain}\nhard-positive MoCo {hard}")
    assert hard["instant_auc"] > plain["instant_auc"] + 0.05
    assert hard["top1_near"] > plain["top1_near"]


def test_batches_follow_the_schema_and_pick_other_cameras():
    rng = random.Random(0)
    batch = two_view_batch([0, 1], rng, batch_size=3, num_frames=2, positive="other_camera")
    assert batch["clips"].shape == (3, 2, 2, 3, 32, 32) and batch["clips"].dtype == torch.float32
    assert (batch["camera"][:, 0] != batch["camera"][:, 1]).all()
    same = two_view_batch([0, 1], rng, batch_size=3, num_frames=2, positive="same_clip")
    assert (same["camera"][:, 0] == same["camera"][:, 1]).all()


@pytest.mark.parametrize("name", ["moco", "simclr", "byol", "simsiam"])
def test_every_method_trains_on_cross_camera_positives_and_logs_them(name):
    torch.manual_seed(0)
    extra = ["method.queue_size=64", "method.split_bn=2"] if name == "moco" else []
    method = build_method(small_config(name, *extra))
    batch = two_view_batch([0], random.Random(0), batch_size=4, num_frames=2, positive="other_camera")
    out = method(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and float(out["cross_camera"]) == 1.0
    assert all(p.grad is not None for p in method.backbone.parameters())
