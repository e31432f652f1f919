"""Superpixel speed and quality on real frames: slic_fast vs fast-slic (when installed) vs skimage's slic.

    python benchmarks/superpixels.py [--clips ../shared/data/clips | --frames-npy F.npy] [--per-clip 8] [--rounds 5]

Frames: every video in ``--clips`` decoded, ``--per-clip`` frames spread over each, resized to 256 short side and
centre-cropped to 256x256 (DAVIS-style). Speed: frames/s per core from this process's CPU time with one torch
thread (skimage and fast-slic run single-threaded too), for slic_fast on single frames and on batches of ``--batch``
(its C kernel where built, else its torch path: printed first, so a missing kernel is never a silent slowdown),
fast-slic (``fast_slic.avx2.SlicAvx2`` where the CPU has AVX2, else ``fast_slic.Slic``; optional: ``pip install
cython && pip install --no-build-isolation fast-slic``, extra ``bench``) and skimage; the algorithms are timed in
interleaved rounds (so machine load hits them alike) and each figure is the median over ``--rounds`` with the spread.
Presets: the superpixel study's SLIC-10/30/50 at compactness 30 and 64 segments at compactness 10.
Quality: real frames have no ground truth, so each frame is composited from real footage: a synthetic DAVIS frame's
object masks (ssl_video.synthetic.render) cut objects out of other real frames and paste them on this one; the masks
are the ground truth (boundary recall, ASA, UE as in ssl_video.eval.superpixel_metrics). min_size_factor is 0.25 for
every algorithm that has one (fast-slic's default; skimage and slic_fast default to 0.5), so all merge alike.
slic_fast's torch path (what CUDA runs) also gets a CPU row: one call on ``--torch-batch`` frames in a fresh
process, frames/s per core and its peak memory. On CUDA also slic_fast's frames/s (wall clock, batch
``--gpu-batch``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ssl_video.superpixels.kernel import cpu_kernel
from ssl_video.superpixels.segment import segment, slic_fast

PRESETS = ((10, 30.0), (30, 30.0), (50, 30.0), (64, 10.0))
MIN_SIZE = 0.25  # fast-slic's default min_size_factor; used for every algorithm
DEFAULT_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"


def real_frames(clips: Path, per_clip: int = 8, size: int = 256) -> np.ndarray:
    """``(N, size, size, 3)`` uint8: ``per_clip`` frames spread over each video, short side ``size``, centre crop."""
    import av
    from torchvision.transforms.v2 import functional as TF

    out = []
    for path in sorted(p for p in clips.iterdir() if p.suffix in (".mp4", ".avi", ".mkv", ".mov")):
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        for i in np.linspace(0, len(frames) - 1, per_clip).round().astype(int):
            x = TF.resize(torch.from_numpy(frames[i]).permute(2, 0, 1), size, antialias=True)  # short side
            out.append(TF.center_crop(x, size).permute(1, 2, 0).numpy())
    if not out:
        raise SystemExit(f"error: no videos in {clips}")
    return np.ascontiguousarray(np.stack(out))


def composite(frames: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real-texture frames with known object boundaries: frame ``i`` is the background, object ``k`` of a synthetic
    DAVIS mask is cut from real frame ``i + 7k``. Returns the frames and the masks (the ground truth)."""
    from ssl_video.synthetic.render import render_sequence

    n, h, w, _ = frames.shape
    out, masks = [], []
    for i in range(n):
        mask = render_sequence(seed * 1000 + i, 1, (h, w), num_objects=3)[1][0].astype(np.int64)
        sources = np.stack([frames[(i + 7 * k) % n] for k in range(mask.max() + 1)])
        out.append(sources[mask, np.arange(h)[:, None], np.arange(w)[None]])
        masks.append(mask)
    return np.ascontiguousarray(np.stack(out)), np.stack(masks)


def fast_slic_class():
    """fast-slic's fastest class on this CPU, or None when the package is not installed."""
    try:
        from fast_slic.avx2 import SlicAvx2
        return SlicAvx2
    except ImportError:
        try:
            from fast_slic import Slic
            return Slic
        except ImportError:
            return None


