"""J&F of a walk encoder on the synthetic DAVIS set while it trains: random init first, then every ``--every`` steps.

    python -m ssl_video.experiments.davis_training                   # CPU: walk_superpixel, 400 steps
    python -m ssl_video.experiments.davis_training --method walk_patch --steps 4000 --every 500 \
        --batch-size 16 --device cuda
    python -m ssl_video.experiments.davis_training --davis data/synthetic/davis --seeds 0,1,2 method.temperature=0.07
    python -m ssl_video.experiments.davis_training --method supervised --steps 100 --every 25  # label-trained reference
    python -m ssl_video.experiments.davis_training --train-videos ../shared/data/videos/*.* --crop 96 --steps 3000 \
        --every 500

The question it answers: does the DAVIS evaluation (``ssl_video.eval.davis``, the videowalk protocol) tell a trained
encoder from a randomly initialised one, and after how much training?

- Evaluation set: ``--davis`` (default: the small synthetic set of ``tools/make_synthetic.py --seed 0``, written to a
  temporary folder), every sequence, ``resnet18_s8`` layer3 (``eval.davis`` defaults; ``--stage`` to change).
- Training data: ``--videos`` sequences rendered like the DAVIS set (``render_sequence``) from other seeds, so no
  evaluated sequence is trained on; or ``--train-videos`` files (real video, decoded at ``--train-fps`` with short
  side ``--size``; an undecodable file is listed and skipped). A sample: ``--clip-len`` consecutive frames of a random
  video, a random ``--crop``² window at the same place in every frame, the clip reversed with probability 1/2.
  Superpixels (for ``walk_superpixel`` / ``walk_mixed``) are SLIC with ``--superpixels`` segments per full frame,
  cropped and relabelled.
- ``--method supervised``: the label-trained reference encoder (``ssl_video.experiments.supervised_correspondence``:
  dense supervised contrastive loss on pairs of full training frames and their instance masks). It is the evaluation's
  upper reference: how far J&F moves when an encoder does learn correspondence.
- Optimiser: Adam, ``--lr`` (videowalk's 1e-4 for walks; 1e-3 for supervised), no weight decay. Method settings are
  config overrides (``key=value``); patches default to 32 at stride 16 (the walk_patch advice for 128² frames).
- Each row gives J&F-Mean under three BatchNorm protocols: ``stored`` (running statistics as trained; the evaluation's
  default), ``target`` (re-estimated on the evaluated frames: ``--recompute-bn`` of the evaluation, transductive but
  label-free), ``train`` (re-estimated on the training videos' full frames). Compare encoders column by column.
  ``train_cpu_s`` is the process CPU time of the training steps so far (evaluations excluded).

Measured (CPU, one thread, seed 0, small synthetic set), J&F stored / target / train:

- random init: 0.491 / 0.539 / 0.553.
- supervised (B=2 pairs, lr 1e-3): 25 steps (4.8 CPU-s) 0.719 / 0.728 / 0.734; 100 steps (19 CPU-s) 0.771 / 0.777 /
  0.771. The evaluation does tell a trained encoder from a random one.
- walk_superpixel / walk_patch (B=2-8, T=4, 64²-128² crops, lr 1e-4-1e-3, 40-800 steps, up to ~600 CPU-s; also with
  an independent per-frame crop shift of up to 16 px against a positional shortcut, and frame stride 3): no column
  rises more than about 0.05 above random and several fall 0.05-0.15 below it; walk accuracy plateaus at 0.37-0.43
  on about 16 superpixels per 64² crop. Repetitive object textures and a grainy background leave most nodes
  ambiguous, so the walk has little to learn here at this scale.
- walk_superpixel on the real shared videos (three of them, every 2nd frame, 96² crops, B=4, lr 1e-4): 500-2000 steps
  (10-39 CPU-min) give 0.45-0.49 stored and 0.56-0.585 target, a +0.02-0.05 drift with re-estimated BN, not a clear
  separation. Separating a walk-trained encoder needs GPU-scale training on real video.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ssl_video.config import BackboneConfig, ConfigError, DavisEvalConfig, load_config
from ssl_video.device import resolve_device
from ssl_video.eval import davis
from ssl_video.methods import build_method
from ssl_video.models.backbones import build_backbone
from ssl_video.normalise import normalise
from ssl_video.synthetic.generate import child_seed, make_all, render_sequence

MODES = ("stored", "target", "train")
SUPERVISED = "supervised"  # ssl_video.experiments.supervised_correspondence: reads masks; the upper reference


def training_videos(n: int, num_frames: int, size: int, seed: int, superpixels: int) -> tuple[list, list | None, list]:
    """``n`` rendered ``(T, size, size, 3)`` uint8 videos (2, 3, 4, 2… objects), their SLIC maps (or None) and their
    instance masks (read only by the label-trained reference)."""
    rendered = [render_sequence(child_seed(seed, 7, i), num_frames, (size, size), num_objects=2 + i % 3)
                for i in range(n)]
    videos, masks = [r[0] for r in rendered], [r[1] for r in rendered]
    return videos, slic_maps(videos, superpixels), masks


def slic_maps(videos: list[np.ndarray], superpixels: int) -> list[np.ndarray] | None:
    """SLIC maps with ``superpixels`` segments per frame of every video; None when 0 (the method needs none)."""
    if not superpixels:
        return None
    from ssl_video.superpixels.segment import segment

    return [segment(v, "slic", n_segments=superpixels, compactness=10.0, start_label=0) for v in videos]


def real_videos(paths: list[str], fps: float, short_side: int, superpixels: int,
                min_frames: int) -> tuple[list, list | None, None]:
    """Video files decoded at ``fps`` with ``short_side`` pixels, their SLIC maps (or None), no masks.

    A file that does not decode, or has fewer than ``min_frames`` frames, is listed on stderr and skipped; none left is
    an error.
    """
    from ssl_video.packing.video import VideoError, read_video

    videos = []
    for path in paths:
        try:
            video = read_video(path, fps, short_side)
        except (VideoError, OSError) as exc:
            print(f"skipped {path}: {exc}", file=sys.stderr)
            continue
        if len(video) < min_frames:
            print(f"skipped {path}: {len(video)} frames at {fps:g} fps, fewer than a clip", file=sys.stderr)
        else:
            videos.append(video)
    if not videos:
        raise ValueError("none of --train-videos could be decoded into a whole clip")
    print(f"training videos: {len(videos)} files, {sum(len(v) for v in videos)} frames at {fps:g} fps, "
          f"short side {short_side}", file=sys.stderr)
    return videos, slic_maps(videos, superpixels), None


def sample_batch(rng: np.random.Generator, videos: list, sps: list | None, batch: int, clip_len: int,
                 crop: int, device) -> dict[str, torch.Tensor]:
    """``clips`` (B, 1, T, 3, crop, crop) normalised, plus ``superpixels`` (B, T, crop, crop) when ``sps``."""
    from ssl_video.superpixels.segment import relabel_contiguous

    clips, labels = [], []
    for _ in range(batch):
        i = int(rng.integers(len(videos)))
        t_len, h, w = videos[i].shape[:3]
        s = int(rng.integers(0, t_len - clip_len + 1))
        y, x = (int(rng.integers(0, n - crop + 1)) for n in (h, w))
        window = (slice(s, s + clip_len), slice(y, y + crop), slice(x, x + crop))
        order = slice(None, None, -1) if rng.random() < 0.5 else slice(None)
        clips.append(torch.from_numpy(np.ascontiguousarray(videos[i][window][order])))
        if sps is not None:
            labels.append(np.stack([relabel_contiguous(f) for f in sps[i][window][order]]).astype(np.int64))
    out = {"clips": normalise(torch.stack(clips).permute(0, 1, 4, 2, 3))[:, None].to(device)}
    if sps is not None:
        out["superpixels"] = torch.from_numpy(np.stack(labels)).to(device)
    return out


def jf_scores(backbone: torch.nn.Module, root: Path, cfg, train_videos: list, modes: tuple[str, ...],
              device) -> dict[str, float]:
    """J&F-Mean of ``backbone`` per BN protocol; the backbone's state is restored afterwards."""
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    names = davis.sequence_names(root, cfg.split)
    out = {}
    for mode in modes:
        if mode == "target":
            davis.recompute_bn(backbone, (davis.read_sequence(root, n, cfg.resolution)[1] for n in names), cfg.stage,
                               device)
        elif mode == "train":
            davis.recompute_bn(backbone, train_videos, cfg.stage, device)
        fn = davis.encoder_features(backbone, cfg.stage, device)
        out[mode] = davis.evaluate(root, fn, cfg, show_progress=False)[0]["J&F-Mean"]
        backbone.load_state_dict(state)
    return out


