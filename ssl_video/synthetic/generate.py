"""Synthetic data sets on disk, deterministic by seed (layouts of docs/design.md), and the make_synthetic CLI.

- :func:`write_davis`: DAVIS-2017 layout (JPEG frames, palette-PNG instance masks, ImageSets/2017/val.txt) + mp4s.
- :func:`write_kinetics`: ``<split>/<class>/<youtube_id>_<start:06d>_<end:06d>.mp4`` + ``<split>.csv``.
- :func:`write_takes`: ``<take>/cam<k>.mp4`` + ``annotation.json`` (fps, segments, sync_offsets).
- :func:`make_all`: all three under ``root/{davis,kinetics,takes}``.

Every output folder is built in a temporary sibling and renamed into place, and carries ``.synthetic.json``; an
existing folder is replaced only if it holds that marker (never a folder this module did not write).
The renderers (:func:`render_sequence`, :func:`render_take`) live in :mod:`ssl_video.synthetic.render`.
"""

from __future__ import annotations

import csv
import inspect
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from ssl_video.synthetic.render import (
    ACTIONS,
    child_seed,
    make_sequence_scene,
    render_sequence,
    render_take,
)

__all__ = [
    "ACTIONS", "FPS", "SEGMENT_FRACTION", "SIZES", "child_seed", "davis_palette", "make_all", "make_sequence_scene",
    "main", "render_sequence", "render_take", "take_sync_offsets", "write_davis", "write_kinetics", "write_takes",
    "write_video",
]

