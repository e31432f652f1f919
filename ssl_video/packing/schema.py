"""The ``pack`` and ``superpixels`` sections: what ``tools/make_shards.py`` writes (the write side's settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ssl_video.schema import choice

PACK_KINDS = ("kinetics", "takes", "filelist")  # ssl_video.packing.inputs.discover's readers


@dataclass
class SuperpixelConfig:
    """Superpixel algorithms computed at pack time: ``{algo: {param: value}}`` (skimage names)."""

    algos: dict[str, Any] = field(
        default_factory=lambda: {"slic": {"n_segments": 64, "compactness": 10.0, "start_label": 0}}
    )
    frame_stride: int = 1


@dataclass
class PackConfig:
    """``tools/make_shards.py``: transcoding, sharding, splits."""

    input: str = ""
    kind: str = choice("kinetics", PACK_KINDS)  # kinetics | takes | filelist
    annotations: str = ""  # Kinetics CSV or a file list
    output: str = "shards/out"
    short_side: int = 256
    fps: float = 25.0
    gop: int = 8  # keyframe every gop frames: a random clip decodes at most gop-1 extra frames
    crf: int = 23
    preset: str = "veryfast"  # x264 speed/size trade-off
    max_frames: int = 300  # per video / take after alignment; 0: no limit
    shard_size: int = 64
    workers: int = 1
    background_ratio: float = 0.15
    split_ratios: list[float] = field(default_factory=lambda: [0.7, 0.2, 0.1])
    seed: int = 0
    strict: bool = False
