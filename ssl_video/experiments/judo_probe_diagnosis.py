"""Why does a random network win the judo probe at cpu scale? Many encoders, one set of clips, cached features.

    python -m ssl_video.experiments.judo_probe_diagnosis --shards runs/ev/data/packs/medium_takes \\
        --encoders random:0 random:1 pixels:8 ckpt:runs/.../backbone.pt --bn stored precise --probe-seeds 0 1 2
    python -m ssl_video.experiments.judo_probe_diagnosis --shards packs/takes24_half --decode-track takes24 \\
        --encoders track:takes24 random:0:cifar ckpt:runs/.../step_00000400.pt   # what the features hold

Loads the take shards' ``train/`` and ``test/`` clips once (``eval.take_clips.load_clips``) and, for each encoder
and BN protocol, trains the GRU probe of :mod:`ssl_video.eval.online_action` on the cached per-frame features (the
probe's own ``train_probe`` / ``predict``, centre windows, no augmentation) with every probe seed. Encoders:

- ``random:<seed>``: an untrained ResNet-18 (the table's ``random`` row); ``random:<seed>:cifar`` with the CIFAR
  stem (``backbone.stem=cifar``), the baseline of encoders trained with it;
- ``ckpt:<path>``: a training checkpoint or exported backbone;
- ``pixels:<side>``: no network: each frame average-pooled to ``side``² and flattened (3 side² numbers), the
  baseline that says how much of the task the raw pixel layout already solves;
- ``track:<takes folder>``: no frames at all: the actor's true track in each view (x, y in the view, cos and sin
  of its angle, its scale; re-rendered from the synthetic takes' seeds, :func:`object_tracks`). An encoder that
  captured the actor perfectly: the ceiling of this probe on these takes and this many labelled takes.

``--centre`` subtracts each clip's mean feature over its frames before the probe: the take's static scene, which
the probe can memorise instead of the actor's motion, is removed (transductive over a clip: a diagnostic only).

``--decode-track <takes folder>`` replaces the probes by :func:`decode_track`: how much of the actor's true track
(and of the distractors') a linear map reads from each encoder's features.

BN protocols: ``stored`` (the backbone's running statistics, what the probe uses) and ``precise`` (re-estimated on
the probe's training frames, :func:`ssl_video.eval.common.recompute_bn_stats`). Prints one line per
(encoder, bn, probe seed) and writes them as JSON lines to ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from ssl_video.eval import online_action as oa
from ssl_video.eval import take_clips as tc
from ssl_video.normalise import normalise


class TrackEncoder(nn.Module):
    """A placeholder of width 5 whose features :func:`shared_features` replaces by the actor's true track."""

    out_dim, input_kind = 5, "frames"

    def __init__(self, takes_root: str) -> None:
        super().__init__()
        self.takes_root = takes_root

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(len(x), self.out_dim)


@functools.lru_cache(maxsize=4)  # one re-render per shard set, however many encoders are compared on it
def object_tracks(takes_root: str | Path, shards: str | Path) -> dict[tuple[str, int], torch.Tensor]:
    """``(take key, view) -> (T, N, 5)``: each object's x, y (view pixels / view side), cos, sin of its angle and its
    scale at each packed frame of the shard set ``shards`` (object 0 the actor, then the distractors), from
    re-rendering the takes of ``takes_root`` (:func:`~ssl_video.synthetic.generate.render_synced_take` with the
    set's seed and sizes)."""
    import numpy as np

    from ssl_video.synthetic.generate import FPS, MARKER, SEGMENT_FRACTION, render_synced_take

    info = json.loads((Path(takes_root) / MARKER).read_text())
    samples, _ = tc.read_samples(shards)
    tracks = {}
    for sample in samples:
        meta = json.loads(sample["json"])
        index = int(sample["__key__"].rsplit("-", 1)[1])
        take, _ = render_synced_take(info["seed"], index, info["num_cameras"], len(info["classes"]),
                                     info["num_frames"], tuple(info["size"]), info.get("num_distractors", 2),
                                     tuple(info.get("segment_fraction", SEGMENT_FRACTION)))
        k = np.arange(len(meta["frame_label_idx"]))  # packed frame k shows the source frame on screen at (k+½)/fps
        source = np.minimum(np.floor((k + 0.5) * FPS / meta["fps"]).astype(int), info["num_frames"] - 1)
        x, y, angle, scale = np.moveaxis(take["object_state"][take["lead"] + source], -1, 0)  # each (T, N)
        for v, world_to_view in enumerate(take["world_to_view"]):
            p = np.stack([x, y, np.ones_like(x)], -1) @ world_to_view.T
            xy = p[..., :2] / p[..., 2:] / np.asarray(info["size"][::-1])
            track = np.concatenate([xy, np.stack([np.cos(angle), np.sin(angle), scale], -1)], -1)
            tracks[(sample["__key__"], v)] = torch.as_tensor(track, dtype=torch.float32)
    return tracks


