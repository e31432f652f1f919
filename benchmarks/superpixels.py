"""Superpixel speed: frames/s per core at 256x256 for slic_fast vs skimage's slic, felzenszwalb, quickshift.

    python benchmarks/superpixels.py [--size 256] [--frames 16] [--batch 8] [--n-segments 64] [--gpu-batch 256]
                                      [--quality-sequences 3]

Frames are synthetic (ssl_video.synthetic.generate.render_sequence). CPU figures run with torch.set_num_threads(1)
(skimage is single-threaded) and count this process's CPU time, so they are per core and little affected by other
load on the machine; the GPU figure (when CUDA is available) is wall-clock for the whole device.
Prints one line per algorithm and slic_fast's speed-up over skimage's slic. Timings on a shared machine are noisy.
Then the quality of slic_fast and skimage's slic (boundary recall, ASA, undersegmentation error, segments) on a
synthetic DAVIS set at the same size (ssl_video.synthetic.generate.write_davis, JPEG frames; 0 sequences: skipped).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from ssl_video.superpixels.segment import segment, slic_fast
from ssl_video.synthetic.generate import render_sequence

SKIMAGE = {
    "slic": {"compactness": 10.0, "start_label": 0},
    "felzenszwalb": {"scale": 100, "sigma": 0.5, "min_size": 60},
    "quickshift": {"ratio": 1.0, "kernel_size": 3, "max_dist": 8, "sigma": 0.0},
}


def _rate(fn, frames: int, repeats: int) -> float:
    """Frames per second of this process's CPU time (per core with one thread; robust to a loaded machine)."""
    fn()  # warm-up (imports, allocator, CUDA kernels)
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return frames * repeats / (time.process_time() - start)


def _wall_rate(fn, frames: int, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return frames * repeats / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=16, help="frames timed per CPU algorithm")
    ap.add_argument("--batch", type=int, default=8, help="slic_fast CPU batch")
    ap.add_argument("--n-segments", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--gpu-batch", type=int, default=256)
    ap.add_argument("--quality-sequences", type=int, default=3, help="synthetic DAVIS sequences for BR/ASA (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    frames, _ = render_sequence(0, args.frames, (args.size, args.size), num_objects=3)
    n = args.n_segments
    print(f"{args.frames} frames {args.size}x{args.size}, n_segments={n}, torch threads=1")
    rates = {}
    batches = [frames[i:i + args.batch] for i in range(0, len(frames), args.batch)]
    rates["slic_fast"] = _rate(lambda: [segment(b, "slic_fast", n_segments=n, compactness=10.0) for b in batches],
                               len(frames), args.repeats)
    for algo, params in SKIMAGE.items():
        extra = {"n_segments": n} if algo == "slic" else {}
        rates[algo] = _rate(lambda a=algo, p=params, e=extra: segment(frames, a, **p, **e), len(frames), 1)
    for algo, r in rates.items():
        print(f"{algo:>14}: {r:8.1f} frames/s per core ({1000 / r:6.2f} ms/frame)")
    print(f"slic_fast / skimage slic: {rates['slic_fast'] / rates['slic']:.1f}x")
    if torch.cuda.is_available():
        reps = max(1, args.gpu_batch // len(frames))
        x = torch.from_numpy(np.concatenate([frames] * reps)).cuda()

        def run() -> None:
            slic_fast(x, n_segments=n, compactness=10.0)
            torch.cuda.synchronize()

        print(f"{'slic_fast cuda':>14}: {_wall_rate(run, len(x), 5):8.1f} frames/s ({torch.cuda.get_device_name()}, "
              f"batch {len(x)})")
    else:
        print("no CUDA: GPU figure skipped")
    if args.quality_sequences > 0:
        quality(args.size, n, args.quality_sequences, args.batch)


def quality(size: int, n_segments: int, sequences: int, batch: int) -> dict[str, dict[str, float]]:
    """Mean per-frame BR / ASA / UE / segments of slic_fast and skimage's slic on a synthetic DAVIS set; printed."""
    from ssl_video.eval.superpixel_benchmark import read_davis
    from ssl_video.eval.superpixel_metrics import frame_metrics
    from ssl_video.synthetic.generate import write_davis

    params = {"slic_fast": {"n_segments": n_segments, "compactness": 10.0},
              "slic": {"n_segments": n_segments, "compactness": 10.0, "start_label": 0}}
    with tempfile.TemporaryDirectory() as tmp:
        root = write_davis(f"{tmp}/davis", seed=0, num_sequences=sequences, num_frames=8, size=(size, size))
        data = list(read_davis(root))
    out = {}
    for algo, p in params.items():
        rows = []
        for _, frames, masks in data:
            labels = np.concatenate([segment(frames[i:i + batch], algo, **p) for i in range(0, len(frames), batch)])
            rows += [frame_metrics(sp, gt) for sp, gt in zip(labels, masks)]
        out[algo] = {k: float(np.mean([r[k] for r in rows])) for k in ("br", "asa", "ue", "segments")}
    print(f"quality on a synthetic DAVIS set ({sequences} sequences x 8 frames, {size}x{size}):")
    for algo, m in out.items():
        print(f"{algo:>14}: boundary recall {m['br']:.3f}  ASA {m['asa']:.3f}  UE {m['ue']:.3f}  "
              f"segments {m['segments']:.1f}")
    return out


if __name__ == "__main__":
    main()
