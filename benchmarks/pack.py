"""Packing throughput on one core: ``python benchmarks/pack.py [--video PATH] [--repeats 3] [--presets | --stages |
--quality] [key=value]``.

Packs a 10 s, 25 fps clip (default: ../shared/data/videos/demo.mp4, 340x256 at 28 fps, 10 s: a Kinetics-400-style
clip; else a synthetic clip) the way make_shards does (``make_sample``: decode, resize, x264, superpixels, npz), in this
one process with one thread, and prints clips/s per core = 1 / (CPU seconds of this process per clip), median of
``--repeats`` after one warm-up; wall figures beside them (disturbed by other load on a shared machine).

- default: transcoding alone, transcoding + the configured superpixels, and each algorithm's frames/s;
- ``--presets``: the walk study's superpixels (SLIC with 10 / 30 / 50 segments, compactness 30, and Felzenszwalb
  scale 50 / sigma 0.5 / min_size 40), one preset per pack, at each ``--strides`` (superpixels.frame_stride);
- ``--stages``: CPU seconds of each stage of one clip, measured alone (decode, resize, x264, RGB of the superpixel
  frames, each preset's superpixels, npz, tar + sha256) beside the whole ``make_sample``;
- ``--quality``: for each ``--encoders`` setting (``;``-separated lists of pack.* keys), CPU per clip of transcoding,
  mp4 size and PSNR / SSIM of the decoded frames against the source resized straight to RGB.
Config keys (``pack.*``, ``superpixels.*``) apply as in make_shards, e.g. ``superpixels.frame_stride=3``.
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

import numpy as np  # noqa: E402

from ssl_video.packing.inputs import Item  # noqa: E402
from ssl_video.packing.sample import make_sample, npz_bytes, plain, sp_plan  # noqa: E402
from ssl_video.packing.video import H264Writer, decode_bytes, encode_h264, iter_video_frames, read_video  # noqa: E402

DEFAULT_VIDEO = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "videos" / "demo.mp4"
STUDY_SEGMENTS = (10, 30, 50)  # studies.md B: SLIC-10 / -30 / -50, compactness 30
STUDY_COMPACTNESS = 30.0
STUDY_FH = {"scale": 50, "sigma": 0.5, "min_size": 40}  # walk_table's Felzenszwalb preset
# --quality default: the packer before 2026-12, then presets on YUV frames
ENCODERS = ("pack.preset=veryfast pack.crf=23 pack.yuv_passthrough=false; pack.preset=veryfast pack.crf=23; "
            "pack.preset=superfast pack.crf=25; pack.preset=superfast pack.crf=26; pack.preset=ultrafast pack.crf=26")


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


def _study_plans(algos: list[str]) -> dict[str, dict]:
    """``{row name: {algo: params}}`` for the study's presets of each algorithm in ``algos``."""
    plans = {}
    for algo in algos:
        if algo == "felzenszwalb":
            plans["felzenszwalb"] = {"felzenszwalb": dict(STUDY_FH)}
            continue
        for n in STUDY_SEGMENTS:
            params = {"n_segments": n, "compactness": STUDY_COMPACTNESS}
            params.update({"start_label": 0} if algo == "slic" else {})
            plans[f"{algo} {n}"] = {algo: params}
    if "felzenszwalb" in algos and "slic_fast" in algos:  # the SLIC-30 + FH pack
        plans["slic_fast 30 + fh"] = {"slic_fast": plans["slic_fast 30"]["slic_fast"], "felzenszwalb": dict(STUDY_FH)}
    return plans