def actor_features(tracks: dict, clips: list[tc.Clip]) -> dict[int, torch.Tensor]:
    """The :class:`TrackEncoder`'s features: clip ``i`` -> its actor's ``(T, 5)`` track from :func:`object_tracks`."""
    return {i: tracks[(c.take, c.view)][: len(c.frames), 0] for i, c in enumerate(clips)}


class PixelEncoder(nn.Module):
    """A frame average-pooled to ``side``² and flattened: the probe's input without any network."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side, self.out_dim, self.input_kind = side, 3 * side * side, "frames"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, self.side).flatten(1)


def probe_config(steps: int, batch: int, lr: float, milestones: list[int], crop: int, seed: int):
    """The probe's settings (``eval.online_action`` keys) for a GRU on 8-frame centre windows."""
    return OmegaConf.create({
        "model": "gru", "chunk_len": 8, "overlap": None, "crop_size": crop, "augment": False, "batch_size": batch,
        "eval_batch_size": 64, "steps": steps, "lr": lr, "momentum": 0.9, "weight_decay": 0.0,
        "milestones": milestones, "warmup_steps": 0, "gru_hidden": 512, "finetune": False, "seed": seed,
        "log_every": 1000})


def build_encoder(spec: str) -> nn.Module:
    from ssl_video.eval.common import load_backbone

    kind, _, arg = spec.partition(":")
    if kind == "pixels":
        return PixelEncoder(int(arg))
    if kind == "random":
        seed, _, stem = arg.partition(":")
        return load_backbone("random", "resnet18", seed=int(seed), stem=stem or "imagenet")[0]
    if kind == "ckpt":
        return load_backbone(arg, "resnet18")[0]
    if kind == "track":
        return TrackEncoder(arg)
    raise ValueError(f"unknown encoder '{spec}' (random:<seed>[:cifar], ckpt:<path>, pixels:<side>, track:<takes>)")


def shared_features(encoder: nn.Module, clips: list[tc.Clip], centre: bool = False,
                    tracks: dict | None = None) -> oa.ChunkFeatures:
    """The frozen ``encoder``'s per-frame features of ``clips``, computed once: every probe seed then reuses them
    (``features=`` of :func:`~ssl_video.eval.online_action.train_probe` and ``predict``). ``centre``: each clip's
    features minus their mean over the clip (the static scene removed; a diagnostic, not an online probe).
    ``tracks``: each clip's features replaced by its actor's track (:func:`object_tracks`)."""
    encoder.eval()  # as train_probe leaves a frozen backbone: BatchNorm with its stored statistics
    feats = oa.ChunkFeatures(oa.Probe(encoder, "gru", 2), clips, True, torch.device("cpu"))
    if tracks is not None:
        feats.frames.update(actor_features(tracks, clips))
    if centre:
        feats.frames = {i: f - f.mean(0) for i, f in feats.frames.items()}
    return feats