FPS = 25
MARKER = ".synthetic.json"
SEGMENT_FRACTION = (0.4, 0.7)  # a take's action spans 40-70 % of it: the sets written before the option existed
KINDS = ("davis", "kinetics", "takes")
SIZES = {  # per size, the keyword arguments of each writer; "small" must stay fast (built by test session fixtures)
    "small": {
        "davis": {"num_sequences": 3, "num_frames": 24, "size": (128, 128)},
        "kinetics": {"classes": 3, "clips_per_class": 3, "num_frames": 32, "size": (128, 128)},
        "takes": {"num_takes": 6, "num_cameras": 3, "num_classes": 3, "num_frames": 48, "size": (128, 128)},
    },
    "medium": {
        "davis": {"num_sequences": 10, "num_frames": 48, "size": (128, 192)},
        "kinetics": {"classes": 6, "clips_per_class": 12, "num_frames": 48, "size": (128, 128)},
        "takes": {"num_takes": 24, "num_cameras": 4, "num_classes": 6, "num_frames": 96, "size": (128, 128)},
    },
}
_YT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def write_video(path: str | Path, frames: np.ndarray, fps: int = FPS) -> Path:
    """Encode (T,H,W,3) uint8 RGB as H.264 mp4 (yuv420p, crf 18), byte-identical for identical input."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T,H,W,3) uint8, got {frames.shape} {frames.dtype}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"yuv420p needs even height and width, got {frames.shape[1]}x{frames.shape[2]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1
        # measured: with mb-tree on, output bytes varied between identical runs on a loaded machine (threads=1 too)
        stream.options = {"crf": "18", "preset": "fast", "x264-params": "threads=1:mbtree=0"}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def davis_palette() -> list[int]:
    """The DAVIS / PASCAL VOC palette (label 1 = (128,0,0), 2 = (0,128,0), ...) as 768 ints for ``putpalette``."""
    # hand-written: the 10-line bit-interleaving rule DAVIS uses; no installed package ships it
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _build_dir(target: Path, info: dict, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` and move ``tmp`` to ``target`` (replacing it only if it is ours): nothing half-written."""
    target = Path(target)
    if target.is_file() or (target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file()):
        raise ValueError(f"{target} exists and was not written by make_synthetic (no {MARKER}); refusing to replace")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        build(tmp)
        (tmp / MARKER).write_text(json.dumps(info, sort_keys=True) + "\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _tick(progress: Callable[[], object] | None) -> None:
    if progress is not None:
        progress()


def write_davis(root: str | Path, seed: int, num_sequences: int = 3, num_frames: int = 24,
                size: tuple[int, int] = (128, 128), progress: Callable[[], object] | None = None) -> Path:
    """DAVIS-2017 layout under ``root``: sequences ``synth-000``… (2, 3, 4, 2… objects) and ``videos/<seq>.mp4``."""
    from PIL import Image

    names = [f"synth-{i:03d}" for i in range(num_sequences)]
    palette = davis_palette()

    def build(tmp: Path) -> None:
        for i, name in enumerate(names):
            frames, masks = render_sequence(child_seed(seed, 1, i), num_frames, size, num_objects=2 + i % 3)
            (tmp / "JPEGImages/480p" / name).mkdir(parents=True)
            (tmp / "Annotations/480p" / name).mkdir(parents=True)
            for t in range(num_frames):
                Image.fromarray(frames[t]).save(tmp / "JPEGImages/480p" / name / f"{t:05d}.jpg", quality=95)
                png = Image.fromarray(masks[t])
                png.putpalette(palette)  # makes it mode "P", as DAVIS ships its annotations
                png.save(tmp / "Annotations/480p" / name / f"{t:05d}.png")
            write_video(tmp / "videos" / f"{name}.mp4", frames)
            _tick(progress)
        (tmp / "ImageSets/2017").mkdir(parents=True)
        (tmp / "ImageSets/2017/val.txt").write_text("".join(n + "\n" for n in names))

    info = {"kind": "davis", "seed": seed, "num_sequences": num_sequences, "num_frames": num_frames, "size": size}
    return _build_dir(Path(root), info, build)


def _youtube_id(rng: np.random.Generator) -> str:
    return "".join(_YT_ALPHABET[i] for i in rng.integers(0, len(_YT_ALPHABET), 11))


def write_kinetics(root: str | Path, seed: int, classes: int = 3, clips_per_class: int = 3,
                   splits: Sequence[str] = ("train", "val"), num_frames: int = 32, size: tuple[int, int] = (128, 128),
                   progress: Callable[[], object] | None = None) -> Path:
    """Kinetics-400 tree: class ``k`` (name ``ACTIONS[k]``) is an actor doing motion ``k`` for the whole clip.

    Clips differ in scene, colours, textures and viewpoint; only the motion tells the class (learnable).
    """
    if not 1 <= classes <= len(ACTIONS):
        raise ValueError(f"classes must be in 1..{len(ACTIONS)}, got {classes}")
    if len(set(splits)) != len(splits) or not splits:
        raise ValueError(f"splits must be distinct and non-empty, got {list(splits)}")

    def build(tmp: Path) -> None:
        seen: set[str] = set()
        for s, split in enumerate(splits):
            rows = []
            for c in range(classes):
                for j in range(clips_per_class):
                    take = render_take(child_seed(seed, 2, s, c, j), num_cameras=1, num_frames=num_frames, size=size,
                                       action=c, num_classes=classes, segment=(0, num_frames))
                    rng = np.random.default_rng(child_seed(seed, 2, s, c, j, 1))
                    yt = _youtube_id(rng)
                    while yt in seen:
                        yt = _youtube_id(rng)
                    seen.add(yt)
                    start = int(rng.integers(0, 290))
                    rows.append((ACTIONS[c], yt, start, start + 10, split))
                    write_video(tmp / split / ACTIONS[c] / f"{yt}_{start:06d}_{start + 10:06d}.mp4", take["frames"][0])
                    _tick(progress)
            with open(tmp / f"{split}.csv", "w", newline="") as f:
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
                writer.writerows(rows)

    info = {"kind": "kinetics", "seed": seed, "classes": list(ACTIONS[:classes]), "clips_per_class": clips_per_class,
            "splits": list(splits), "num_frames": num_frames, "size": size}
    return _build_dir(Path(root), info, build)


def take_sync_offsets(seed: int, index: int, num_cameras: int) -> dict[str, int]:
    """Camera ``cam<k>``'s file starts this many frames before the common timeline (cam0: 0; take 1 always has one)."""
    rng = np.random.default_rng(child_seed(seed, 3, index, 1))
    offsets = {f"cam{k}": (int(rng.integers(0, 4)) if k else 0) for k in range(num_cameras)}
    if index == 1 and num_cameras > 1 and not any(offsets.values()):
        offsets["cam1"] = 3
    return offsets


def render_synced_take(seed: int, index: int, num_cameras: int, num_classes: int, num_frames: int,
                       size: tuple[int, int], num_distractors: int = 2,
                       segment_fraction: tuple[float, float] = SEGMENT_FRACTION) -> tuple[dict, dict[str, int]]:
    """Take ``index`` of :func:`write_takes` (:func:`~ssl_video.synthetic.render.render_take`'s dict plus ``lead``,
    the frames rendered before the common timeline: its instant ``i`` is rendered frame ``lead + i``) and the
    cameras' sync offsets. Also the ground truth of a written take (its actor's true track, for example)."""
    low, high = segment_fraction
    if not 0 < low <= high <= 1:
        raise ValueError(f"segment_fraction must be 0 < low <= high <= 1, got {segment_fraction}")
    offsets = take_sync_offsets(seed, index, num_cameras)
    lead = max(offsets.values())
    rng = np.random.default_rng(child_seed(seed, 3, index, 2))
    length = int(rng.integers(max(1, round(low * num_frames)), round(high * num_frames) + 1))
    start = int(rng.integers(0, num_frames - length + 1))
    take = render_take(child_seed(seed, 3, index), num_cameras, num_frames + lead, size, action=index % num_classes,
                       num_classes=num_classes, segment=(start + lead, start + length + lead),
                       num_distractors=num_distractors)
    return {**take, "lead": lead}, offsets


def write_takes(root: str | Path, seed: int, num_takes: int = 6, num_cameras: int = 3, num_classes: int = 3,
                num_frames: int = 48, size: tuple[int, int] = (128, 128),
                progress: Callable[[], object] | None = None, num_distractors: int = 2,
                segment_fraction: tuple[float, float] = SEGMENT_FRACTION) -> Path:
    """Multi-view takes ``take-000``…: take ``i`` holds action ``i % num_classes`` once, cameras out of sync;
    ``num_distractors`` other objects drift in every take the whole time. The action's segment spans a share of the
    take drawn uniformly from ``segment_fraction`` (the packer labels its first and last 15 % background too: with
    the default most windows are background; the judo study's clips, cut around one throw, are mostly action).

    Common timeline: ``num_frames`` frames. ``cam<k>.mp4`` has ``num_frames + sync_offsets[cam<k>]`` frames: its own
    frame ``i + offset`` shows common instant ``i`` (so its first ``offset`` frames precede the timeline and a reader
    must drop them to align the views). Segments are in the common timeline, ``end`` exclusive.
    """
    if num_takes < 1 or num_cameras < 1:
        raise ValueError(f"num_takes and num_cameras must be >= 1, got {num_takes}, {num_cameras}")

    def build(tmp: Path) -> None:
        for i in range(num_takes):
            take, offsets = render_synced_take(seed, i, num_cameras, num_classes, num_frames, size, num_distractors,
                                               segment_fraction)
            lead = take["lead"]
            folder = tmp / f"take-{i:03d}"
            for k in range(num_cameras):
                write_video(folder / f"cam{k}.mp4", take["frames"][k, lead - offsets[f"cam{k}"] :])
            start, end = take["segment"]
            segment = {"start": start - lead, "end": end - lead, "label": take["label_name"]}
            annotation = {"fps": FPS, "segments": [segment], "sync_offsets": offsets}
            (folder / "annotation.json").write_text(json.dumps(annotation, indent=1) + "\n")
            _tick(progress)

    info = {"kind": "takes", "seed": seed, "num_takes": num_takes, "num_cameras": num_cameras,
            "classes": list(ACTIONS[:num_classes]), "num_frames": num_frames, "size": size,
            "num_distractors": num_distractors, "segment_fraction": list(segment_fraction)}
    return _build_dir(Path(root), info, build)


_WRITERS = {"davis": write_davis, "kinetics": write_kinetics, "takes": write_takes}


def _count(kind: str, kw: dict) -> int:
    if kind == "davis":
        return kw["num_sequences"]
    if kind == "kinetics":
        return kw["classes"] * kw["clips_per_class"] * 2
    return kw["num_takes"]


def make_all(root: str | Path, seed: int = 0, small: bool = True, what: Sequence[str] = KINDS,
             progress: bool = False, options: dict[str, dict] | None = None) -> dict[str, Path]:
    """Write the chosen data sets under ``root/<kind>`` (small or medium size); returns ``{kind: path}``.
    ``options``: per kind, keyword arguments of its writer over the size's, e.g. ``{"takes": {"num_distractors": 0}}``.
    """
    what = what.split(",") if isinstance(what, str) else list(what)
    unknown = [w for w in what if w not in KINDS]
    if unknown or not what:
        raise ValueError(f"unknown data set {unknown or list(what)}; choose from {', '.join(KINDS)}")
    # per kind, its writer's keyword arguments: the size's, then the options
    kwargs = {k: {**SIZES["small" if small else "medium"][k], **(options or {}).get(k, {})} for k in what}
    for k in what:
        allowed = [n for n in inspect.signature(_WRITERS[k]).parameters if n not in ("root", "seed", "progress")]
        bad = sorted(set(kwargs[k]) - set(allowed))
        if bad:
            raise ValueError(f"unknown option {', '.join(bad)} for the {k} set; choose from {', '.join(allowed)}")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(_count(k, kwargs[k]) for k in what), desc="make_synthetic", unit="item", file=sys.stderr)
    try:
        return {k: _WRITERS[k](Path(root) / k, seed, **kwargs[k], progress=bar and bar.update) for k in what}
    finally:
        if bar is not None:
            bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python tools/make_synthetic.py --out data/synthetic --seed 0 [--what davis,takes] [--size medium]``."""
    from ssl_video.cli import Parser  # one-line errors, exit 2

    parser = Parser(prog="ssl-video-make-synthetic", description="Write synthetic DAVIS / Kinetics / multi-view take "
                    "data sets.", epilog="example: ssl-video-make-synthetic --out data/synthetic --what kinetics,davis")
    parser.add_argument("--out", default="data/synthetic", help="output root (default: data/synthetic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--what", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    args = parser.parse_args(argv)
    try:
        what = [w.strip() for w in args.what.split(",") if w.strip()]
        paths = make_all(args.out, args.seed, small=args.size == "small", what=what, progress=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind}: {path} ({sum(1 for _ in path.rglob('*.mp4'))} mp4)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