def _report(seed: int, step: int, scores: dict[str, float], losses: list[float], accs: list[float],
            cpu: float) -> dict:
    """One table row (printed) from the J&F per BN protocol and the recent training losses / walk accuracies."""
    row = {"seed": seed, "step": step, **scores, "loss": float(np.mean(losses[-20:])) if losses else float("nan"),
           "acc": float(np.mean(accs[-20:])) if accs else float("nan"), "train_cpu_s": cpu}
    print(f"{seed:>4} {step:>6} " + " ".join(f"{v:>7.3f}" for v in scores.values())
          + f" {row['loss']:>6.2f} {row['acc']:>5.2f} {cpu:>11.1f}", flush=True)
    return row


def train_seed(args: argparse.Namespace, seed: int, root: Path, data: tuple, cfg_eval, modes: tuple[str, ...],
               device) -> list[dict]:
    """Train one walk model from ``seed``; evaluate at step 0 and every ``args.every`` steps (prints a row each)."""
    videos, sps, _ = data
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = load_config([f"method={args.method}", f"data.clip_len={args.clip_len}", "method.patch_size=32",
                       "method.patch_stride=16", *args.overrides])
    model = build_method(cfg).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    losses, accs, cpu, rows = [], [], 0.0, []
    for step in range(args.steps + 1):
        if step:
            t0 = time.process_time()
            out = model(sample_batch(rng, videos, sps, args.batch_size, args.clip_len, args.crop, device))
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            losses.append(out["loss"].item())
            accs.append(out["walk_acc"].item())
            cpu += time.process_time() - t0
        if step % args.every == 0 or step == args.steps:
            model.eval()
            rows.append(_report(seed, step, jf_scores(model.backbone, root, cfg_eval, videos, modes, device),
                                losses, accs, cpu))
            model.train()
    return rows