def algorithms(n: int, m: float, batch: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Name -> a function segmenting frames ``(N, H, W, 3)`` into ``(N, H, W)`` labels."""
    from skimage.segmentation import slic

    def fast(frames: np.ndarray, size: int) -> np.ndarray:
        return np.concatenate([segment(frames[i:i + size], "slic_fast", n_segments=n, compactness=m,
                                       min_size_factor=MIN_SIZE) for i in range(0, len(frames), size)])

    algos = {"slic_fast single": lambda f: fast(f, 1), f"slic_fast batch {batch}": lambda f: fast(f, batch)}
    peer = fast_slic_class()
    if peer is not None:
        algos["fast-slic"] = lambda f: np.stack([peer(num_components=n, compactness=m, min_size_factor=MIN_SIZE,
                                                      num_threads=1).iterate(np.ascontiguousarray(x)) for x in f])
    algos["skimage slic"] = lambda f: np.stack([slic(x, n_segments=n, compactness=m, start_label=0,
                                                     min_size_factor=MIN_SIZE) for x in f])
    return algos


def speed(frames: np.ndarray, algos: dict, rounds: int, slow: tuple[str, ...] = ("skimage slic",)) -> dict:
    """Frames/s per core of each algorithm: CPU time, interleaved rounds, ``(median, min, max)``."""
    rates: dict[str, list[float]] = {name: [] for name in algos}
    for fn in algos.values():
        fn(frames[:2])  # warm-up: imports, caches, allocator
    for r in range(rounds):
        for name, fn in algos.items():
            if name in slow and r >= 2:
                continue  # skimage is ~15x slower: two rounds suffice
            subset = frames[:8] if name in slow else frames
            start = time.process_time()
            fn(subset)
            rates[name].append(len(subset) / (time.process_time() - start))
    return {name: (statistics.median(v), min(v), max(v)) for name, v in rates.items()}


def quality(frames: np.ndarray, masks: np.ndarray, algos: dict) -> dict:
    """Mean per-frame boundary recall, ASA, UE and segment count of each algorithm against ``masks``."""
    from ssl_video.eval.superpixel_metrics import frame_metrics

    out = {}
    for name, fn in algos.items():
        labels = fn(frames)
        rows = [frame_metrics(sp, gt) for sp, gt in zip(labels, masks)]
        out[name] = {k: float(np.mean([r[k] for r in rows])) for k in ("br", "asa", "ue", "segments")}
    return out


def _tile(frames: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([frames] * -(-batch // len(frames)))[:batch]


def _status_kib(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def _torch_path_child(frames: np.ndarray, n: int, m: float) -> tuple[float, float]:
    torch.set_num_threads(1)
    x = torch.from_numpy(frames)
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak resident size (VmHWM) to the current one
    before = _status_kib("VmRSS")
    start = time.process_time()
    slic_fast(x, n_segments=n, compactness=m, min_size_factor=MIN_SIZE, backend="torch")
    cpu = time.process_time() - start
    return len(frames) / cpu, (_status_kib("VmHWM") - before) / 1024


def torch_path_cpu(frames: np.ndarray, n: int, m: float, batch: int) -> tuple[float, float]:
    """slic_fast's torch path (the code CUDA runs) on CPU, one batch of ``batch`` frames in a fresh process: frames/s
    per core and the process's peak resident memory above what it held before the call, in MiB (Linux)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_torch_path_child, (_tile(frames, batch), n, m))


def cuda_rate(frames: np.ndarray, n: int, m: float, batch: int) -> float:
    """slic_fast frames/s on CUDA (wall clock, whole device), batch ``batch``."""
    x = torch.from_numpy(_tile(frames, batch)).cuda()

    def run() -> None:
        slic_fast(x, n_segments=n, compactness=m)
        torch.cuda.synchronize()

    run()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, default=DEFAULT_CLIPS, help="folder of real videos")
    ap.add_argument("--per-clip", type=int, default=8)
    ap.add_argument("--frames-npy", type=Path, default=None, help="frames saved with np.save instead of --clips")
    ap.add_argument("--batch", type=int, default=8, help="slic_fast batch")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--gpu-batch", type=int, default=256)
    ap.add_argument("--torch-batch", type=int, default=64, help="batch of the torch-path row (0: no row)")
    ap.add_argument("--no-quality", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    source = args.frames_npy or args.clips
    frames = np.load(source) if args.frames_npy else real_frames(args.clips, args.per_clip)
    print(f"{len(frames)} real frames 256x256 from {source}; CPU time, 1 thread, median [min-max] of "
          f"{args.rounds} interleaved rounds; min_size_factor {MIN_SIZE} for all")
    print(f"slic_fast on CPU runs: {cpu_kernel()}")
    if fast_slic_class() is None:
        print("fast-slic not installed (pip install cython && pip install --no-build-isolation fast-slic): skipped")
    comp, masks = (None, None) if args.no_quality else composite(frames)
    for n, m in PRESETS:
        algos = algorithms(n, m, args.batch)
        rates = speed(frames, algos, args.rounds)
        scores = {} if comp is None else quality(comp, masks, algos)
        peer = rates.get("fast-slic", rates["skimage slic"])[0]
        print(f"\nn_segments={n} compactness={m:g}")
        for name, (med, lo, hi) in rates.items():
            q = scores.get(name)
            qs = "" if q is None else (f"  BR {q['br']:.3f}  ASA {q['asa']:.3f}  UE {q['ue']:.3f}  "
                                       f"segments {q['segments']:.1f}")
            print(f"  {name:>18}: {med:7.1f} [{lo:6.1f}-{hi:6.1f}] frames/s/core  {med / peer:5.2f}x "
                  f"{'fast-slic' if 'fast-slic' in rates else 'skimage'}{qs}")
        if args.torch_batch:
            rate, peak = torch_path_cpu(frames, n, m, args.torch_batch)
            print(f"  {'slic_fast torch':>18}: {rate:7.1f} frames/s/core, batch {args.torch_batch} in one call, peak "
                  f"memory +{peak:.0f} MiB (the path CUDA runs, here on CPU; one run)")
        if torch.cuda.is_available():
            print(f"  {'slic_fast cuda':>18}: {cuda_rate(frames, n, m, args.gpu_batch):9.1f} frames/s "
                  f"({torch.cuda.get_device_name()}, batch {args.gpu_batch})")


if __name__ == "__main__":
    main()
