"""One input -> one sample's tar members (runs in a packing worker): transcode, superpixels, metadata json.

:func:`make_sample` raises :class:`VideoError` / :class:`PackError` with one line for a bad input; :func:`work` is the
worker entry that turns any failure into ``("failed", reason)`` so one bad file never stops a multi-hour run.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from collections.abc import Iterable

import numpy as np

from ssl_video.packing.inputs import Item, PackError, frame_labels
from ssl_video.packing.video import (
    H264Writer,
    VideoError,
    count_frames,
    declared_frames,
    is_truncated,
    iter_video_frames,
)

# frames per superpixel call: slic_fast on batches of 8 measured 25-30% less CPU per frame than on a whole 250-frame
# clip (cache); its iterations stop per frame, so the maps are the same whatever the batch (checked equal)
SEGMENT_CHUNK = 8


def plain(node) -> dict:
    """A config section (dataclass, omegaconf node or dict) as a plain dict."""
    if dataclasses.is_dataclass(node):
        return dataclasses.asdict(node)
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(node, resolve=True)
    except ValueError:
        return dict(node)


def sp_plan(sp_cfg: dict) -> dict[str, tuple[int, dict]]:
    """``{algo: (frame_stride, skimage params)}``; a ``frame_stride`` in an algorithm's params overrides the global.

    An algorithm set to null (``superpixels.algos.slic=null``) is not packed: how to pack only ``slic_fast``."""
    plan = {}
    for algo, params in (sp_cfg.get("algos") or {}).items():
        if params is None:
            continue
        params = dict(params)
        stride = int(params.pop("frame_stride", sp_cfg.get("frame_stride", 1)))
        if stride < 1:
            raise PackError(f"superpixels frame_stride for {algo} must be >= 1, got {stride}")
        plan[algo] = (stride, params)
    return plan


def npz_bytes(labels: np.ndarray) -> bytes:
    """``np.savez_compressed(labels=...)`` with a fixed zip timestamp (numpy stamps the current time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("labels.npy", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(labels), allow_pickle=False)
    return buffer.getvalue()


def _encode_view(frames: Iterable, pc: dict, sp: dict[str, tuple[int, dict]]):
    """Encode one view's PyAV frames (:func:`iter_video_frames`); superpixels on the RGB of every ``stride``-th one.

    Returns (mp4 bytes, frame count, (w, h), {algo: (labels, frame_index)})."""
    from av.video.reformatter import VideoReformatter

    from ssl_video.superpixels.segment import segment

    writer, picked, to_rgb = None, {algo: [] for algo in sp}, VideoReformatter()
    for i, frame in enumerate(frames):
        if writer is None:
            writer = H264Writer(frame.width, frame.height, pc["fps"], pc["gop"], pc["crf"], pc["preset"])
        writer.write_frame(frame)
        rgb = None  # only the frames that get superpixels are converted to RGB
        for algo, (stride, _) in sp.items():
            if i % stride == 0:
                if rgb is None:
                    rgb = to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()
                picked[algo].append(rgb)
    if writer is None:
        raise VideoError("no frames decoded")
    maps = {}
    for algo, (stride, params) in sp.items():
        chunks = [segment(np.stack(picked[algo][i:i + SEGMENT_CHUNK]), algo, **params)
                  for i in range(0, len(picked[algo]), SEGMENT_CHUNK)]
        maps[algo] = (np.concatenate(chunks), list(range(0, writer.frames, stride)))
    return writer.close(), writer.frames, (writer.width, writer.height), maps


def _take_range(item: Item, pc: dict) -> tuple[list[int], int, int, list[int]]:
    """Per-view start frames, (timeline start, length) at the output rate and per-view frame counts (packets);
    VideoError if the views cannot be aligned."""
    ann_fps = float(item.annotation.get("fps") or pc["fps"])
    offsets = [int(round(item.offsets.get(cam, 0) * pc["fps"] / ann_fps)) for cam in item.cameras]
    counts = [count_frames(path, pc["fps"]) for path in item.paths]
    lo = max(0, *(-o for o in offsets))
    hi = min(n - o for n, o in zip(counts, offsets))
    if pc["max_frames"] > 0:
        hi = min(hi, lo + pc["max_frames"])
    if hi - lo < 1:
        detail = ", ".join(f"{c}: {n} frames offset {o}" for c, n, o in zip(item.cameras, counts, offsets))
        raise VideoError(f"views cannot be aligned (no common frame): {detail}")
    return [lo + o for o in offsets], lo, hi - lo, counts


def _frames(pc: dict, path: str, start: int, count: int | None, size: tuple[int, int] | None = None):
    return iter_video_frames(path, pc["fps"], pc["short_side"], start, count, size, yuv=pc["yuv_passthrough"])


def _single_view(item: Item, pc: dict, sp: dict, members: list, sp_meta: dict) -> dict:
    path = item.paths[0]
    count = pc["max_frames"] or None
    mp4, n, (w, h), maps = _encode_view(_frames(pc, path, 0, count), pc, sp)
    members.append((f"{item.key}.mp4", mp4))
    for algo, (labels, index) in maps.items():
        members.append((f"{item.key}.sp.{algo}.npz", npz_bytes(labels)))
        sp_meta[algo] = {"params": sp[algo][1], "frame_index": index}
    declared = declared_frames(path, pc["fps"])
    return {"num_frames": n, "width": w, "height": h, "views": 1, "declared_frames": declared,
            "truncated": is_truncated(n, declared, pc["max_frames"])}


def _multi_view(item: Item, pc: dict, sp: dict, members: list, sp_meta: dict, classes: list[str]) -> dict:
    starts, lo, n, counts = _take_range(item, pc)
    size = None
    for v, (path, start) in enumerate(zip(item.paths, starts)):
        frames = _frames(pc, path, start, n, size)
        try:
            mp4, got, size, maps = _encode_view(frames, pc, sp)
        except VideoError as exc:
            raise VideoError(f"{item.cameras[v]}: {exc}") from None
        if got != n:
            raise VideoError(f"{item.cameras[v]}: decoded {got} of the {n} frames its packets promise")
        members.append((f"{item.key}.view{v}.mp4", mp4))
        for algo, (labels, index) in maps.items():
            members.append((f"{item.key}.view{v}.sp.{algo}.npz", npz_bytes(labels)))
            sp_meta[algo] = {"params": sp[algo][1], "frame_index": index}
    declared = [declared_frames(path, pc["fps"]) for path in item.paths]
    meta = {"num_frames": n, "width": size[0], "height": size[1], "views": len(item.paths), "cameras": item.cameras,
            "timeline_start": lo, "view_frames": counts, "declared_frames": declared,
            "truncated": any(is_truncated(c, d) for c, d in zip(counts, declared))}
    if item.annotation.get("segments") is not None:
        ann_fps = float(item.annotation.get("fps") or pc["fps"])
        names = frame_labels(item.annotation["segments"], lo, n, pc["fps"], ann_fps, pc["background_ratio"])
        meta.update(frame_labels=names, frame_label_idx=[classes.index(x) for x in names])
    return meta


def make_sample(item: Item, pc: dict, sp: dict[str, tuple[int, dict]], classes: list[str]) -> list[tuple[str, bytes]]:
    """Transcode + superpixels for one input -> tar members ``[(name, bytes)]``; raises VideoError.

    The json's ``truncated`` is true when the input decoded to fewer frames than its container declares
    (``declared_frames``; per view for takes, beside each view's ``view_frames``): packed anyway, and listed."""
    meta = {"source": item.source, "dataset": pc["kind"], "label": item.label,
            "label_idx": classes.index(item.label) if item.label in classes else -1, "fps": pc["fps"],
            "codec": "h264", "gop": pc["gop"], "split": item.split}
    members, sp_meta = [], {}
    if item.cameras is None:
        meta.update(_single_view(item, pc, sp, members, sp_meta))
    else:
        meta.update(_multi_view(item, pc, sp, members, sp_meta, classes))
    meta["superpixels"] = sp_meta
    members.insert(len(item.paths), (f"{item.key}.json", json.dumps(meta, sort_keys=True).encode()))
    return members


def _truncation(item: Item, members: list[tuple[str, bytes]]) -> dict | None:
    """The manifest's entry for a truncated sample (read back from its json member), else None."""
    meta = json.loads(next(data for name, data in members if name == f"{item.key}.json"))
    if not meta["truncated"]:
        return None
    frames = meta.get("view_frames", meta["num_frames"])
    return {"input": item.source, "key": item.key, "frames": frames, "declared_frames": meta["declared_frames"]}


def work(task: tuple) -> tuple[str, object]:
    """Worker entry: ``("ok", (members, truncation))`` or ``("failed", reason)``; never raises for a bad input."""
    item, pc, sp, classes = task
    try:
        members = make_sample(item, pc, sp, classes)
        return "ok", (members, _truncation(item, members))
    except (VideoError, PackError) as exc:
        return "failed", str(exc)
    except Exception as exc:  # one bad file must not stop a multi-hour run; the reason is kept in the manifest
        return "failed", f"internal error {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"




def check_settings(pc: dict, sp: dict[str, tuple[int, dict]]) -> None:
    """One-line :class:`PackError` for settings no input could be packed with, found before any work starts: the
    ranges, then x264 and each superpixel algorithm tried on a tiny clip (else every input would fail alike)."""
    limits = {"fps": (pc["fps"], 0, False), "short_side": (pc["short_side"], 0, True), "gop": (pc["gop"], 1, True),
              "max_frames": (pc["max_frames"], 0, True), "shard_size": (pc["shard_size"], 1, True),
              "workers": (pc["workers"], 1, True)}  # fmt: skip
    for key, (value, low, inclusive) in limits.items():
        if value < low or (value == low and not inclusive):
            raise PackError(f"pack.{key} must be {'>=' if inclusive else '>'} {low}, got {value}")
    if not 0 <= pc["background_ratio"] < 0.5:
        raise PackError(f"pack.background_ratio must be in [0, 0.5), got {pc['background_ratio']}")
    tiny = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    try:
        writer = H264Writer(32, 32, pc["fps"], pc["gop"], pc["crf"], pc["preset"])
        for rgb in tiny:
            writer.write(rgb)
        writer.close()
    except Exception as exc:
        raise PackError(f"x264 rejects pack.preset={pc['preset']} / pack.crf={pc['crf']}: {_first_line(exc)}") from None
    from ssl_video.superpixels.segment import segment

    for algo, (_, params) in sp.items():
        try:
            segment(tiny, algo, **params)
        except Exception as exc:
            raise PackError(f"superpixels.algos.{algo}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
