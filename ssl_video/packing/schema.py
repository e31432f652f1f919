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
    # x264 speed/size trade-off: superfast at crf 25 on YUV frames encodes in ~half the CPU of the former veryfast /
    # crf 23, at +0.4-0.7 dB PSNR and +10-15% bytes (docs/packing.md); the former: pack.preset=veryfast pack.crf=23
    crf: int = 25
    preset: str = "superfast"
    # resize in YUV and hand x264 the decoder's yuv420p frames (no RGB round trip; RGB only for superpixels) where
    # the source allows (8-bit 4:2:0, limited range, BT.601/untagged, not rotated); false: every frame via RGB (the
    # packer before 2026-12)
    yuv_passthrough: bool = True
    max_frames: int = 300  # per video / take after alignment; 0: no limit
    shard_size: int = 64
    workers: int = 1
    background_ratio: float = 0.15
    split_ratios: list[float] = field(default_factory=lambda: [0.7, 0.2, 0.1])
    seed: int = 0
    strict: bool = False
