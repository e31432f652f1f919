"""Online action detection on take shards: ``python -m ssl_video.eval.online_action --shards <dir> --checkpoint <c>``.

The judo study's probe. ``<dir>`` holds the shard sets ``train/`` and ``test/`` made by ``tools/make_shards.py``
(``pack.kind=takes``); every view of every take is one clip with per-frame labels (``frame_label_idx``; class 0 is
``background``, which also covers the first and last 15% of every segment, set at pack time).

- chunks of ``chunk_len`` (8 or 4) frames; a chunk's label is the majority of its frames' labels (ties: lower index);
- training: each step draws ``batch_size`` clips uniformly and one chunk per clip at a uniform start;
- testing: windows slide over every clip with an overlap of 3 frames (8-frame chunks) or 2 (4-frame chunks);
- ``model=gru``: frozen per-frame ResNet-18 (global pool) + GRU + linear; SGD momentum 0.9, lr 0.05, 560 steps,
  lr / 10 at 210 and 420. ``model=x3d``: frozen X3D-XS + linear; lr 1.2, 600 steps, 60 warmup steps then cosine.
  ``--finetune`` trains the backbone too (the study's fully supervised baseline). The head starts with a BatchNorm
  without affine parameters on the backbone features.
- frames (the study's probe recipe): centre square crop resized to ``crop_size / 0.8`` (the study's 500² for its
  400² crops); training chunks: a random ``crop_size``² window (the study's random 400² of 500², then resized to the
  probe's size: the same up to the order of the resizes) and a horizontal flip with p 0.4, one draw per chunk (every
  frame of a chunk alike); testing (and ``augment=false``): the centre ``crop_size``² window. ImageNet normalisation.
  Defaults per model, the study's: ``gru`` 8-frame chunks at 224², ``x3d`` 4-frame chunks at 182² (the swapped variants:
  set ``chunk_len`` and ``crop_size``). With augmentation the frozen backbone runs on every training chunk (features
  cannot be cached); without, it runs once per frame.

Reports accuracy, per-class accuracy (recall) and the confusion matrix (stdout, CSV, PNG, TensorBoard).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_video.eval.take_clips import (
    CROP_FRACTION,
    ChunkAug,
    Clip,
    chunk_label,
    draw_aug,
    load_clips,
    resolve_overlap,
    train_start,
    window_starts,
)
from ssl_video.models.backbones import pooled_features as pooled
from ssl_video.normalise import normalise

STUDY_CHUNKS = {"gru": (8, 224), "x3d": (4, 182)}  # the judo study's probes: frames per chunk, side in pixels
SCHEDULES = {  # the judo study's: steps, lr, lr / 10 milestones, warmup steps (then cosine)
    "gru": {"steps": 560, "lr": 0.05, "milestones": [210, 420], "warmup_steps": 0},
    "x3d": {"steps": 600, "lr": 1.2, "milestones": None, "warmup_steps": 60},
}


def resolve_probe(cfg) -> None:
    """Fill ``chunk_len`` and ``crop_size`` left null with the study's values for ``cfg.model`` (in place)."""
    if cfg.model not in STUDY_CHUNKS:
        raise ValueError(f"eval.online_action.model must be one of {', '.join(STUDY_CHUNKS)}, got '{cfg.model}'")
    chunk_len, crop = STUDY_CHUNKS[cfg.model]
    cfg.chunk_len = cfg.chunk_len or chunk_len
    cfg.crop_size = cfg.crop_size or crop


