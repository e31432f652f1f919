"""What the packer packs: discover inputs (Kinetics tree/CSV, file list, multi-view takes), split takes, frame labels.

:func:`discover` returns ``{split: (items, failed)}`` and the class list; ``failed`` holds inputs known to be bad before
any decoding (a CSV row whose file is missing, a take whose annotation is malformed), each ``{"input", "reason"}``.
A missing input root or an unreadable annotation file (CSV / file list) raises :class:`PackError` with one line.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssl_video.packing.video import VIDEO_EXTENSIONS

BACKGROUND = "background"
SPLIT_NAMES = ("train", "val", "test")


class PackError(ValueError):
    """A problem with the packer's inputs as a whole, described in one line."""


@dataclass
class Item:
    """One input = one sample: a video, or the views of a take."""

    key: str  # the sample's WebDataset key (no dots)
    split: str
    label: str | None
    paths: list[str]
    source: str  # how the manifest names the input (relative to the root when possible)
    cameras: list[str] | None = None  # takes only
    offsets: dict[str, int] = field(default_factory=dict)  # takes: camera -> sync offset (annotation frames)
    annotation: dict = field(default_factory=dict)  # takes: fps, segments


def _key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "sample"


def _unique_keys(items: list[Item]) -> None:
    seen: dict[str, int] = {}
    for item in items:
        base = item.key
        seen[base] = seen.get(base, 0) + 1
        if seen[base] > 1:
            item.key = f"{base}_{seen[base]}"


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _root(pc: dict) -> Path:
    if not pc["input"]:
        raise PackError("pack.input is empty: give the input root (pack.input=PATH)")
    root = Path(pc["input"])
    if not root.is_dir():
        raise PackError(f"input root not found: {root}")
    return root


def _annotation_files(spec: str, pattern: str) -> list[Path]:
    files = []
    for part in [p for p in spec.split(",") if p.strip()]:
        path = Path(part.strip())
        if path.is_dir():
            files += sorted(path.glob(pattern))
        elif path.is_file():
            files.append(path)
        else:
            raise PackError(f"annotation file not found: {path}")
    return files


def _read_kinetics_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
            columns = set(rows[0]) if rows else set()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PackError(f"malformed annotation {path}: {exc}") from None
    missing = {"youtube_id", "time_start", "time_end"} - columns
    if missing:
        raise PackError(f"malformed annotation {path}: missing column(s) {', '.join(sorted(missing))}")
    for line, row in enumerate(rows, start=2):
        try:
            row["time_start"], row["time_end"] = int(float(row["time_start"])), int(float(row["time_end"]))
        except (TypeError, ValueError):
            raise PackError(f"malformed annotation {path} line {line}: time_start/time_end not numbers") from None
        row["split"] = row.get("split") or path.stem
    return rows


def _kinetics(pc: dict) -> dict[str, tuple[list[Item], list[dict]]]:
    root = _root(pc)
    videos = sorted(p for p in root.rglob("*") if _is_video(p))
    splits: dict[str, tuple[list[Item], list[dict]]] = defaultdict(lambda: ([], []))
    if not pc["annotations"]:
        for path in videos:
            rel = path.relative_to(root)
            split = rel.parts[0] if len(rel.parts) >= 3 else "train"
            label = rel.parts[-2] if len(rel.parts) >= 2 else None
            splits[split][0].append(Item(_key(path.stem), split, label, [str(path)], str(rel)))
        return dict(splits)
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for path in videos:
        by_stem[path.stem].append(path)
    for csv_path in _annotation_files(pc["annotations"], "*.csv"):
        for row in _read_kinetics_csv(csv_path):
            stem = f"{row['youtube_id']}_{row['time_start']:06d}_{row['time_end']:06d}"
            split, label = row["split"], row.get("label") or None
            found = by_stem.get(stem, [])
            found = [p for p in found if p.relative_to(root).parts[0] == split] or found
            if not found:
                splits[split][1].append({"input": f"{split}/{label}/{stem}", "reason": f"no video file under {root}"})
                continue
            rel = str(found[0].relative_to(root))
            splits[split][0].append(Item(_key(stem), split, label, [str(found[0])], rel))
    return dict(splits)


