"""The superpixel benchmark: ``python -m ssl_video.eval.superpixel_benchmark --davis <root> [--algos ...] [key=value
...]``.

For each run of ``eval.params.runs`` (ssl_video/configs/eval/superpixels.yaml), over the sequences of a DAVIS-layout
set:
J and F (mean and recall) of the segmentation that gives each superpixel the ground-truth label it overlaps most,
boundary recall, undersegmentation error, achievable segmentation accuracy, segments per frame, frames/s (``fps``:
wall clock; ``fps_cpu``: per second of this process's CPU time, i.e. per core with ``threads: 1``).
Prints a table and writes a CSV (``--out``, default ``<eval.out_dir>/superpixels/<data folder>/superpixels.csv``).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ssl_video.eval.superpixel_metrics import frame_metrics, oracle_labels, tolerance_pixels

COLUMNS = ("run", "algo", "params", "frames", "fps", "fps_cpu", "segments", "br", "ue", "asa", "J_mean", "J_recall",
           "F_mean", "F_recall")


def read_davis(root: str | Path, split: str = "val", resolution: str = "480p", stride: int = 1,
               max_sequences: int = 0) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, frames (T, H, W, 3) uint8, masks (T, H, W) uint8)`` per sequence of a DAVIS-2017 layout."""
    from PIL import Image

    root = Path(root)
    listing = root / "ImageSets" / "2017" / f"{split}.txt"
    if not listing.is_file():
        raise ValueError(f"not a DAVIS-2017 folder: {listing} not found")
    names = [n.strip() for n in listing.read_text().splitlines() if n.strip()]
    for name in names[:max_sequences or None]:
        jpgs = sorted((root / "JPEGImages" / resolution / name).glob("*.jpg"))[::stride]
        if not jpgs:
            raise ValueError(f"sequence {name}: no frames under {root / 'JPEGImages' / resolution / name}")
        pngs = [root / "Annotations" / resolution / name / (p.stem + ".png") for p in jpgs]
        frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in jpgs])
        masks = np.stack([np.asarray(Image.open(p)) for p in pngs])  # palette PNG: the indices are the object ids
        yield name, frames, masks


def _jf_functions():
    """J and F of binary masks: helper module ``ssl_video.eval.jf`` when present, else the local fallbacks below."""
    try:
        from ssl_video.eval import jf
    except ImportError:
        return _jaccard, _f_measure
    return getattr(jf, "jaccard", _jaccard), getattr(jf, "f_measure", _f_measure)


def _jaccard(gt: np.ndarray, pred: np.ndarray) -> float:
    """Region IoU of two binary masks; 1 when both are empty (DAVIS convention)."""
    union = np.logical_or(gt, pred).sum()
    return 1.0 if union == 0 else float(np.logical_and(gt, pred).sum() / union)


