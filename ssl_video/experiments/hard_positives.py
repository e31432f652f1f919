#!/usr/bin/env python
"""Hard positive mining vs plain two-view training: view invariance after the same number of steps.

    python -m ssl_video.experiments.hard_positives [--method moco] [--steps 150] [--seeds 0 1 2] [--augment walk]

For each seed, trains the method twice from the same initialisation on in-memory synthetic takes (ResNet-18 per frame,
``frames`` sampling, 2 frames per clip): once with ``data.positive=same_clip`` (two augmentations of the same frames)
and once with ``other_camera`` (the same instant from another camera, each view augmented). Then measures on held-out
takes, with BN statistics re-estimated on them (``ssl_video.eval.view_invariance``): cross-camera top-1 (exact instant,
within +-1 frame) and the instant AUC. The random initialisation is measured the same way as a reference.
CPU-sized by default (32² crops of 48² renders); prints CPU seconds per run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import torch
from tqdm import tqdm

from ssl_video.config import load_config
from ssl_video.eval.view_invariance import cross_camera_scores, precise_bn
from ssl_video.methods.registry import build_method
from ssl_video.synthetic.batches import two_view_batch
from ssl_video.training.step import train_step

TRAIN_TAKES, TEST_TAKES = list(range(12)), list(range(100, 106))
METRICS = ("top1", "top1_near", "instant_auc")


def build(method: str, batch: int, seed: int):
    torch.manual_seed(seed)
    extra = [f"method.queue_size={batch * 2 * 16}", "method.split_bn=2", "method.momentum=0.99"] if method == "moco" \
        else []
    cfg = load_config([f"method={method}", "backbone=resnet18", "train.device=cpu", f"train.batch_size={batch}",
                       "data.sampling=frames", "data.num_frames=2", "method.proj_hidden_dim=128", *extra])
    return build_method(cfg)


def train_and_score(method_name: str, positive: str | None, args, seed: int) -> tuple[dict[str, float], float]:
    """Train (``positive=None``: no training) and score; returns the scores and the CPU seconds taken."""
    start = time.process_time()
    method = build(method_name, args.batch, seed)
    if positive is not None:
        rng = random.Random(seed)
        opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=args.lr, momentum=0.9)
        for step in tqdm(range(args.steps), desc=f"{method_name} {positive} seed {seed}", leave=False):
            batch = two_view_batch(TRAIN_TAKES, rng, args.batch, 2, positive=positive, augment=args.augment)
            train_step(method, method, batch, opt, step=step)
    precise_bn(method.backbone, TEST_TAKES)
    return cross_camera_scores(method.backbone, TEST_TAKES), time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--method", default="moco", choices=["moco", "simclr", "byol", "simsiam"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8, help="clips per step (2 frames each)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--augment", default="walk", help="augmentation preset of both views")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: dict[str, list[dict[str, float]]] = {"random init": [], "same_clip": [], "other_camera": []}
    print(f"{args.method}, {args.steps} steps of {args.batch} clips x 2 frames, augment {args.augment}; "
          f"train takes {len(TRAIN_TAKES)}, held-out takes {len(TEST_TAKES)} (2 cameras x 24 frames each)")
    print(f"{'positive':<14}{'seed':>5}{'top1':>8}{'top1+-1':>9}{'AUC':>8}{'CPU s':>8}")
    for seed in args.seeds:
        for label, positive in (("random init", None), ("same_clip", "same_clip"), ("other_camera", "other_camera")):
            scores, cpu = train_and_score(args.method, positive, args, seed)
            rows[label].append(scores)
            print(f"{label:<14}{seed:>5}{scores['top1']:>8.3f}{scores['top1_near']:>9.3f}"
                  f"{scores['instant_auc']:>8.3f}{cpu:>8.1f}", flush=True)
    print("mean over seeds:")
    for label, scores in rows.items():
        means = [statistics.mean(s[m] for s in scores) for m in METRICS]
        print(f"  {label:<14}" + "".join(f"{m}={v:.3f}  " for m, v in zip(METRICS, means)))
    wins = sum(h["instant_auc"] > p["instant_auc"] for h, p in zip(rows["other_camera"], rows["same_clip"]))
    print(f"other_camera beats same_clip on instant AUC in {wins}/{len(args.seeds)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