def precise_bn(encoder: nn.Module, clips: list[tc.Clip], chunk: int = 64) -> int:
    """Re-estimate the encoder's BN statistics on the centre windows of every frame of ``clips``."""
    from ssl_video.eval.common import recompute_bn_stats

    batches = (normalise(c.window(j, chunk)) for c in clips for j in range(0, len(c.frames), chunk))
    with torch.no_grad():
        return recompute_bn_stats(encoder, batches)


def feature_stats(feats: oa.ChunkFeatures) -> dict:
    """Spread of the cached per-frame features: mean per-dimension std, and the share of variance in the top 5 PCs."""
    x = torch.cat(list(feats.frames.values()))
    x = x - x.mean(0)
    sv = torch.linalg.svdvals(x) ** 2
    return {"feat_std": float(x.std(0).mean()), "top5_var": float(sv[:5].sum() / sv.sum())}


RIDGE_LAMBDAS = tuple(10.0 ** k for k in range(-1, 6))


def _ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of ridge regression ``y ~ x w + b`` (``x`` standardised by the caller)."""
    xm, ym = x.mean(0), y.mean(0)
    xc = (x - xm).double()
    w = torch.linalg.solve(xc.T @ xc + lam * torch.eye(x.shape[1], dtype=xc.dtype), xc.T @ (y - ym).double())
    return w.float(), ym - xm @ w.float()


def _r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Coefficient of determination, averaged over the target's columns."""
    return float((1 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)).mean())


def _stack(rows: dict, takes: list[str], k: int) -> torch.Tensor:
    return torch.cat([r[k] for take in takes for r in rows[take]])


def _ridge_r2(fit: dict, held: dict, kx: int, ky: int) -> tuple[float, float]:
    """Ridge from column ``kx`` to ``ky`` of the rows: λ by two-fold cross-validation over the ``fit`` takes, then
    fitted on all of them; returns (R² on the ``held`` takes, λ)."""
    takes = sorted(fit)
    x = _stack(fit, takes, kx)
    mean, std = x.mean(0), x.std(0) + 1e-6

    def data(rows: dict, subset: list[str]) -> tuple[torch.Tensor, torch.Tensor]:  # standardised inputs, targets
        return (_stack(rows, subset, kx) - mean) / std, _stack(rows, subset, ky)

    def score(source: tuple, target: tuple, lam: float) -> float:
        w, bias = _ridge(*source, lam)
        return _r2(target[0] @ w + bias, target[1])

    a, b = data(fit, takes[0::2]), data(fit, takes[1::2])  # the two folds, stacked once for every λ
    lam = max(RIDGE_LAMBDAS, key=lambda lam: score(a, b, lam) + score(b, a, lam))
    return score(data(fit, takes), data(held, sorted(held)), lam), lam


def decode_track(encoder: nn.Module, train: list[tc.Clip], test: list[tc.Clip], tracks: dict) -> dict:
    """How much of the actor's true track a linear map reads from the frame features (the centre windows the probe
    sees): ridge regression to the actor's x, y in the view (``r2_position``) and, from the difference of two
    consecutive frames' features, to its displacement (``r2_motion``: what the probe needs); for comparison, to the
    distractors' x, y (``r2_distractors``: objects that move all the time but carry no label). Fitted on the
    training takes, λ chosen by two-fold cross-validation over them (folds by take), R² on the test takes."""
    def rows(clips: list[tc.Clip]) -> dict:
        if isinstance(encoder, TrackEncoder):  # the ceiling: the track itself, no pass over the frames
            feats = actor_features(tracks, clips)
        else:
            feats = shared_features(encoder, clips).frames
        out = {}
        for i, c in enumerate(clips):
            f, t = feats[i], tracks[(c.take, c.view)][: len(feats[i]), :, :2]
            actor, others = t[:, 0], t[:, 1:].flatten(1)
            out.setdefault(c.take, []).append((f, actor, f[1:] - f[:-1], actor[1:] - actor[:-1], others))
        return out

    fit, held = rows(train), rows(test)
    out = {}
    targets = {"r2_position": (0, 1), "r2_motion": (2, 3)}
    if next(iter(tracks.values())).shape[1] > 1:  # takes with distractors
        targets["r2_distractors"] = (0, 4)
    for name, (kx, ky) in targets.items():
        r2, lam = _ridge_r2(fit, held, kx, ky)
        out[name], out[f"{name}_lambda"] = round(r2, 4), lam
    return out


