"""Is it MoCo or the 32² regime? An independent MoCo v2 on a toy set, with torchvision's stem and the CIFAR stem.

    python -m ssl_video.experiments.moco_stem_check --steps 160 --images 20000

Two measurements, neither using ssl-video's MoCo, loader or augmentations, so a fault there cannot explain them:

1. ``batch dependence``: a random ResNet-18 in training mode (batch norm on batch statistics) encodes 4 images
   twice, once beside 4 other images and once beside 4 different ones; the cosine between the two features of the
   same image, against the cosine between features of different images. Near 1 the feature is the image's own;
   near the other-image value it is mostly the batch's.
2. ``moco``: MoCo v2 written out as in facebookresearch/moco's ``builder.py`` (momentum key encoder, queue, shuffle-BN
   emulated by encoding the keys in two shuffled halves, Linear-ReLU-Linear head, τ 0.2), trained on ``--images``
   smooth random colour images (6x6 noise, bicubic to 48²) with torchvision.transforms.v2 crops, flips and jitter, at
   the judo cpu scale's step (16 frames, SGD 0.05, K 256, momentum 0.99). A working MoCo's top-1 (the positive key
   beats every queued key) climbs; chance is 1 / (K + 1).

Prints the rows and appends them as JSON lines to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.transforms import v2

from ssl_video.models.backbones import STEMS, set_cifar_stem


def resnet18(stem: str, out_dim: int | None = None) -> nn.Module:
    """torchvision ResNet-18; ``out_dim``: MoCo v2's Linear-ReLU-Linear head in place of ``fc``, else ``fc`` dropped."""
    net = torchvision.models.resnet18()
    if stem == "cifar":
        set_cifar_stem(net)
    net.fc = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, out_dim)) if out_dim else nn.Identity()
    return net


@torch.no_grad()
def batch_dependence(net: nn.Module, size: int, seed: int = 0) -> dict:
    """Cosines in training mode: the same image beside other batch mates, and two different images."""
    g = torch.Generator().manual_seed(seed)
    images = F.interpolate(torch.rand(12, 3, 6, 6, generator=g), size=size, mode="bicubic")
    net.train()
    a = F.normalize(net(images[:8]), dim=1)
    b = F.normalize(net(torch.cat([images[:4], images[8:12]])), dim=1)
    return {"same_image": (a[:4] * b[:4]).sum(1).mean().item(), "other_images": (a[:4] @ a[4:].T).mean().item()}


def toy_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=48, mode="bicubic").clamp(0, 1)


class ReferenceMoCo:
    """MoCo v2 as builder.py has it; one rank, shuffle-BN emulated by two shuffled halves of the key batch."""

    def __init__(self, stem: str, queue_size: int = 256, momentum: float = 0.99, temperature: float = 0.2,
                 lr: float = 0.05) -> None:  # fmt: skip
        self.q_enc = resnet18(stem, out_dim=128)
        self.k_enc = copy.deepcopy(self.q_enc)
        for p in self.k_enc.parameters():
            p.requires_grad_(False)
        self.queue = F.normalize(torch.randn(queue_size, 128), dim=1)
        self.ptr, self.m, self.t = 0, momentum, temperature
        self.opt = torch.optim.SGD(self.q_enc.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)

    def step(self, x_q: torch.Tensor, x_k: torch.Tensor) -> dict:
        q = F.normalize(self.q_enc(x_q), dim=1)
        with torch.no_grad():
            for pk, pq in zip(self.k_enc.parameters(), self.q_enc.parameters(), strict=True):
                pk.mul_(self.m).add_(pq.detach(), alpha=1 - self.m)
            perm, half = torch.randperm(len(x_k)), len(x_k) // 2
            k = torch.empty(len(x_k), 128)
            k[perm[:half]], k[perm[half:]] = self.k_enc(x_k[perm[:half]]), self.k_enc(x_k[perm[half:]])
            k = F.normalize(k, dim=1)
        l_pos, l_neg = (q * k).sum(1, keepdim=True), q @ self.queue.T
        logits = torch.cat([l_pos, l_neg], 1) / self.t
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        idx = (self.ptr + torch.arange(len(k))) % len(self.queue)
        self.queue[idx], self.ptr = k, (self.ptr + len(k)) % len(self.queue)
        return {"loss": loss.item(), "acc_top1": (logits.argmax(1) == 0).float().mean().item(),
                "pos_sim": l_pos.mean().item(), "neg_sim": l_neg.mean().item()}  # fmt: skip


def train_reference(stem: str, steps: int, images: int, batch: int = 16, windows: int = 4, seed: int = 0) -> list:
    """Train :class:`ReferenceMoCo`; one row of means per ``steps / windows`` steps."""
    torch.manual_seed(seed)
    data = toy_images(images, seed)
    aug = v2.Compose([v2.RandomResizedCrop(32, scale=(0.3, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                      v2.ColorJitter(0.4, 0.4, 0.4, 0.1)])  # fmt: skip
    moco, rows, window, start = ReferenceMoCo(stem), [], [], time.process_time()
    for step in range(steps):
        idx = torch.randint(images, (batch,))
        views = [(torch.stack([aug(data[i]) for i in idx]) - 0.45) / 0.225 for _ in range(2)]
        window.append(moco.step(*views))
        if (step + 1) % max(1, steps // windows) == 0 or step + 1 == steps:
            row = {k: round(sum(w[k] for w in window) / len(window), 3) for k in window[0]}
            rows.append({"check": "moco", "stem": stem, "step": step + 1, **row,
                         "cpu_s": round(time.process_time() - start, 1)})  # fmt: skip
            window = []
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=160, help="MoCo steps per stem (0: the batch-dependence check only)")
    p.add_argument("--images", type=int, default=20000, help="toy set size (far above the steps' 16 images each)")
    p.add_argument("--stems", nargs="+", default=list(STEMS), choices=STEMS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="append the rows as JSON lines here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for stem in args.stems:
        torch.manual_seed(args.seed)
        net = resnet18(stem)
        for size in (32, 64):
            rows.append({"check": "batch_dependence", "stem": stem, "size": size,
                         **{k: round(v, 3) for k, v in batch_dependence(net, size, args.seed).items()}})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    for stem in args.stems if args.steps else ():
        for row in train_reference(stem, args.steps, args.images, seed=args.seed):
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
