"""The ``data`` section: which shard set, how samples are cut, augmented and decoded (the read side's settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssl_video.data.augment import PRESETS
from ssl_video.data.decode import DECODERS
from ssl_video.data.sampling import POSITIVES, SAMPLINGS
from ssl_video.schema import choice


@dataclass
class DataConfig:
    name: str = "synthetic"
    root: str = "shards/synthetic/kinetics/train"  # a shard set: a folder with manifest.json and its shards
    allow_pipe: bool = False  # let data.root be a URL / pipe: command (webdataset runs those through a shell)
    sampling: str = choice("clip", SAMPLINGS)  # clip: T frames at a stride | frames: N independent frames of a video
    clip_len: int = 4
    frame_stride: int = 4
    num_frames: int = 8  # frames mode
    num_views: int = 1
    positive: str = choice("same_clip", POSITIVES)  # same_clip | other_camera (hard positives)
    crop_size: int = 256
    augment: str = choice("walk", tuple(PRESETS))  # walk | judo | none
    gpu_augment: bool = False  # photometric part on the device, whole batches (augment.augment_batch_on_device)
    superpixels: Any = "slic"  # algorithm whose maps travel with the frames, or a list: one drawn per clip; null: none
    per_frame_crop: bool = False  # an own crop (videowalk's RandomResizedCrop) + draw per frame: docs/data-loading.md
    max_superpixels: int = 64
    epoch_length: int = 100  # batches per rank per epoch: equal on every rank by construction
    shuffle_buffer: int = 64
    num_workers: int = 2
    # auto (= pyav: PyAV per GOP, CPU) | torchcodec (CPU, optional) | gpu (NVDEC via torchcodec, else decord's CUDA
    # build, else CPU + one warning) | cpu (decord); docs/data-loading.md
    decoder: str = choice("auto", DECODERS)
    skip_limit: int = 100  # bad samples in a row before the loader stops with an error (a config problem, not data)