def evaluate(spec: str, bn: str, train: list[tc.Clip], test: list[tc.Clip], num_classes: int, args) -> list[dict]:
    encoder = build_encoder(spec)
    if bn == "precise":
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in encoder.modules()):
            return []
        precise_bn(encoder, train)
    def truth(takes_root: str) -> dict:
        return {k: v for split in ("train", args.test_split)
                for k, v in object_tracks(takes_root, Path(args.shards) / split).items()}

    tracks = truth(encoder.takes_root) if isinstance(encoder, TrackEncoder) else None
    if args.decode_track:
        row = {"encoder": spec, "bn": bn, **decode_track(encoder, train, test, truth(args.decode_track))}
        print(json.dumps(row), flush=True)
        return [row]
    return _probes(spec, bn, encoder, train, test, num_classes, args, tracks)


def _probes(spec, bn, encoder, train, test, num_classes, args, tracks: dict | None = None) -> list[dict]:
    train_feats, test_feats = (shared_features(encoder, clips, args.centre, tracks) for clips in (train, test))
    rows = []
    for seed in args.probe_seeds:
        cfg = probe_config(args.steps, args.batch, args.lr, args.milestones, args.crop, seed)
        torch.manual_seed(seed)
        probe = oa.Probe(encoder, "gru", num_classes)
        start = time.process_time()
        losses, _ = oa.train_probe(probe, train, cfg, torch.device("cpu"), show_progress=False, features=train_feats)
        res = oa.metrics(*oa.predict(probe, test, cfg, torch.device("cpu"), features=test_feats), num_classes)
        row = {"encoder": spec, "bn": bn, "centre": args.centre, "probe_seed": seed,
               "accuracy": round(100 * res["accuracy"], 2),
               "mean_per_class": round(100 * res["balanced_accuracy"], 2),
               "majority": round(100 * res["support"].max() / max(1, res["support"].sum()), 2),  # always background
               "final_loss": round(sum(losses[-10:]) / 10, 4), "cpu_s": round(time.process_time() - start, 1)}
        if seed == args.probe_seeds[0]:
            row.update(feature_stats(train_feats))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", required=True, help="packed takes with train/ and test/")
    p.add_argument("--encoders", nargs="+", required=True)
    p.add_argument("--bn", nargs="+", default=["stored"], choices=["stored", "precise"])
    p.add_argument("--probe-seeds", nargs="+", type=int, default=[0])
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--milestones", nargs="+", type=int, default=[45, 90])
    p.add_argument("--test-split", default="test")
    p.add_argument("--centre", action="store_true", help="subtract each clip's mean feature (the static scene)")
    p.add_argument("--decode-track", metavar="TAKES",
                   help="instead of probes: how well a linear map reads the actor's true track (re-rendered from the "
                        "synthetic takes folder TAKES) from each encoder's features (decode_track)")
    p.add_argument("--out", help="append the rows as JSON lines here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    train, classes = tc.load_clips(Path(args.shards) / "train", args.crop, tc.CROP_FRACTION)
    test, _ = tc.load_clips(Path(args.shards) / args.test_split, args.crop, tc.CROP_FRACTION)
    num_classes = max(len(classes), 1 + max(int(c.labels.max()) for c in train + test))
    print(f"{len(train)} train clips, {len(test)} test clips, {num_classes} classes", flush=True)
    for spec in args.encoders:
        for bn in args.bn:
            rows = evaluate(spec, bn, train, test, num_classes, args)
            if args.out and rows:
                with open(args.out, "a") as fh:
                    fh.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