def _filelist(pc: dict) -> dict[str, tuple[list[Item], list[dict]]]:
    spec = pc["annotations"] or (pc["input"] if pc["input"] and Path(pc["input"]).is_file() else "")
    if not spec:
        raise PackError("pack.kind=filelist needs the list file: pack.annotations=LIST (csv or txt)")
    files = _annotation_files(spec, "*.csv")
    base = Path(pc["input"]) if pc["input"] and Path(pc["input"]).is_dir() else None
    if pc["input"] and base is None and not Path(pc["input"]).is_file():
        raise PackError(f"input root not found: {pc['input']}")
    splits: dict[str, tuple[list[Item], list[dict]]] = defaultdict(lambda: ([], []))
    for list_path in files:
        try:
            lines = [ln for ln in list_path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        except (OSError, UnicodeDecodeError) as exc:
            raise PackError(f"malformed annotation {list_path}: {exc}") from None
        header = [c.strip() for c in lines[0].split(",")] if lines else []
        if "path" in header:
            rows = [{k: (v or "").strip() for k, v in r.items() if k} for r in csv.DictReader(lines)]
        else:
            rows = [dict(zip(("path", "label", "split"), [c.strip() for c in r])) for r in csv.reader(lines)]
        for row in rows:
            if not row.get("path"):
                raise PackError(f"malformed annotation {list_path}: a row has no path")
            path = Path(row["path"])
            path = path if path.is_absolute() else (base or list_path.parent) / path
            split = row.get("split") or "train"
            splits[split][0].append(Item(_key(path.stem), split, row.get("label") or None, [str(path)], row["path"]))
    return dict(splits)


def _read_take_annotation(path: Path, cameras: list[str]) -> dict:
    """Validated annotation (``{}`` if the file does not exist); ValueError with one line if malformed."""
    if not path.is_file():
        return {}
    try:
        ann = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"malformed annotation {path}: {str(exc).splitlines()[0]}") from None

    def bad(why: str) -> ValueError:
        return ValueError(f"malformed annotation {path}: {why}")

    if not isinstance(ann, dict):
        raise bad("not a JSON object")
    fps = ann.get("fps", None)
    if fps is not None and (not isinstance(fps, (int, float)) or fps <= 0):
        raise bad(f"fps must be a positive number, got {fps!r}")
    segments = ann.get("segments", [])
    if not isinstance(segments, list):
        raise bad("segments must be a list")
    for s in segments:
        if not (isinstance(s, dict) and isinstance(s.get("start"), int) and isinstance(s.get("end"), int)
                and isinstance(s.get("label"), str)):
            raise bad(f"segment {s!r} needs integer start, end and a string label")
        if not 0 <= s["start"] < s["end"]:
            raise bad(f"segment {s!r} needs 0 <= start < end")
        if s["label"] == BACKGROUND:
            raise bad(f"'{BACKGROUND}' is reserved for frames outside segments")
    offsets = ann.get("sync_offsets") or {}
    if not isinstance(offsets, dict) or not all(isinstance(v, int) for v in offsets.values()):
        raise bad("sync_offsets must map camera names to integer frame offsets")
    unknown = sorted(set(offsets) - set(cameras))
    if unknown:
        raise bad(f"sync_offsets names camera(s) without a video: {', '.join(unknown)}")
    return {"fps": fps, "segments": segments, "sync_offsets": offsets}


def _take_label(segments: list[dict]) -> str | None:
    frames: dict[str, int] = defaultdict(int)
    for s in segments:
        frames[s["label"]] += s["end"] - s["start"]
    return min(frames, key=lambda k: (-frames[k], k)) if frames else None


