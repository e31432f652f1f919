"""Loader throughput per CPU core, split into decode / superpixel / augmentation time.

    python benchmarks/loader.py --shards shards/synthetic/kinetics/train [--clips 200] [--workers 2] [key=value ...]
    python benchmarks/loader.py --from-videos ../shared/data/clips ../shared/data/videos   # packs them first

Runs the loader's per-sample stages on one thread over samples read from the shards and prints ms/clip and clips/s
per core for each stage and in total, then the end-to-end rate of ``build_loader`` with ``--workers`` workers.
Defaults: 4-frame clips at 256² with slic superpixels (``method=walk_superpixel``), the walk preset.
The decoder line says which decoder ran (``data.decoder``: ssl_video/data/decode.py; decoders side by side:
benchmarks/decode.py). ``make_example`` is timed twice: with glibc's default malloc thresholds, and as in a loader
worker, which raises them (ssl_video/data/malloc.py) so that per-sample buffers are not faulted in afresh.
With ``data.gpu_augment=true`` the photometric part runs on the device on whole batches: it is then excluded from the
worker figures (the line says so), which count only what a worker does.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import webdataset as wds
from omegaconf import OmegaConf
from tqdm import tqdm

from ssl_video.config import load_config
from ssl_video.data import augment, sampling
from ssl_video.data.decode import decode_frames, resolve_decoder
from ssl_video.data.label_maps import read_rows
from ssl_video.data.loader import build_loader, make_example, plain_config, shard_list
from ssl_video.data.malloc import keep_freed_memory


def _pack_videos(folders: list[Path], out: Path) -> Path:
    from ssl_video.config import PackConfig, SuperpixelConfig
    from ssl_video.packing.shards import pack

    videos = out / "videos"  # one folder of links: the file list names files relative to one input folder
    videos.mkdir()
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.suffix in {".mp4", ".mkv", ".avi", ".mov"} and not (videos / path.name).exists():
                (videos / path.name).symlink_to(path.resolve())
    names = sorted(p.name for p in videos.iterdir())
    (out / "list.txt").write_text("".join(f"{n}\n" for n in names))
    pack(PackConfig(output=str(out / "shards"), kind="filelist", input=str(videos), annotations=str(out / "list.txt"),
                    short_side=256, max_frames=64, shard_size=4),
         SuperpixelConfig(algos={"slic": {"n_segments": 64, "start_label": 0}}, frame_stride=4))  # fmt: skip
    return out / "shards" / "train"


STAGES = ("decode", "superpixels", "augment")


def stage_times(samples: list[dict], cfg, clips: int, ctx: str) -> tuple[dict[str, float], dict[str, float]]:
    """(wall seconds, CPU seconds of this process) per stage over ``clips`` clips on one thread.

    CPU seconds count every thread of the process, so clips per CPU-second is the per-core figure that holds up when
    other processes compete for the cores (wall time does not)."""
    rng = random.Random(0)
    preset = augment.get_preset(cfg.augment)
    wall, cpu = dict.fromkeys(STAGES, 0.0), dict.fromkeys(STAGES, 0.0)

    def clock() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def add(stage: str, start: tuple[float, float], end: tuple[float, float]) -> None:
        wall[stage] += end[0] - start[0]
        cpu[stage] += end[1] - start[1]

    for i in tqdm(range(clips), desc="clips", file=sys.stderr):
        sample = samples[i % len(samples)]
        meta = json.loads(sample["json"])
        prefix = sampling.view_prefixes(sample)[0]
        algo = sampling.choose_superpixels(cfg, rng)
        indices = sampling.choose_frames(meta, cfg, rng, superpixels=algo)
        t0 = clock()
        frames = torch.from_numpy(decode_frames(sample[f"{prefix}mp4"], indices, ctx=ctx)).permute(0, 3, 1, 2)
        t1 = clock()
        labels = None
        if algo:
            rows = sampling.superpixel_rows(meta, algo, indices)
            labels = torch.from_numpy(read_rows(sample[f"{prefix}sp.{algo}.npz"], rows))
        t2 = clock()
        p = augment.draw_params(preset, frames.shape[-2], frames.shape[-1], cfg.crop_size, rng)
        video, mask = augment.apply_geometric(frames, labels, p)
        augment.finish_frames(video, p, photometric=not cfg.gpu_augment)
        t3 = clock()
        if mask is not None:
            augment.finish_maps(mask, cfg.max_superpixels)
        t4 = clock()
        add("decode", t0, t1)
        add("superpixels", t1, t2)  # map loading ...
        add("superpixels", t3, t4)  # ... + relabel / cap (their warp runs with the frames', in augment)
        add("augment", t2, t3)
    return wall, cpu


def _fits(sample: dict, cfg) -> bool:
    try:
        for algo in sampling.superpixel_choices(cfg.superpixels) or [None]:
            sampling.choose_frames(json.loads(sample["json"]), cfg, random.Random(0), superpixels=algo)
    except ValueError:
        return False  # too short for the clip (e.g. a 3-frame video): the loader would skip it too
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="shards/synthetic/kinetics/train")
    parser.add_argument("--from-videos", nargs="+", default=None, help="pack these folders of videos first (temporary)")
    parser.add_argument("--repeats", type=int, default=3, help="make_example passes; the median is printed")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers for the end-to-end figure")
    parser.add_argument("--batch-size", type=int, default=8)
    args, overrides = parser.parse_known_args()
    tmp = tempfile.TemporaryDirectory()
    folders = [Path(f) for f in args.from_videos or []]
    shards = _pack_videos(folders, Path(tmp.name)) if folders else Path(args.shards)
    if not (shards / "manifest.json").is_file():
        sys.exit(f"error: no shard set at {shards} (make one with tools/make_shards.py, or pass --from-videos DIR)")
    cfg = load_config(["method=walk_superpixel", "data.crop_size=256", f"data.root={shards}", *overrides]).data
    torch.set_num_threads(1)
    decoder = resolve_decoder(cfg.decoder)
    samples = [s for s in wds.WebDataset(shard_list(cfg.root), shardshuffle=False) if _fits(s, cfg)]
    if not samples:
        sys.exit(f"error: no sample of {cfg.root} holds a {cfg.clip_len}-frame clip at stride {cfg.frame_stride}")
    wall, cpu = stage_times(samples, cfg, args.clips, decoder)
    photometric = "on the device, excluded from these figures" if cfg.gpu_augment else "in the worker, included"
    print(f"{args.clips} clips of {cfg.clip_len}x{cfg.crop_size}² (superpixels: {cfg.superpixels}, "
          f"augment: {cfg.augment}, photometric part {photometric}), one thread, decoder: {decoder}")  # fmt: skip
    print(f"  {'stage':12s} {'wall ms/clip':>12s} {'CPU ms/clip':>12s} {'clips/CPU-s':>12s}")
    for stage in STAGES:
        print(f"  {stage:12s} {1000 * wall[stage] / args.clips:12.2f} {1000 * cpu[stage] / args.clips:12.2f} "
              f"{args.clips / max(cpu[stage], 1e-9):12.1f}")  # fmt: skip
    total_wall, total_cpu = sum(wall.values()), sum(cpu.values())
    print(f"  per-sample work: {args.clips / total_cpu:.1f} clips/s per core (CPU time), "
          f"{args.clips / total_wall:.1f} clips/s wall (lower when the cores are shared)")  # fmt: skip
    plain = plain_config(cfg)  # as the loader's workers hold it
    for label in ("glibc defaults", "as in a loader worker (malloc.py)"):
        if label.startswith("as in"):
            keep_freed_memory()  # process-wide and for good: hence measured second
        rates = []
        for _ in range(args.repeats):  # the loader's own per-sample function, bookkeeping included
            rng, start = random.Random(1), time.process_time()
            for i in range(args.clips):
                make_example(samples[i % len(samples)], plain, rng, ctx=decoder)
            rates.append(args.clips / (time.process_time() - start))
        print(f"  make_example (the loader's per-sample call), {label}: {statistics.median(rates):.1f} clips/s per "
              f"core (CPU time; median of {args.repeats}: {', '.join(f'{r:.1f}' for r in sorted(rates))})")
    batches = max(1, args.clips // args.batch_size)
    loader_cfg = OmegaConf.merge(cfg, {"epoch_length": batches, "num_workers": args.workers})
    start = time.perf_counter()
    n = sum(b["clips"].shape[0] for b in build_loader(loader_cfg, batch_size=args.batch_size, seed=0))
    rate = n / (time.perf_counter() - start)
    print(f"  end to end (build_loader, {args.workers} worker(s), incl. start-up): {rate:.1f} clips/s, "
          f"{rate / max(1, args.workers):.1f} per worker")  # fmt: skip


if __name__ == "__main__":
    main()
