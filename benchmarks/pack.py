"""Packing throughput on one core: ``python benchmarks/pack.py [--video PATH] [--repeats 3] [key=value ...]``.

Packs a 10 s, 25 fps clip (default: ../shared/data/videos/demo.mp4, 340x256 at 28 fps, 10 s; or a synthetic clip)
the way make_shards does, in this one process, and prints:
- clips/s per core for transcoding alone and for transcoding + the configured superpixels,
- superpixel frames/s per core for each algorithm at the packed resolution.
Rates are given per wall second and per CPU second of this process (the CPU figure is less disturbed by other load).
Config keys (``pack.*``, ``superpixels.*``) apply as in make_shards, e.g. ``superpixels.frame_stride=8``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from ssl_video.packing.inputs import Item
from ssl_video.packing.shards import _plain, make_sample, sp_plan
from ssl_video.packing.video import encode_h264, read_video

DEFAULT_VIDEO = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "videos" / "demo.mp4"


def _synthetic_clip(path: Path, seconds: float = 10.0, fps: float = 25.0, size: tuple[int, int] = (340, 256)) -> None:
    from ssl_video.synthetic.render import render_take

    n = int(seconds * fps)
    take = render_take(0, num_cameras=1, num_frames=n, size=(size[1], size[0]), action=0, num_classes=1,
                       segment=(0, n))
    path.write_bytes(encode_h264(take["frames"][0], fps, gop=250, crf=18))


def _timed(fn, repeats: int) -> tuple[float, float]:
    """Seconds per call: (wall, CPU of this process)."""
    fn()  # warm-up: imports, codec initialisation
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="config overrides (pack.*, superpixels.*)")
    parser.add_argument("--video", default="", help="input clip (default: shared demo.mp4, else synthetic)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_intermixed_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from ssl_video.config import ConfigError, load_config

    try:
        cfg = load_config(["pack.max_frames=250"] + list(args.overrides))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pc, spc = _plain(cfg.pack), _plain(cfg.superpixels)
    tmp = tempfile.TemporaryDirectory()
    video = Path(args.video) if args.video else DEFAULT_VIDEO
    if not video.is_file():
        video = Path(tmp.name) / "clip.mp4"
        _synthetic_clip(video)
    frames = read_video(video, pc["fps"], pc["short_side"], 0, pc["max_frames"] or None)
    seconds = len(frames) / pc["fps"]
    print(f"input {video.name}: {len(frames)} frames at {pc['fps']:g} fps ({seconds:.1f} s) -> "
          f"{frames.shape[2]}x{frames.shape[1]}, gop {pc['gop']}, preset {pc['preset']}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (others' load slows wall figures)")
    item = Item("bench", "train", None, [str(video)], video.name)
    plan = sp_plan(spc)
    results = {}
    results["transcode only"] = _timed(lambda: make_sample(item, pc, {}, []), args.repeats)
    results["transcode + superpixels"] = _timed(lambda: make_sample(item, pc, plan, []), args.repeats)
    for name, (wall, cpu) in results.items():
        print(f"{name:24s}: {1 / wall:6.2f} clips/s per core (wall), {1 / cpu:6.2f} clips/s per CPU-second")
    from ssl_video.superpixels.segment import segment

    batch = frames[:: max(1, len(frames) // 16)][:16]
    for algo, (stride, params) in plan.items():
        wall, cpu = _timed(lambda a=algo, p=params: segment(batch, a, **p), 1)
        per_clip = len(range(0, len(frames), stride))
        print(f"superpixels {algo:12s}: {len(batch) / wall:6.1f} frames/s per core (wall), {len(batch) / cpu:6.1f} "
              f"per CPU-second; stride {stride} -> {per_clip} frames per clip, params {params}")
    wall = results["transcode + superpixels"][0]
    print(f"Kinetics-400 (~240k clips) on 64 cores at this rate: {240_000 * wall / 64 / 3600:.1f} h")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