def stratified_split(items: list[Item], ratios: list[float], seed: int) -> list[list[Item]]:
    """Deal items into ``len(ratios)`` splits, per label in proportion to ``ratios``; rounding carried across labels."""
    ratios = np.asarray(ratios, dtype=float) / sum(ratios)
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in sorted(items, key=lambda i: i.key):
        groups[item.label or ""].append(item)
    rng, carry, out = np.random.default_rng(seed), np.zeros(len(ratios)), [[] for _ in ratios]
    for label in sorted(groups):
        members = [groups[label][i] for i in rng.permutation(len(groups[label]))]
        want = len(members) * ratios + carry
        counts = np.maximum(np.floor(want), 0).astype(int)
        while counts.sum() < len(members):
            counts[np.argmax(want - counts)] += 1
        while counts.sum() > len(members):
            counts[np.argmax(np.where(counts > 0, counts - want, -np.inf))] -= 1
        carry = want - counts
        for s, chunk in enumerate(np.split(np.arange(len(members)), np.cumsum(counts)[:-1])):
            out[s] += [members[i] for i in chunk]
    return out


def _takes(pc: dict) -> dict[str, tuple[list[Item], list[dict]]]:
    root = _root(pc)
    ann_dir = Path(pc["annotations"]) if pc["annotations"] else None
    if ann_dir is not None and not ann_dir.is_dir():
        raise PackError(f"pack.annotations for takes must be a folder of <take>.json files, not found: {ann_dir}")
    ratios = list(pc["split_ratios"])
    if not 1 <= len(ratios) <= 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise PackError(f"pack.split_ratios must be 1-3 non-negative numbers with a positive sum, got {ratios}")
    names = SPLIT_NAMES[: len(ratios)]
    items, failed = [], []
    for folder in sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: _natural(d.name)):
        videos = sorted((p for p in folder.iterdir() if _is_video(p)), key=lambda p: _natural(p.stem))
        ann_path = ann_dir / f"{folder.name}.json" if ann_dir else folder / "annotation.json"
        if not videos:
            if ann_path.is_file():
                failed.append({"input": folder.name, "reason": "take folder holds no camera video"})
            continue
        cameras = [p.stem for p in videos]
        try:
            ann = _read_take_annotation(ann_path, cameras)
        except ValueError as exc:
            failed.append({"input": folder.name, "reason": str(exc)})
            continue
        items.append(Item(_key(folder.name), "", _take_label(ann.get("segments", [])), [str(p) for p in videos],
                          folder.name, cameras, ann.get("sync_offsets", {}), ann))
    splits = {name: ([], []) for name, r in zip(names, ratios) if r > 0}
    for name, members in zip(names, stratified_split(items, ratios, pc["seed"])):
        for item in members:
            item.split = name
        if name in splits:
            splits[name][0].extend(members)
    splits[next(iter(splits))][1].extend(failed)  # a take that cannot be read has no split: report it in the first
    return splits


def discover(pc: dict) -> tuple[dict[str, tuple[list[Item], list[dict]]], list[str]]:
    """``({split: (items, failed)}, classes)`` for ``pc["kind"]``; takes' classes start with ``background``."""
    readers = {"kinetics": _kinetics, "filelist": _filelist, "takes": _takes}
    if pc["kind"] not in readers:
        raise PackError(f"unknown pack.kind '{pc['kind']}'; choose from {', '.join(readers)}")
    splits = readers[pc["kind"]](pc)
    if not any(items or failed for items, failed in splits.values()):
        raise PackError(f"no inputs found for pack.kind={pc['kind']} under {pc['input'] or pc['annotations']}")
    for items, _ in splits.values():
        _unique_keys(items)
    labels = sorted({i.label for items, _ in splits.values() for i in items if i.label is not None})
    if pc["kind"] == "takes":
        labels = [BACKGROUND] + sorted({s["label"] for items, _ in splits.values() for i in items
                                        for s in i.annotation.get("segments", [])})
    return splits, labels


def frame_labels(segments: list[dict], start: int, length: int, fps: float, ann_fps: float,
                 background_ratio: float) -> list[str]:
    """Label of output frames ``start .. start+length-1`` (common timeline at ``fps``; segments at ``ann_fps``).

    Inside a segment of ``L`` frames, the first and last ``floor(background_ratio * L + 0.5)`` are background.
    """
    per_frame: dict[int, str] = {}
    for s in segments:
        edge = int(math.floor(background_ratio * (s["end"] - s["start"]) + 0.5))
        for a in range(s["start"] + edge, s["end"] - edge):
            per_frame[a] = s["label"]
    return [per_frame.get(int(math.floor((start + j) * ann_fps / fps + 1e-6)), BACKGROUND) for j in range(length)]
