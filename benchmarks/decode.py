"""Decoders side by side on the same packed bytes and the same frame requests: CPU ms per clip, one thread.

    python benchmarks/decode.py --shards shards/synthetic/kinetics/train [--clips 200] [--repeats 3]
    python benchmarks/decode.py --shards /tmp/real/train --robustness ../shared/data/videos

Requests (drawn once from a seeded RNG, identical for every decoder): ``4 frames at stride 4`` (the walk's clip) and
``8 consecutive frames``. Decoders: ``auto`` = ours (ssl_video.data.decode: PyAV per GOP on CPU), ``decord`` (CPU),
``torchcodec`` exact and approximate seek (CPU; and ``cuda`` when torch sees a GPU and torchcodec's build decodes on
it). Each decoder opens the video from bytes for every clip, as the loader does. The figure is CPU time of this
process (``time.process_time``) per clip, median over ``--repeats`` passes, with torch and FFmpeg on one thread; a
last column checks that each decoder returned the same pixels as ``auto``. Unavailable libraries are listed, not
fatal. ``--robustness DIR`` also tries every decoder on each raw video of DIR (codecs, 10-bit, rotation) and prints
what each returned.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ssl_video.data import decode, decode_torchcodec

Decoder = Callable[[bytes, list[int]], np.ndarray]


def decoders(cuda: bool) -> tuple[dict[str, Decoder], dict[str, str]]:
    """The decoders that import here, and a reason for each one that does not."""
    found: dict[str, Decoder] = {"auto": lambda data, idx: decode.decode_frames(data, idx, ctx="pyav")}
    missing: dict[str, str] = {}
    try:
        import decord  # noqa: F401

        found["decord"] = lambda data, idx: decode.decode_frames(data, idx, ctx="cpu")
    except ImportError as exc:
        missing["decord"] = str(exc)
    if decode_torchcodec.available():
        found["torchcodec exact"] = lambda data, idx: decode_torchcodec.decode(data, idx)
        found["torchcodec approx"] = lambda data, idx: decode_torchcodec.decode(data, idx, seek_mode="approximate")
        if cuda:
            found["torchcodec cuda"] = lambda data, idx: decode_torchcodec.decode(data, idx, device="cuda")
    else:
        missing["torchcodec"] = decode_torchcodec.error() or "not installed"
    return found, missing


def requests(videos: list[tuple[bytes, int]], clips: int, seed: int = 0) -> dict[str, list[tuple[int, list[int]]]]:
    """``{request name: [(video number, frame indices), ...]}``, the same for every decoder."""
    rng = random.Random(seed)
    shapes = {"4 frames at stride 4": (4, 4), "8 consecutive frames": (8, 1)}
    out = {}
    for name, (count, stride) in shapes.items():
        span = (count - 1) * stride + 1
        usable = [v for v, (_, n) in enumerate(videos) if n >= span]
        picks = [rng.choice(usable) for _ in range(clips)]
        starts = [rng.randrange(videos[v][1] - span + 1) for v in picks]
        out[name] = [(v, [s + k * stride for k in range(count)]) for v, s in zip(picks, starts)]
    return out


def time_decoder(fn: Decoder, videos, plan, repeats: int) -> float:
    """Median CPU ms per clip over ``repeats`` passes of ``plan``."""
    passes = []
    for _ in range(repeats):
        start = time.process_time()
        for v, idx in plan:
            fn(videos[v][0], idx)
        passes.append(1000 * (time.process_time() - start) / len(plan))
    return statistics.median(passes)


def same_as_reference(fn: Decoder, reference: Decoder, videos, plan) -> str:
    for v, idx in plan[:20]:
        if not np.array_equal(fn(videos[v][0], idx), reference(videos[v][0], idx)):
            return "differs"
    return "equal"


def frame_count(data: bytes) -> int:
    """Frames in a raw video: decord's count, else the container's (PyAV), for files decord cannot open."""
    try:
        return decode.video_info(data)[0]
    except ValueError:
        import av

        with av.open(io.BytesIO(data)) as container:
            return container.streams.video[0].frames


def robustness(folder: Path, found: dict[str, Decoder]) -> None:
    """Each decoder on each raw video: frames [0, mid, last] -> shape and max difference from the first decoder that
    succeeded, or the one-line error."""
    print(f"\nraw videos of {folder}: frames (0, mid, last) -> shape, max |difference| from the first that decoded")
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        try:
            n = frame_count(data)
        except Exception as exc:  # report, whatever the library raises
            print(f"  {path.name}: no frame count: {type(exc).__name__}")
            continue
        cells, first = [], None
        for name, fn in found.items():
            try:
                frames = fn(data, [0, n // 2, n - 1]).astype(np.int16)
            except Exception as exc:  # report, whatever the library raises
                cells.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:50] if str(exc) else ''}")
                continue
            first = frames if first is None else first
            diff = int(np.abs(frames - first).max()) if frames.shape == first.shape else "shape differs"
            cells.append(f"{name}: {tuple(frames.shape)} {diff}")
        print(f"  {path.name} ({n} frames): " + "; ".join(cells))


def load_videos(shards: Path) -> list[tuple[bytes, int]]:
    import json

    import webdataset as wds

    from ssl_video.data.loader import shard_list

    samples = wds.WebDataset(shard_list(shards), shardshuffle=False)
    return [(s["mp4"], int(json.loads(s["json"])["num_frames"])) for s in samples if "mp4" in s]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="shards/synthetic/kinetics/train")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--robustness", default=None, help="also try every decoder on the raw videos of this folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shards = Path(args.shards)
    if not (shards / "manifest.json").is_file():
        sys.exit(f"error: no shard set at {shards} (make one with tools/make_shards.py)")
    videos = load_videos(shards)
    found, missing = decoders(torch.cuda.is_available())
    plans = requests(videos, args.clips)
    print(f"{len(videos)} packed videos of {shards}; {args.clips} clips per request; CPU ms per clip (median of "
          f"{args.repeats}), one thread; torch {torch.__version__}")  # fmt: skip
    print(f"  {'decoder':18s} " + " ".join(f"{name:>22s}" for name in plans) + "  frames")
    for name, fn in found.items():
        for plan in plans.values():  # warm-up: library loading and first-call costs are not per clip
            fn(videos[plan[0][0]][0], plan[0][1])
        cells = [time_decoder(fn, videos, plan, args.repeats) for plan in plans.values()]
        first = plans[next(iter(plans))]
        check = "reference" if name == "auto" else same_as_reference(fn, found["auto"], videos, first)
        print(f"  {name:18s} " + " ".join(f"{c:22.2f}" for c in cells) + f"  {check}")
    for name, why in missing.items():
        print(f"  {name:18s} not measured: {why}")
    if args.robustness:
        robustness(Path(args.robustness), found)


if __name__ == "__main__":
    main()
