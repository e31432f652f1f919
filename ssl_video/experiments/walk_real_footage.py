"""Walk training on real footage, J&F on the synthetic DAVIS sets against random init: the GPU-sized version of
:mod:`ssl_video.experiments.davis_training`, runnable on a bare GPU machine (no PyAV, no webdataset).

    # here (needs PyAV): decode the footage to JPEG frames and render the synthetic DAVIS sets into one folder
    python -m ssl_video.experiments.walk_real_footage prepare --videos ../shared/data/clips/* ../shared/data/videos/* \
        --out payload --fps 8 --short-side 256
    # there: random init, then walks trained with the study's recipe (Adam 1e-4, T=4, 256² crops, 8 fps), evaluated
    # as they train; results.json is rewritten after every evaluation, so a kill still leaves them
    python -m ssl_video.experiments.walk_real_footage run --payload payload --out results --budget-s 400

A run (``--plan``, ``label:method:seed:budget_s`` entries) trains one walk from ``seed`` with Adam (``--lr``, no
weight decay), batches of ``--batch-size`` clips of ``--clip-len`` consecutive frames (the footage is decoded at
``--fps``), one random ``--crop``² window per clip at the same place in every frame, reversed with p 1/2
(:func:`davis_training.sample_batch`), bf16 autocast on CUDA as the trainer. Superpixels (walk_superpixel /
walk_mixed): SLIC with ``--superpixels`` segments per full frame at compactness 30 (the study's), computed once per
frame. Evaluations of the random init per seed, then of each run at ``--evals`` steps and when its time budget ends:
J&F-Mean of layer3 on every DAVIS set of the payload, BN ``stored`` (running statistics) and ``target`` (re-
estimated on the evaluated frames), plus the mean walk loss / walk accuracy of the last 50 steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT_PLAN = "patch0:walk_patch:0:200,slic30:walk_superpixel:0:110,patch1:walk_patch:1:70"
MODES = ("stored", "target")


# ------------------------------------------------------------------------------------------------------------------
# prepare (needs PyAV): footage -> JPEG frames, synthetic DAVIS sets
# ------------------------------------------------------------------------------------------------------------------
def prepare(videos: list[str], out: Path, fps: float, short_side: int, min_frames: int) -> dict:
    """Decode every video to ``out/frames/<stem>/%05d.jpg`` (undecodable or too short: listed and skipped) and write the
    small and medium synthetic DAVIS sets (seed 0) to ``out/davis_small``, ``out/davis_medium``."""
    from PIL import Image

    from ssl_video.packing.video import VideoError, read_video
    from ssl_video.synthetic.generate import SIZES, write_davis

    kept = {}
    for path in videos:
        try:
            frames = read_video(path, fps, short_side)
        except (VideoError, OSError) as exc:
            print(f"skipped {path}: {exc}", file=sys.stderr)
            continue
        if len(frames) < min_frames:
            print(f"skipped {path}: {len(frames)} frames at {fps:g} fps", file=sys.stderr)
            continue
        folder = out / "frames" / Path(path).stem
        folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=90)
        kept[Path(path).stem] = int(len(frames))
    for size in ("small", "medium"):
        write_davis(out / f"davis_{size}", 0, **SIZES[size]["davis"])
    info = {"fps": fps, "short_side": short_side, "videos": kept}
    (out / "payload.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"{len(kept)} videos, {sum(kept.values())} frames -> {out}")
    return info


def load_frames(payload: Path) -> list[np.ndarray]:
    """The payload's videos as ``(T, H, W, 3)`` uint8 arrays."""
    from PIL import Image

    videos = []
    for folder in sorted((payload / "frames").iterdir()):
        files = sorted(folder.glob("*.jpg"))
        videos.append(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]))
    return videos


# ------------------------------------------------------------------------------------------------------------------
# run
# ------------------------------------------------------------------------------------------------------------------
class Results:
    """``results.json``: settings, then one row per evaluation; rewritten (atomically) after every row."""

    def __init__(self, path: Path, settings: dict) -> None:
        self.path, self.data = path, {"settings": settings, "rows": [], "curves": {}, "notes": []}
        self.write()

    def add(self, row: dict) -> None:
        self.data["rows"].append(row)
        print(json.dumps(row), flush=True)
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        tmp.replace(self.path)


def evaluate(backbone, roots: dict[str, Path], device) -> dict[str, float]:
    """J&F-Mean per DAVIS set and BN protocol (``<set>/<mode>``); the backbone's state is restored."""
    from ssl_video.config import DavisEvalConfig
    from ssl_video.experiments.davis_training import jf_scores

    cfg = DavisEvalConfig(save_png=False)
    backbone.eval()
    out = {}
    for name, root in roots.items():
        scores = jf_scores(backbone, root, cfg, [], MODES, device)
        out.update({f"{name}/{mode}": round(v, 4) for mode, v in scores.items()})
    return out