# ------------------------------------------------------------------------------------------------------------------
# Probe
# ------------------------------------------------------------------------------------------------------------------
class Probe(nn.Module):
    """``gru``: per-frame backbone -> GRU -> linear; ``x3d``: clip backbone -> linear. Input ``(B, T, 3, H, W)``."""

    def __init__(self, backbone: nn.Module, model: str, num_classes: int, hidden: int = 512) -> None:
        super().__init__()
        self.backbone, self.model = backbone, model
        dim = backbone.out_dim
        # BatchNorm without affine parameters on the backbone features (as MAE's linear probe): one learning rate
        # then fits any backbone's feature scale (an untrained ResNet's pooled features are in the hundreds)
        self.norm = nn.BatchNorm1d(dim, affine=False)
        if model == "gru":
            self.gru = nn.GRU(dim, hidden, batch_first=True)
            dim = hidden
        self.fc = nn.Linear(dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone part: ``(B, T, D)`` frame features (gru) or ``(B, D)`` clip features (x3d)."""
        if self.model == "x3d":
            return self.backbone(x)
        b, t = x.shape[:2]
        return pooled(self.backbone, x.flatten(0, 1)).view(b, t, -1)

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        feats = self.norm(feats.flatten(0, -2)).view(feats.shape)
        if self.model == "gru":
            _, h_n = self.gru(feats)
            feats = h_n[-1]
        return self.fc(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def lr_at(step: int, sched: dict) -> float:
    """Learning rate at ``step``: step decay (lr / 10 per milestone passed) or linear warmup then cosine to 0."""
    if sched["milestones"]:
        return sched["lr"] * 0.1 ** sum(step >= m for m in sched["milestones"])
    warm = sched["warmup_steps"]
    if step < warm:
        return sched["lr"] * (step + 1) / warm
    span = max(1, sched["steps"] - warm)
    return sched["lr"] * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / span)))


def schedule(cfg) -> dict:
    """The study's schedule for ``cfg.model`` with any explicitly set values of ``cfg`` on top."""
    if cfg.model not in SCHEDULES:
        raise ValueError(f"eval.online_action.model must be one of {', '.join(SCHEDULES)}, got '{cfg.model}'")
    sched = dict(SCHEDULES[cfg.model])
    for key in sched:
        if getattr(cfg, key) is not None:
            sched[key] = list(getattr(cfg, key)) if key == "milestones" else getattr(cfg, key)
    return sched


# ------------------------------------------------------------------------------------------------------------------
# Training and testing
# ------------------------------------------------------------------------------------------------------------------
class ChunkFeatures:
    """Backbone features of chunks (centre windows, or the windows of ``augs``); with a frozen backbone the centre
    windows' features are computed once (per frame, or per chunk for x3d), augmented ones every time. One instance
    may serve several probes of one frozen backbone (``features=`` of :func:`train_probe` and :func:`predict`)."""

    def __init__(self, probe: Probe, clips: list[Clip], frozen: bool, device: torch.device, batch: int = 64,
                 cache: bool = True) -> None:
        self.probe, self.clips, self.frozen, self.device = probe, clips, frozen, device
        self.frames: dict[int, torch.Tensor] = {}
        self.chunks: dict[tuple[int, int], torch.Tensor] = {}
        if frozen and probe.model == "gru" and cache:
            with torch.no_grad():
                for i, clip in enumerate(clips):
                    parts = [pooled(probe.backbone, normalise(clip.window(j, batch).to(device)))
                             for j in range(0, len(clip.frames), batch)]
                    self.frames[i] = torch.cat(parts)

    def __call__(self, items: list[tuple[int, int]], chunk_len: int,
                 augs: list[ChunkAug] | None = None) -> torch.Tensor:
        if augs is not None:
            x = torch.stack([normalise(self.clips[i].window(s, chunk_len, a.top, a.left, a.flip).to(self.device))
                             for (i, s), a in zip(items, augs)])
            with torch.set_grad_enabled(not self.frozen):
                return self.probe.features(x)
        if self.frozen and self.probe.model == "gru":
            return torch.stack([self.frames[i][s : s + chunk_len] for i, s in items])
        todo = [it for it in items if it not in self.chunks] if self.frozen else items
        if todo:
            x = torch.stack([normalise(self.clips[i].window(s, chunk_len).to(self.device)) for i, s in todo])
            with torch.set_grad_enabled(not self.frozen):
                feats = self.probe.features(x)
            if not self.frozen:
                return feats
            self.chunks.update({it: f for it, f in zip(todo, feats)})
        return torch.stack([self.chunks[it] for it in items])


def _reuse(features: ChunkFeatures | None, probe: Probe, clips: list[Clip],
           centre_frozen: bool) -> ChunkFeatures | None:
    """``features`` made for ``clips`` by a probe of the same frozen backbone, now serving ``probe``'s head."""
    if features is None:
        return None
    if features.clips is not clips or features.probe.backbone is not probe.backbone or not features.frozen:
        raise ValueError("features= must be the frozen features of the same clips and backbone")
    if not centre_frozen:
        raise ValueError("features= serves only frozen probes on centre windows (finetune and augment false)")
    features.probe = probe
    return features


def train_probe(probe: Probe, clips: list[Clip], cfg, device: torch.device, writer=None,
                show_progress: bool = True,
                features: ChunkFeatures | None = None) -> tuple[list[float], ChunkFeatures]:
    """Train the head (and the backbone with ``cfg.finetune``); returns the losses and the feature function.
    With ``cfg.augment`` every chunk gets the study's augmentation (:func:`draw_aug`), else its centre window.
    ``features``: the frozen backbone's cached features of ``clips`` from an earlier probe (one pass for many)."""
    from tqdm import tqdm

    resolve_probe(cfg)
    sched = schedule(cfg)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    probe.to(device)
    probe.backbone.requires_grad_(cfg.finetune)
    probe.train()
    if not cfg.finetune:
        probe.backbone.eval()  # frozen: BatchNorm statistics stay the pretrained ones
    usable = [i for i, c in enumerate(clips) if len(c.labels) >= cfg.chunk_len]
    if not usable:
        raise ValueError(f"no training clip has {cfg.chunk_len} frames")
    feats = _reuse(features, probe, clips, not (cfg.finetune or cfg.augment)) or ChunkFeatures(
        probe, clips, not cfg.finetune, device, cache=not cfg.augment)
    params = [p for p in probe.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=sched["lr"], momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    losses = []
    for step in tqdm(range(sched["steps"]), desc=f"probe ({cfg.model})", unit="step", disable=not show_progress):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, sched)
        picks = rng.choice(usable, size=cfg.batch_size)
        items = [(int(i), train_start(len(clips[i].labels), cfg.chunk_len, rng)) for i in picks]
        augs = [draw_aug(clips[i], rng) for i, _ in items] if cfg.augment else None
        target = torch.tensor([chunk_label(clips[i].labels[s : s + cfg.chunk_len]) for i, s in items], device=device)
        loss = F.cross_entropy(probe.head(feats(items, cfg.chunk_len, augs)), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise ValueError(f"probe loss is not finite at step {step} (lr {lr_at(step, sched)}): lower the lr")
        if writer is not None and step % cfg.log_every == 0:
            writer.add_scalar("online_action/loss", losses[-1], step)
            writer.add_scalar("online_action/lr", lr_at(step, sched), step)
    return losses, feats


@torch.no_grad()
def predict(probe: Probe, clips: list[Clip], cfg, device: torch.device,
            features: ChunkFeatures | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) chunk labels of every test window of every clip (centre windows); ``features`` as in
    :func:`train_probe`."""
    resolve_probe(cfg)
    overlap = resolve_overlap(cfg.chunk_len, cfg.overlap)
    probe.to(device).eval()
    feats = _reuse(features, probe, clips, True) or ChunkFeatures(probe, clips, True, device)
    items = [(i, s) for i, c in enumerate(clips) for s in window_starts(len(c.labels), cfg.chunk_len, overlap)]
    true = np.array([chunk_label(clips[i].labels[s : s + cfg.chunk_len]) for i, s in items], dtype=np.int64)
    pred = []
    for j in range(0, len(items), cfg.eval_batch_size):
        pred.append(probe.head(feats(items[j : j + cfg.eval_batch_size], cfg.chunk_len)).argmax(1).cpu())
    return true, torch.cat(pred).numpy() if pred else np.zeros(0, np.int64)


def metrics(true: np.ndarray, pred: np.ndarray, num_classes: int) -> dict:
    """Accuracy, per-class accuracy (recall; NaN for classes absent from ``true``) and its mean over the classes
    present, confusion matrix (rows: true)."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(conf, (true, pred), 1)
    support = conf.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(conf) / support, np.nan)
    return {"accuracy": float((true == pred).mean()) if len(true) else float("nan"), "per_class": per_class,
            "balanced_accuracy": float(np.nanmean(per_class)) if (support > 0).any() else float("nan"),
            "confusion": conf, "support": support}


def confusion_image(conf: np.ndarray, classes: Sequence[str], cell: int = 48) -> np.ndarray:
    """``(H, W, 3)`` uint8 picture of the row-normalised confusion matrix, counts written in the cells."""
    from PIL import Image, ImageDraw

    n = len(conf)
    rows = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    margin = 8 * max((len(c) for c in classes), default=4) + 8
    img = Image.new("RGB", (margin + n * cell, margin + n * cell), "white")
    draw = ImageDraw.Draw(img)
    for r in range(n):
        draw.text((4, margin + r * cell + cell // 2 - 5), classes[r], fill="black")
        draw.text((margin + r * cell + 2, 4 + (r % 2) * 12), classes[r][:cell // 6], fill="black")
        for c in range(n):
            shade = int(255 * (1 - rows[r, c]))
            box = (margin + c * cell, margin + r * cell, margin + (c + 1) * cell - 1, margin + (r + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255))
            draw.text((box[0] + 4, box[1] + cell // 2 - 5), str(conf[r, c]), fill="black" if shade > 128 else "white")
    return np.asarray(img)


def write_outputs(out: Path, res: dict, classes: list[str], writer) -> list[dict]:
    """The confusion picture (PNG, TensorBoard), accuracy (TensorBoard), ``online_action.csv`` (all, mean per
    class, each class) and ``confusion.csv``; returns the rows of ``online_action.csv``."""
    from PIL import Image

    from ssl_video.eval.common import write_csv

    picture = confusion_image(res["confusion"], classes)
    writer.add_image("online_action/confusion", picture.transpose(2, 0, 1), 0)
    writer.add_scalar("online_action/accuracy", res["accuracy"], 0)
    Image.fromarray(picture).save(out / "confusion.png")
    rows = [{"class": "all", "accuracy": res["accuracy"], "chunks": int(res["support"].sum())},
            {"class": "mean per class", "accuracy": res["balanced_accuracy"], "chunks": int(res["support"].sum())}]
    rows += [{"class": name, "accuracy": float(acc), "chunks": int(n)}
             for name, acc, n in zip(classes, res["per_class"], res["support"])]
    write_csv(out / "online_action.csv", rows, ["class", "accuracy", "chunks"])
    write_csv(out / "confusion.csv", [dict(zip(["true", *classes], [name, *map(int, r)]))
                                      for name, r in zip(classes, res["confusion"])], ["true", *classes])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    from ssl_video import cli

    def flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--shards", required=True, help="folder with the shard sets train/ and test/ (takes)")
        parser.add_argument("--checkpoint", required=True, help="training checkpoint, exported backbone, or 'random'")
        parser.add_argument("--finetune", action="store_true", help="train the backbone too (supervised baseline)")
        parser.add_argument("--out", help="output folder (default: derived from the checkpoint, e.g. "
                                          "<run>/eval/online_action/step_N/; never one another evaluation wrote)")

    args = cli.parse_args(argv, command="eval-online-action", add_arguments=flags)
    cfg = cli.load(args)
    from ssl_video.config import ConfigError
    from ssl_video.device import resolve_device
    from ssl_video.eval.common import fail, format_table, load_backbone, summary_writer
    from ssl_video.eval.outputs import output_dir

    try:
        ocfg = cfg.eval.online_action
        ocfg.finetune = ocfg.finetune or args.finetune
        resolve_probe(ocfg)
        schedule(ocfg)
        resolve_overlap(ocfg.chunk_len, ocfg.overlap)
        device = resolve_device(cfg.eval.device)
        train_clips, classes = load_clips(Path(args.shards) / ocfg.train_split, ocfg.crop_size, CROP_FRACTION)
        test_clips, _ = load_clips(Path(args.shards) / ocfg.split, ocfg.crop_size, CROP_FRACTION)
        backbone, info = load_backbone(args.checkpoint, "x3d_xs" if ocfg.model == "x3d" else "resnet18",
                                       seed=ocfg.seed, stem=cfg.backbone.stem)
    except (ConfigError, ValueError) as exc:
        return fail(str(exc))
    num_classes = max(len(classes), 1 + max(int(c.labels.max()) for c in train_clips + test_clips))
    classes = classes + [f"class{i}" for i in range(len(classes), num_classes)]
    probe = Probe(backbone, ocfg.model, num_classes, ocfg.gru_hidden)
    out = output_dir(args.checkpoint, "online_action", cfg.eval.out_dir, args.out)
    writer = summary_writer(out)
    try:
        train_probe(probe, train_clips, ocfg, device, writer)
        res = metrics(*predict(probe, test_clips, ocfg, device), num_classes)
    except ValueError as exc:
        writer.close()
        return fail(str(exc))
    rows = write_outputs(out, res, classes, writer)
    writer.close()
    mode = "finetuned" if ocfg.finetune else "frozen"
    print(f"backbone: {info['backbone']} ({mode}) from {info['source']}; {ocfg.model}, {ocfg.chunk_len}-frame chunks "
          f"at {ocfg.crop_size}², training augmentation {'on' if ocfg.augment else 'off'}")
    print(format_table(rows, ["class", "accuracy", "chunks"]))
    print(f"wrote {out}/online_action.csv, confusion.csv, confusion.png, TensorBoard {out}/tb")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