def _study_presets(item: Item, pc: dict, strides: list[int], algos: list[str], repeats: int) -> None:
    wall, cpu = _timed(lambda: make_sample(item, pc, {}, []), repeats)
    print(f"{'superpixels':20s} {'stride':>6s} {'maps':>5s} {'CPU s/clip':>10s} {'clips/s/core':>12s} {'(wall)':>7s}")
    print(f"{'none':20s} {'-':>6s} {0:5d} {cpu:10.3f} {1 / cpu:12.2f} {1 / wall:7.2f}")
    frames = pc["max_frames"]
    for stride in strides:
        for name, algo_params in _study_plans(algos).items():
            plan = {algo: (stride, params) for algo, params in algo_params.items()}
            wall, cpu = _timed(lambda p=plan: make_sample(item, pc, p, []), repeats, warm_up=False)
            print(f"{name:20s} {stride:6d} {len(range(0, frames, stride)):5d} {cpu:10.3f} {1 / cpu:12.2f} "
                  f"{1 / wall:7.2f}", flush=True)


def _stages(video: Path, item: Item, pc: dict, strides: list[int], algos: list[str], repeats: int) -> None:
    """Each stage alone, CPU s per clip (median of ``repeats``); superpixels per preset and stride."""
    import av
    from av.video.reformatter import VideoReformatter

    from ssl_video.packing.shards import sha256_file, write_tar
    from ssl_video.superpixels.segment import segment

    def decode():
        with av.open(str(video)) as container:
            container.streams.video[0].thread_count = 1
            for _ in container.decode(video=0):
                pass

    def frames():
        return list(iter_video_frames(video, pc["fps"], pc["short_side"], 0, pc["max_frames"],
                                      yuv=pc["yuv_passthrough"]))

    def encode(clip):
        writer = H264Writer(clip[0].width, clip[0].height, pc["fps"], pc["gop"], pc["crf"], pc["preset"])
        for frame in clip:
            writer.write_frame(frame)
        return writer.close()

    clip, to_rgb = frames(), VideoReformatter()
    rows = [("decode (all source frames)", _timed(decode, repeats)[1]),
            ("decode + resize (output frames)", _timed(frames, repeats)[1]),
            (f"x264 {pc['preset']} crf {pc['crf']}", _timed(lambda: encode(clip), repeats)[1])]
    rgb = {}
    for stride in strides:
        rows.append((f"RGB of every {stride}th frame", _timed(lambda s=stride: [
            to_rgb.reformat(f, format="rgb24", threads=1).to_ndarray() for f in clip[::s]], repeats)[1]))
        rgb[stride] = np.stack([to_rgb.reformat(f, format="rgb24", threads=1).to_ndarray() for f in clip[::stride]])
    for stride in strides:
        for name, algo_params in _study_plans(algos).items():
            for algo, params in algo_params.items():
                if " + " in name:
                    continue
                run = lambda a=algo, p=params, s=stride: np.concatenate(  # noqa: E731
                    [segment(rgb[s][i:i + 8], a, **p) for i in range(0, len(rgb[s]), 8)])
                rows.append((f"{name} superpixels, stride {stride}", _timed(run, 1)[1]))
        labels = np.concatenate([segment(rgb[stride][i:i + 8], "slic_fast", n_segments=30, compactness=30.0)
                                 for i in range(0, len(rgb[stride]), 8)])
        rows.append((f"npz of {len(labels)} maps", _timed(lambda x=labels: npz_bytes(x), repeats)[1]))
    members = make_sample(item, pc, {"slic_fast": (strides[-1], {"n_segments": 30, "compactness": 30.0})}, [])
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "shard.tar"
        rows.append(("tar + sha256 of one sample", _timed(lambda: (write_tar(tar, members), sha256_file(tar)),
                                                           repeats)[1]))
    rows.append(("make_sample, no superpixels", _timed(lambda: make_sample(item, pc, {}, []), repeats)[1]))
    for name, cpu in rows:
        print(f"{name:40s} {cpu:7.3f} CPU s/clip", flush=True)


