"""Packing throughput on one core: ``python benchmarks/pack.py [--video PATH] [--repeats 3] [--presets] [key=value]``.

Packs a 10 s, 25 fps clip (default: ../shared/data/videos/demo.mp4, 340x256 at 28 fps, 10 s: a Kinetics-400-style
clip; else a synthetic clip) the way make_shards does (``make_sample``: decode, resize, x264, superpixels, npz), in this
one process with one thread, and prints clips/s per core = 1 / (CPU seconds of this process per clip), median of
``--repeats`` after one warm-up; wall figures beside them (disturbed by other load on a shared machine).

- default: transcoding alone, transcoding + the configured superpixels, and each algorithm's frames/s;
- ``--presets``: the walk study's superpixels (SLIC with 10 / 30 / 50 segments, compactness 30) for ``slic_fast``
  and skimage ``slic``, one preset per pack, at each ``--strides`` (superpixels.frame_stride: every k-th frame).
Config keys (``pack.*``, ``superpixels.*``) apply as in make_shards, e.g. ``superpixels.frame_stride=8``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load: one core means one thread

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from ssl_video.packing.inputs import Item  # noqa: E402
from ssl_video.packing.sample import make_sample, plain, sp_plan  # noqa: E402
from ssl_video.packing.video import encode_h264, read_video  # noqa: E402

DEFAULT_VIDEO = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "videos" / "demo.mp4"
STUDY_SEGMENTS = (10, 30, 50)  # studies.md B: SLIC-10 / -30 / -50, compactness 30
STUDY_COMPACTNESS = 30.0


def _synthetic_clip(path: Path, seconds: float = 10.0, fps: float = 25.0, size: tuple[int, int] = (340, 256)) -> None:
    from ssl_video.synthetic.render import render_take

    n = int(seconds * fps)
    take = render_take(0, num_cameras=1, num_frames=n, size=(size[1], size[0]), action=0, num_classes=1,
                       segment=(0, n))
    path.write_bytes(encode_h264(take["frames"][0], fps, gop=250, crf=18))


def _timed(fn, repeats: int, warm_up: bool = True) -> tuple[float, float]:
    """Seconds per call, median over ``repeats``: (wall, CPU of this process)."""
    if warm_up:
        fn()  # imports, codec initialisation
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def _study_presets(item: Item, pc: dict, strides: list[int], algos: list[str], repeats: int) -> None:
    wall, cpu = _timed(lambda: make_sample(item, pc, {}, []), repeats)
    print(f"{'superpixels':12s} {'segments':>8s} {'stride':>6s} {'maps':>5s} {'CPU s/clip':>10s} "
          f"{'clips/s/core':>12s} {'(wall)':>7s}")
    print(f"{'none':12s} {'-':>8s} {'-':>6s} {0:5d} {cpu:10.3f} {1 / cpu:12.2f} {1 / wall:7.2f}")
    frames = pc["max_frames"]
    for stride in strides:
        for algo in algos:
            for n in STUDY_SEGMENTS:
                params = {"n_segments": n, "compactness": STUDY_COMPACTNESS}
                params.update({"start_label": 0} if algo == "slic" else {})
                plan = {algo: (stride, params)}
                wall, cpu = _timed(lambda p=plan: make_sample(item, pc, p, []), repeats, warm_up=False)
                print(f"{algo:12s} {n:8d} {stride:6d} {len(range(0, frames, stride)):5d} {cpu:10.3f} "
                      f"{1 / cpu:12.2f} {1 / wall:7.2f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="config overrides (pack.*, superpixels.*)")
    parser.add_argument("--video", default="", help="input clip (default: shared demo.mp4, else synthetic)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", action="store_true", help="the study's SLIC presets, slic_fast and slic")
    parser.add_argument("--strides", default="1,4", help="--presets: superpixel frame strides to measure")
    parser.add_argument("--algos", default="slic_fast,slic", help="--presets: algorithms to measure")
    args = parser.parse_intermixed_args(argv)
    import torch

    torch.set_num_threads(1)
    from ssl_video.config import ConfigError, load_config

    try:
        cfg = load_config(["pack.max_frames=250"] + list(args.overrides))
        strides = [int(s) for s in args.strides.split(",")]
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pc, spc = plain(cfg.pack), plain(cfg.superpixels)
    tmp = tempfile.TemporaryDirectory()
    video = Path(args.video) if args.video else DEFAULT_VIDEO
    if not video.is_file():
        video = Path(tmp.name) / "clip.mp4"
        _synthetic_clip(video)
    frames = read_video(video, pc["fps"], pc["short_side"], 0, pc["max_frames"] or None)
    pc["max_frames"] = len(frames)
    print(f"input {video.name}: {len(frames)} frames at {pc['fps']:g} fps ({len(frames) / pc['fps']:.1f} s) -> "
          f"{frames.shape[2]}x{frames.shape[1]}, gop {pc['gop']}, preset {pc['preset']}; one thread; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (others' load slows wall figures)")
    item = Item("bench", "train", None, [str(video)], video.name)
    if args.presets:
        _study_presets(item, pc, strides, args.algos.split(","), args.repeats)
        tmp.cleanup()
        return 0
    plan = sp_plan(spc)
    results = {"transcode only": _timed(lambda: make_sample(item, pc, {}, []), args.repeats),
               "transcode + superpixels": _timed(lambda: make_sample(item, pc, plan, []), args.repeats)}
    for name, (wall, cpu) in results.items():
        print(f"{name:24s}: {1 / cpu:6.2f} clips/s per core (CPU time), {1 / wall:6.2f} per wall second")
    from ssl_video.superpixels.segment import segment

    batch = frames[:: max(1, len(frames) // 16)][:16]
    for algo, (stride, params) in plan.items():
        wall, cpu = _timed(lambda a=algo, p=params: segment(batch, a, **p), 1)
        per_clip = len(range(0, len(frames), stride))
        print(f"superpixels {algo:12s}: {len(batch) / cpu:6.1f} frames/s per core (CPU time), {len(batch) / wall:6.1f} "
              f"per wall second; stride {stride} -> {per_clip} frames per clip, params {params}")
    cpu = results["transcode + superpixels"][1]
    print(f"Kinetics-400 (~240k clips) on 64 cores at this rate: {240_000 * cpu / 64 / 3600:.1f} h")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
