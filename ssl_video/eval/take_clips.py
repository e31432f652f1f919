"""The held-out takes as the action evaluations see them: clips, chunk windows and their labels.

A take shard set (``tools/make_shards.py pack.kind=takes``) holds every view of every take with per-frame labels
(``frame_label_idx``; class 0 is ``background``). :func:`load_clips` turns each view into a :class:`Clip` (frames
decoded once, centre-cropped and resized); the online action probe (:mod:`ssl_video.eval.online_action`) trains on
random chunks of them and tests on sliding windows, and cross-camera retrieval (:mod:`ssl_video.eval.retrieval`)
matches the same windows across views.

    clips, classes = load_clips("packs/judo/test", size=224, crop_fraction=CROP_FRACTION)
    starts = window_starts(len(clips[0].labels), chunk_len=8, overlap=resolve_overlap(8, None))
    label = chunk_label(clips[0].labels[starts[0] : starts[0] + 8])
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

STUDY_OVERLAP = {8: 3, 4: 2}  # the judo study's test-window overlap: frames per chunk -> frames shared
CROP_FRACTION = 0.8  # the study's probe crops: 400² out of the centre crop resized to 500²
FLIP_P = 0.4  # the study's probe flip probability


# ------------------------------------------------------------------------------------------------------------------
# Chunks
# ------------------------------------------------------------------------------------------------------------------
def chunk_label(labels: Sequence[int] | np.ndarray) -> int:
    """Majority label of a chunk's frames; ties go to the lower class index (background first)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0 or labels.min() < 0:
        raise ValueError(f"chunk labels must be non-empty and >= 0, got {labels.tolist()}")
    return int(np.bincount(labels).argmax())


def resolve_overlap(chunk_len: int, overlap: int | None) -> int:
    """The study's overlap for 8- and 4-frame chunks unless given; must leave a positive stride."""
    if overlap is None:
        if chunk_len not in STUDY_OVERLAP:
            raise ValueError(f"chunk_len {chunk_len} has no study overlap (8 -> 3, 4 -> 2): set the overlap")
        overlap = STUDY_OVERLAP[chunk_len]
    if not 0 <= overlap < chunk_len:
        raise ValueError(f"overlap must be in 0..chunk_len-1, got {overlap} for chunk_len {chunk_len}")
    return overlap


def window_starts(num_frames: int, chunk_len: int, overlap: int) -> list[int]:
    """Test windows: starts ``0, s, 2s, …`` with ``s = chunk_len - overlap``, each window inside the clip."""
    return list(range(0, num_frames - chunk_len + 1, chunk_len - overlap))


def train_start(num_frames: int, chunk_len: int, rng: np.random.Generator) -> int:
    """One chunk of a clip, at a uniform start."""
    return int(rng.integers(0, num_frames - chunk_len + 1))


# ------------------------------------------------------------------------------------------------------------------
# Take shards
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Clip:
    """One view of one take: ``frames`` (T, 3, S, S) uint8 (resized, centre-cropped) and per-frame ``labels``; the
    probe sees ``crop``² windows of the frames (``crop == S``: the whole frame)."""

    take: str
    view: int
    frames: torch.Tensor
    labels: np.ndarray
    crop: int = 0

    def __post_init__(self) -> None:
        self.crop = self.crop or int(self.frames.shape[-1])

    def window(self, start: int, length: int, top: int | None = None, left: int | None = None,
               flip: bool = False) -> torch.Tensor:
        """Frames ``start .. start+length-1``: the ``crop``² window at ``(top, left)`` (None: centred), flipped."""
        side = self.frames.shape[-1]
        top = (side - self.crop) // 2 if top is None else top
        left = (side - self.crop) // 2 if left is None else left
        x = self.frames[start : start + length, :, top : top + self.crop, left : left + self.crop]
        return x.flip(-1) if flip else x


@dataclass(frozen=True)
class ChunkAug:
    """One training chunk's augmentation: window position and flip."""

    top: int
    left: int
    flip: bool


def draw_aug(clip: Clip, rng: np.random.Generator) -> ChunkAug:
    """The study's probe augmentation for one chunk: a uniform ``crop``² window of the frames, flip with p 0.4."""
    room = clip.frames.shape[-1] - clip.crop
    return ChunkAug(int(rng.integers(0, room + 1)), int(rng.integers(0, room + 1)), bool(rng.random() < FLIP_P))


def read_samples(folder: str | Path) -> tuple[list[dict], list[str]]:
    """Samples ``{key: bytes}`` of a shard set, in manifest order, and the manifest's classes."""
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise ValueError(f"not a shard set: {manifest} not found")
    meta = json.loads(manifest.read_text())
    samples = []
    for shard in meta["shards"]:
        # hand-written: evaluation reads every sample once, in order; the training loader resamples at random
        grouped: dict[str, dict] = {}
        with tarfile.open(folder / shard["name"]) as tar:
            for member in tar:
                if member.isfile():
                    key, _, ext = Path(member.name).name.partition(".")
                    grouped.setdefault(key, {"__key__": key})[ext] = tar.extractfile(member).read()
        samples += grouped.values()
    return samples, list(meta.get("classes", []))


def _resize(frames: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(x.float(), size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bilinear",
                      antialias=True, align_corners=False)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size].round().clamp(0, 255).to(torch.uint8)


def load_clips(folder: str | Path, size: int, crop_fraction: float = 1.0) -> tuple[list[Clip], list[str]]:
    """Every view of every take in a shard set as :class:`Clip` (labels required), and the class names; frames are
    stored at ``round(size / crop_fraction)`` (centre square crop, resized) for ``size``² windows."""
    from ssl_video.data.decode import decode_frames

    samples, classes = read_samples(folder)
    clips = []
    for s in samples:
        meta = json.loads(s["json"])
        if "frame_label_idx" not in meta:
            raise ValueError(f"{folder}: sample {s['__key__']} has no frame_label_idx (pack takes with annotations)")
        labels = np.asarray(meta["frame_label_idx"], dtype=np.int64)
        views = sorted(k for k in s if k.startswith("view") and k.endswith(".mp4") and k.count(".") == 1)
        views = views or (["mp4"] if "mp4" in s else [])
        for v, key in enumerate(views):
            frames = decode_frames(s[key])
            n = min(len(frames), len(labels))
            clips.append(Clip(s["__key__"], v, _resize(frames[:n], round(size / crop_fraction)), labels[:n], size))
    if not clips:
        raise ValueError(f"{folder}: no clips")
    return clips, classes