def _psnr_ssim(decoded: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import structural_similarity

    mse = float(np.mean((decoded.astype(np.float64) - ref) ** 2))
    pick = range(0, len(ref), max(1, len(ref) // 25))  # SSIM on 25 frames spread over the clip
    ssim = statistics.mean(structural_similarity(decoded[i], ref[i].astype(np.uint8), channel_axis=-1)
                           for i in pick)
    return 10 * np.log10(255.0 ** 2 / mse), ssim


def _quality(video: Path, item: Item, overrides: list[str], encoders: str, repeats: int) -> None:
    from ssl_video.config import load_config

    ref = None
    print(f"{'encoder settings':58s} {'CPU s/clip':>10s} {'clips/s/core':>12s} {'kB':>6s} {'PSNR dB':>7s} "
          f"{'SSIM':>6s} {'decode CPU s':>12s}")
    for setting in encoders.split(";"):
        pc = plain(load_config(["pack.max_frames=250"] + overrides + setting.split()).pack)
        if ref is None:  # the source resized straight to RGB: what an encoder-free pipeline would train on
            ref = read_video(video, pc["fps"], pc["short_side"], 0, pc["max_frames"]).astype(np.float64)
        _, cpu = _timed(lambda p=pc: make_sample(item, p, {}, []), repeats)
        mp4 = dict(make_sample(item, pc, {}, []))[f"{item.key}.mp4"]
        psnr, ssim = _psnr_ssim(decode_bytes(mp4), ref)
        _, decode_cpu = _timed(lambda m=mp4: decode_bytes(m), repeats)  # the reading side: all frames to RGB
        print(f"{setting.strip():58s} {cpu:10.3f} {1 / cpu:12.2f} {len(mp4) / 1e3:6.0f} {psnr:7.2f} {ssim:6.4f} "
              f"{decode_cpu:12.3f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="config overrides (pack.*, superpixels.*)")
    parser.add_argument("--video", default="", help="input clip (default: shared demo.mp4, else synthetic)")
    parser.add_argument("--repeats", type=int, default=3)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--presets", action="store_true", help="the study's superpixel presets, one per pack")
    mode.add_argument("--stages", action="store_true", help="CPU of each stage of one clip, measured alone")
    mode.add_argument("--quality", action="store_true", help="x264 settings: CPU, size, PSNR/SSIM")
    parser.add_argument("--strides", default="1,3", help="--presets/--stages: superpixel frame strides "
                        "(3: the walk study's 8 fps of 25, data.frame_stride=3)")
    parser.add_argument("--algos", default="slic_fast,felzenszwalb", help="--presets/--stages: algorithms "
                        "(slic_fast, slic, felzenszwalb)")
    parser.add_argument("--encoders", default=ENCODERS, help="--quality: ';'-separated pack.* settings")
    args = parser.parse_intermixed_args(argv)
    import torch

    torch.set_num_threads(1)
    from ssl_video.config import ConfigError, load_config

    overrides = ["pack.max_frames=250"] + list(args.overrides)
    try:
        cfg = load_config(overrides)
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
          f"{frames.shape[2]}x{frames.shape[1]}, gop {pc['gop']}, x264 {pc['preset']} crf {pc['crf']}, "
          f"yuv_passthrough {pc['yuv_passthrough']}; one thread; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores (others' load slows wall figures)")
    item = Item("bench", "train", None, [str(video)], video.name)
    algos = args.algos.split(",")
    if args.presets:
        _study_presets(item, pc, strides, algos, args.repeats)
    elif args.stages:
        _stages(video, item, pc, strides, algos, args.repeats)
    elif args.quality:
        _quality(video, item, overrides, args.encoders, args.repeats)
    else:
        _default(item, pc, spc, frames, args.repeats)
    tmp.cleanup()
    return 0


def _default(item: Item, pc: dict, spc: dict, frames: np.ndarray, repeats: int) -> None:
    plan = sp_plan(spc)
    results = {"transcode only": _timed(lambda: make_sample(item, pc, {}, []), repeats),
               "transcode + superpixels": _timed(lambda: make_sample(item, pc, plan, []), repeats)}
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


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