def train_supervised_seed(args: argparse.Namespace, seed: int, root: Path, data: tuple, cfg_eval,
                          modes: tuple[str, ...], device) -> list[dict]:
    """The label-trained reference (:mod:`ssl_video.experiments.supervised_correspondence`) on full training frames."""
    from ssl_video.experiments.supervised_correspondence import train_reference

    videos, _, masks = data
    torch.manual_seed(seed)
    backbone = build_backbone(BackboneConfig(name="resnet18_s8")).to(device)
    rows, losses, cpu, mark = [], [], 0.0, time.process_time()

    def evaluate(step: int) -> None:  # training CPU time excludes the evaluations
        nonlocal cpu, mark
        cpu += time.process_time() - mark
        rows.append(_report(seed, step, jf_scores(backbone.eval(), root, cfg_eval, videos, modes, device), losses, [],
                            cpu))
        mark = time.process_time()

    def after_step(step: int, loss: float) -> None:
        losses.append(loss)
        if step % args.every == 0 or step == args.steps:
            evaluate(step)

    evaluate(0)

    train_reference(backbone, list(zip(videos, masks)), args.steps, lr=args.lr, batch=args.batch_size, seed=seed,
                    stage=args.stage, device=device, show_progress=False, after_step=after_step)
    return rows


def run(args: argparse.Namespace, root: Path) -> list[dict]:
    """Every seed of ``args.seeds``; returns all rows."""
    device = resolve_device(args.device)
    needs_sp = args.method not in ("walk_patch", SUPERVISED)
    if args.train_videos:
        data = real_videos(args.train_videos, args.train_fps, args.size, args.superpixels * needs_sp, args.clip_len)
    else:
        data = training_videos(args.videos, args.frames, args.size, args.data_seed, args.superpixels * needs_sp)
    cfg_eval = DavisEvalConfig(save_png=False, stage=args.stage)
    modes = tuple(m for m in args.bn.split(",") if m)
    print(f"{'seed':>4} {'step':>6} " + " ".join(f"{m:>7}" for m in modes)
          + f" {'loss':>6} {'acc':>5} {'train_cpu_s':>11}")
    train = train_supervised_seed if args.method == SUPERVISED else train_seed
    seeds = [int(seed) for seed in args.seeds.split(",")]
    return [row for seed in seeds for row in train(args, seed, root, data, cfg_eval, modes, device)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--davis", help="DAVIS-2017 root (default: the small synthetic set, seed 0, in a temp folder)")
    p.add_argument("--method", default="walk_superpixel",
                   choices=["walk_patch", "walk_superpixel", "walk_mixed", SUPERVISED],
                   help=f"a walk, or '{SUPERVISED}': the label-trained reference encoder on full training frames")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--seeds", default="0", help="comma-separated initialisation / sampling seeds")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: 1e-4 for walks, 1e-3 for supervised)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--clip-len", type=int, default=4)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--videos", type=int, default=8, help="training videos")
    p.add_argument("--frames", type=int, default=24, help="frames per training video")
    p.add_argument("--size", type=int, default=128, help="training video side (short side of --train-videos)")
    p.add_argument("--train-videos", nargs="+", metavar="FILE",
                   help="train the walk on these video files instead of rendered sequences")
    p.add_argument("--train-fps", type=float, default=15.0, help="frame rate --train-videos are decoded at")
    p.add_argument("--superpixels", type=int, default=64, help="SLIC segments per full training frame")
    p.add_argument("--data-seed", type=int, default=1)
    p.add_argument("--stage", default="layer3")
    p.add_argument("--bn", default=",".join(MODES), help=f"BN protocols to report, from {','.join(MODES)}")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. method.temperature=0.07")
    args = p.parse_args(argv)
    bad = [m for m in args.bn.split(",") if m and m not in MODES]
    if bad or args.every < 1 or args.steps < 0 or args.crop > args.size or args.clip_len > args.frames:
        print(f"error: bad arguments (bn {bad or 'ok'}, every >= 1, crop <= size, clip-len <= frames)", file=sys.stderr)
        return 2
    if args.train_videos and args.method == SUPERVISED:
        print("error: --method supervised needs instance masks, which --train-videos do not have", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    args.lr = args.lr or (1e-3 if args.method == SUPERVISED else 1e-4)
    try:
        if args.davis:
            run(args, Path(args.davis))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                run(args, make_all(tmp, seed=0, small=True, what=["davis"])["davis"])
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