def _f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.0025) -> float:
    """Boundary F of two binary masks with a disk tolerance of ``bound_th`` (DAVIS's definition)."""
    from scipy.ndimage import binary_dilation
    from skimage.morphology import disk
    from skimage.segmentation import find_boundaries

    gb, pb = find_boundaries(gt, mode="inner"), find_boundaries(pred, mode="inner")
    if not gb.any() and not pb.any():
        return 1.0
    if not gb.any() or not pb.any():
        return 0.0
    se = disk(tolerance_pixels(gt.shape, bound_th))
    precision = (pb & binary_dilation(gb, structure=se)).sum() / pb.sum()
    recall = (gb & binary_dilation(pb, structure=se)).sum() / gb.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def evaluate_run(sequences: Sequence[tuple[str, np.ndarray, np.ndarray]], algo: str, params: dict,
                 bound_th: float = 0.0025, progress=None, f_bound_th: float = 0.008) -> dict[str, float]:
    """Metrics of one algorithm and parameter set over ``sequences`` (see the module docstring)."""
    from ssl_video.superpixels.segment import segment

    jaccard, f_measure = _jf_functions()
    seconds, cpu, frames_n, per_frame, j_obj, f_obj = 0.0, 0.0, 0, [], [], []
    for _, frames, masks in sequences:
        start, start_cpu = time.perf_counter(), time.process_time()
        labels = segment(frames, algo, **params)
        seconds += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        frames_n += len(frames)
        oracle = np.stack([oracle_labels(sp, gt) for sp, gt in zip(labels, masks)])
        per_frame += [frame_metrics(sp, gt, bound_th) for sp, gt in zip(labels, masks)]
        for obj in np.unique(masks[masks > 0]):
            j_obj.append([jaccard(gt == obj, pr == obj) for gt, pr in zip(masks, oracle)])
            f_obj.append([f_measure(gt == obj, pr == obj, f_bound_th) for gt, pr in zip(masks, oracle)])
        if progress is not None:
            progress.update(1)
    mean = {k: float(np.mean([m[k] for m in per_frame])) for k in ("br", "ue", "asa", "segments")}
    return {"frames": frames_n, "fps": frames_n / max(seconds, 1e-9), "fps_cpu": frames_n / max(cpu, 1e-9), **mean,
            "J_mean": float(np.mean([np.mean(j) for j in j_obj])) if j_obj else float("nan"),
            "J_recall": float(np.mean([np.mean(np.array(j) > 0.5) for j in j_obj])) if j_obj else float("nan"),
            "F_mean": float(np.mean([np.mean(f) for f in f_obj])) if f_obj else float("nan"),
            "F_recall": float(np.mean([np.mean(np.array(f) > 0.5) for f in f_obj])) if f_obj else float("nan")}


def format_table(rows: list[dict]) -> str:
    """Fixed-width text table of the benchmark rows (all columns but ``params``)."""
    cols = [c for c in COLUMNS if c != "params"]
    cells = [[f"{r[c]:.3f}" if isinstance(r[c], float) and c not in ("fps", "fps_cpu", "segments") else
              (f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c])) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    from ssl_video import cli

    def flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--davis", required=True, help="DAVIS-2017 layout root (e.g. data/synthetic/davis)")
        parser.add_argument("--algos", nargs="+", help="names of eval.params.runs to run (default: all)")
        parser.add_argument("--out", help="CSV path (default: <eval.out_dir>/superpixels/<data folder name>/"
                                          "superpixels.csv, in a folder no other benchmark wrote)")

    args = cli.parse_args(argv, command="eval-superpixels", add_arguments=flags)
    cfg = cli.load(args)
    import torch
    from omegaconf import OmegaConf
    from tqdm import tqdm

    p = OmegaConf.to_container(cfg.eval.params, resolve=True)
    runs = p.get("runs") or {}
    names = args.algos or list(runs)
    unknown = [n for n in names if n not in runs]
    if unknown:
        print(f"error: unknown run(s) {', '.join(unknown)}; configured: {', '.join(runs)}", file=sys.stderr)
        return 2
    try:
        sequences = list(read_davis(args.davis, p.get("split", "val"), p.get("resolution", "480p"),
                                    int(p.get("frame_stride", 1)), int(p.get("max_sequences", 0))))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(int(p.get("threads", 1)))
    rows = []
    with tqdm(total=len(names) * len(sequences), desc="superpixels", unit="seq") as bar:
        for name in names:
            params = dict(runs[name])
            algo = params.pop("algo", name)
            if algo == "slic_fast":
                params.setdefault("device", p.get("device", "cpu"))
            bar.set_postfix_str(name)
            try:
                res = evaluate_run(sequences, algo, params, float(p.get("bound_th", 0.0025)), bar,
                                   float(p.get("f_bound_th", 0.008)))
            except (ValueError, TypeError) as exc:
                print(f"error: run {name}: {str(exc).splitlines()[0]}", file=sys.stderr)
                return 2
            rows.append({"run": name, "algo": algo, "params": " ".join(f"{k}={v}" for k, v in params.items()), **res})
    print(format_table(rows))
    from ssl_video.eval.outputs import output_dir

    out = Path(args.out) if args.out else output_dir(Path(args.davis).resolve(), "superpixels", cfg.eval.out_dir) / (
        "superpixels.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