def train_run(label: str, method: str, seed: int, budget_s: float, deadline: float, args, data: tuple,
              roots: dict, results: Results, device) -> None:
    """One walk from ``seed``: evaluate at 0, at ``args.evals`` and when its budget (or the overall deadline) ends."""
    from ssl_video.config import load_config
    from ssl_video.experiments.davis_training import sample_batch
    from ssl_video.methods import build_method

    videos, sps = data
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    patch = [f"method.patch_size={args.crop // 4}", f"method.patch_stride={args.crop // 8}"] \
        if method != "walk_superpixel" else []
    cfg = load_config([f"method={method}", f"data.clip_len={args.clip_len}", *patch])
    model = build_method(cfg).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    evals = sorted({int(s) for s in args.evals.split(",") if s})
    end = min(deadline, time.time() + budget_s)
    losses, accs, curve, step, train_s = [], [], [], 0, 0.0

    def report(final: bool) -> None:
        model.eval()
        row = {"run": label, "method": method, "seed": seed, "step": step, "train_s": round(train_s, 1),
               "loss": float(np.mean(losses[-50:])) if losses else None,
               "walk_acc": float(np.mean(accs[-50:])) if accs else None, "final": final}
        if batch is not None:
            row.update(node_stats(model, batch))
        row.update(evaluate(model.backbone, roots, device))
        results.add(row)
        model.train()

    use_amp = device.type == "cuda"
    batch = None
    while step < args.max_steps and time.time() < end:
        t0 = time.time()
        batch = sample_batch(rng, videos, sps if method != "walk_patch" else None, args.batch_size, args.clip_len,
                             args.crop, device)
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = model(batch)
        except RuntimeError as exc:  # bf16 trouble: note it and go on in fp32 (the results say which was used)
            if not use_amp:
                raise
            results.data["notes"].append(f"{label}: bf16 failed ({str(exc).splitlines()[0]}); fp32 from step {step}")
            use_amp = False
            out = model(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        step += 1
        losses.append(out["loss"].item())
        accs.append(out["walk_acc"].item())
        train_s += time.time() - t0
        if step % 25 == 0:
            curve.append([step, round(float(np.mean(losses[-25:])), 4), round(float(np.mean(accs[-25:])), 4)])
            results.data["curves"][label] = curve
        if step in evals:
            report(False)
    if step not in evals:
        report(True)


@torch.no_grad()
def node_stats(model, batch: dict) -> dict[str, float]:
    """Node embeddings of a batch (eval mode): ``node_cos`` the mean cosine between two different nodes of a frame
    (1: collapsed, all nodes alike; the walk cannot tell them apart) and ``nodes`` per frame (walk chance = 1/nodes)."""
    clips = batch["clips"][:, 0]
    q, mask = model.embed(batch, clips, model.choose_patches(clips.shape[0], clips.device))
    q, mask = q.flatten(0, 1).float(), mask.flatten(0, 1)
    sims = []
    for qi, mi in zip(q, mask):
        n = int(mi.sum())
        if n > 1:
            g = qi[mi] @ qi[mi].T
            sims.append(float((g.sum() - g.diagonal().sum()) / (n * (n - 1))))
    nodes = round(float(mask.sum(1).float().mean()), 1)
    return {"node_cos": round(float(np.mean(sims)), 4) if sims else None, "nodes": nodes}


def _slic30(video: np.ndarray, n_segments: int) -> np.ndarray:
    """SLIC maps of every frame at the study's compactness 30."""
    from ssl_video.superpixels.segment import segment

    return segment(video, "slic", n_segments=n_segments, compactness=30.0, start_label=0)


def run(args) -> int:
    start = time.time()
    deadline = start + args.budget_s
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    torch.backends.cudnn.benchmark = True
    payload = Path(args.payload)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    roots = {p.name: p for p in sorted(payload.glob("davis_*")) if (p / "ImageSets").is_dir()
             and (not args.sets or p.name.removeprefix("davis_") in args.sets.split(","))}
    videos = load_frames(payload)[: args.max_videos or None]
    settings = {k: v for k, v in vars(args).items()} | {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__,
        "videos": len(videos), "frames": int(sum(len(v) for v in videos)), "shapes": [list(v.shape) for v in videos]}
    results = Results(out / "results.json", settings)
    plan = [entry.split(":") for entry in args.plan.split(",") if entry]
    sps = None
    if any(m != "walk_patch" for _, m, _, _ in plan):
        t0 = time.time()
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(len(videos), 8)) as pool:
            sps = list(pool.map(_slic30, videos, [args.superpixels] * len(videos)))
        results.data["notes"].append(f"SLIC maps: {time.time() - t0:.1f} s")
    for seed in sorted({int(s) for _, _, s, _ in plan}):
        torch.manual_seed(seed)
        from ssl_video.config import BackboneConfig
        from ssl_video.models.backbones import build_backbone

        row = {"run": f"random{seed}", "method": "random", "seed": seed, "step": 0}
        results.add(row | evaluate(build_backbone(BackboneConfig(name="resnet18_s8")).to(device), roots, device))
    for label, method, seed, budget in plan:
        if time.time() > deadline - 20:
            results.data["notes"].append(f"{label}: skipped, out of time")
            results.write()
            continue
        train_run(label, method, int(seed), float(budget), deadline, args, (videos, sps), roots, results, device)
    results.data["notes"].append(f"total {time.time() - start:.0f} s")
    results.write()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="decode footage to JPEG frames, write the synthetic DAVIS sets")
    p.add_argument("--videos", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--min-frames", type=int, default=8)
    r = sub.add_parser("run", help="random init and walk runs, J&F as they train")
    r.add_argument("--payload", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--plan", default=DEFAULT_PLAN, help="label:method:seed:budget_s,...")
    r.add_argument("--budget-s", type=float, default=400.0, help="overall deadline")
    r.add_argument("--evals", default="250,1000", help="steps at which to evaluate (and at the end of each run)")
    r.add_argument("--max-steps", type=int, default=100000)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--clip-len", type=int, default=4)
    r.add_argument("--crop", type=int, default=256)
    r.add_argument("--lr", type=float, default=1e-4)
    r.add_argument("--superpixels", type=int, default=30)
    r.add_argument("--sets", default="", help="DAVIS sets of the payload to evaluate on (small,medium; default all)")
    r.add_argument("--max-videos", type=int, default=0, help="train on the first N videos only (0: all)")
    r.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.videos, Path(args.out), args.fps, args.short_side, args.min_frames)
        return 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
