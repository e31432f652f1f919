"""Hard positives (``data.positive=other_camera``) with the two-view methods, on in-memory synthetic takes.

Also home of ``two_view_batch``, the batch builder the method tests share: it renders takes with
``ssl_video.data.synthetic.render_take`` and builds the batch schema of docs/design.md (``clips`` (B, V, T, C, H, W)
normalised, ``camera`` (B, V), ``frame_index`` (B, T)) with the loader's own augmentation, without shards.
"""

from __future__ import annotations

import random
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl_video.config import load_config
from ssl_video.data.augment import augment_clip, normalise
from ssl_video.data.synthetic import render_take
from ssl_video.methods.registry import build_method


@lru_cache(maxsize=32)
def take(seed: int, num_cameras: int = 3, num_frames: int = 24, size: int = 48) -> torch.Tensor:
    """``(V, T, 3, H, W)`` uint8 frames of one synthetic take (the action spans the whole take)."""
    frames = render_take(seed, num_cameras=num_cameras, num_frames=num_frames, size=(size, size),
                         segment=(0, num_frames))["frames"]
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 1, 4, 2, 3)


def two_view_batch(seeds: list[int], rng: random.Random, batch_size: int, num_frames: int, crop: int = 32,
                   positive: str = "same_clip", augment: str = "walk") -> dict[str, torch.Tensor]:
    """A ``frames``-sampling batch: T random frames of a random take; view 1 from another camera if ``other_camera``."""
    aug = SimpleNamespace(augment=augment, crop_size=crop, max_superpixels=64)
    clips, cameras, indices = [], [], []
    for _ in range(batch_size):
        frames = take(rng.choice(seeds))
        v_all, t_all = frames.shape[:2]
        cam0 = rng.randrange(v_all)
        cam1 = rng.choice([c for c in range(v_all) if c != cam0]) if positive == "other_camera" else cam0
        idx = sorted(rng.sample(range(t_all), num_frames))
        views = [augment_clip(frames[cam, idx], None, aug, rng, per_frame=True)[0] for cam in (cam0, cam1)]
        clips.append(torch.stack(views))
        cameras.append([cam0, cam1])
        indices.append(idx)
    return {"clips": torch.stack(clips), "camera": torch.tensor(cameras), "frame_index": torch.tensor(indices)}


def small_config(method: str, *extra: str, batch_size: int = 4, num_frames: int = 2):
    """A CPU-sized config: ResNet-18 per frame, narrow heads."""
    return load_config([f"method={method}", "backbone=resnet18", "train.device=cpu", f"train.batch_size={batch_size}",
                        "data.sampling=frames", f"data.num_frames={num_frames}", "method.proj_hidden_dim=128", *extra])


def train_steps(method, steps: int, make_batch, lr: float = 0.05) -> list[float]:
    """Plain SGD steps with the trainer's order (forward, backward, step, on_train_step_end); returns the losses."""
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    losses = []
    method.train()
    for step in range(steps):
        out = method(make_batch(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.on_train_step_end(step + 1)
        losses.append(float(out["loss"].detach()))
    return losses


@torch.no_grad()
def cross_camera_top1(backbone, seeds: list[int], crop: int = 32) -> tuple[float, float]:
    """Each frame of camera 0 retrieves its nearest camera-1 frame among all frames of all ``seeds`` takes (cosine
    of backbone features). Returns top-1 accuracy of (the exact instant, the instant within +-1 frame)."""
    backbone.eval()
    feats0, feats1, keys = [], [], []
    for seed in seeds:
        frames = take(seed)
        x = normalise(F.interpolate(frames[:2].flatten(0, 1).float(), size=(crop, crop), mode="bilinear",
                                    antialias=True).round().clamp(0, 255).to(torch.uint8))
        f = F.normalize(backbone(x), dim=1).view(2, frames.shape[1], -1)
        feats0.append(f[0])
        feats1.append(f[1])
        keys += [(seed, t) for t in range(frames.shape[1])]
    nn_index = (torch.cat(feats0) @ torch.cat(feats1).T).argmax(dim=1)
    exact = near = 0
    for i, j in enumerate(nn_index.tolist()):
        exact += keys[i] == keys[j]
        near += keys[i][0] == keys[j][0] and abs(keys[i][1] - keys[j][1]) <= 1
    return exact / len(keys), near / len(keys)


TRAIN_TAKES, TEST_TAKES = [0, 1, 2, 3, 4, 5], [100, 101, 102]


def retrieval_after_training(positive: str, steps: int, seed: int = 0) -> tuple[float, float]:
    torch.manual_seed(seed)
    cfg = small_config("moco", "method.queue_size=256", "method.split_bn=2", "method.momentum=0.99", batch_size=8,
                       num_frames=2)
    method = build_method(cfg)
    rng = random.Random(seed)
    train_steps(method, steps, lambda _: two_view_batch(TRAIN_TAKES, rng, 8, 2, positive=positive), lr=0.05)
    return cross_camera_top1(method.backbone, TEST_TAKES)


@pytest.mark.slow
@pytest.mark.skip(reason="not demonstrated at a CPU test budget: after 60 steps (8 clips x 2 frames, 32 px, seeds 0/1) "
                  "top-1 within +-1 frame was plain 0.014/0.069 vs hard 0.042/0.042, random init 0.153; see report")
def test_hard_positives_improve_cross_camera_retrieval():
    plain = retrieval_after_training("same_clip", steps=60)
    hard = retrieval_after_training("other_camera", steps=60)
    print(f"cross-camera top-1 (exact, +-1 frame): plain MoCo {plain}, hard-positive MoCo {hard}")
    assert hard[1] > plain[1] + 0.05


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
