"""The ``eval`` section: one sub-section per evaluation (``python -m ssl_video.eval.<name>``); defaults: protocols."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ssl_video.device import DEVICES
from ssl_video.schema import choice

RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


@dataclass
class DavisEvalConfig:
    """``python -m ssl_video.eval.davis``: videowalk's label propagation (defaults = the paper's protocol)."""

    split: str = "val"  # <root>/ImageSets/2017/<split>.txt
    resolution: str = "480p"  # frames at full resolution
    stage: str = choice("layer3", RESNET_STAGES)  # ResNet stage whose stride-8 map is the feature
    context: int = 20  # previous frames in the context (plus the first frame with its ground truth)
    radius: float = 12.0  # feature cells; recent context frames only (the first frame is unrestricted)
    topk: int = 10
    temperature: float = 0.05
    bound_th: float = 0.008  # F's boundary tolerance (fraction of the diagonal)
    max_sequences: int = 0  # 0: all
    query_chunk: int = 1024  # target locations per affinity block (memory)
    save_png: bool = True
    vis_sequences: int = 4  # sequences whose overlays go to TensorBoard
    recompute_bn: bool = False  # re-estimate BN statistics on the evaluated frames (transductive, no labels)


@dataclass
class OnlineActionEvalConfig:
    """``python -m ssl_video.eval.online_action``: chunk classification on take shards (the judo study's probe)."""

    model: str = choice("gru", ("gru", "x3d"))  # gru: frozen ResNet-18 per frame + GRU + linear | x3d: X3D-XS + linear
    train_split: str = "train"  # shard sets <shards>/<split>/
    split: str = "test"  # the split reported
    chunk_len: int | None = None  # null: the study's (gru 8, x3d 4); test windows overlap by 3 (8) or 2 (4) frames
    overlap: int | None = None  # null: the study's (3 for 8-frame chunks, 2 for 4-frame chunks)
    crop_size: int | None = None  # null: the study's (gru 224, x3d 182)
    augment: bool = True  # the study's probe training augmentation (random 0.8 window, flip 0.4); false: centre only
    batch_size: int = 16
    eval_batch_size: int = 32
    steps: int | None = None  # null: the model's schedule (gru 560, x3d 600)
    lr: float | None = None  # null: gru 0.05, x3d 1.2
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: list[int] | None = None  # gru: lr / 10 at these steps (null: 210, 420)
    warmup_steps: int | None = None  # x3d: linear warmup then cosine (null: 60)
    gru_hidden: int = 512
    finetune: bool = False  # train the backbone too (the fully supervised baseline)
    seed: int = 0
    log_every: int = 20


@dataclass
class RetrievalEvalConfig:
    """``python -m ssl_video.eval.retrieval``: cross-camera nearest-chunk retrieval."""

    split: str = "test"
    backbone: str | None = None  # null: the checkpoint's; frame backbones: chunk = mean of its frames' features
    chunk_len: int = 8
    overlap: int | None = None  # null: as online action (3 for 8-frame chunks, 2 for 4-frame chunks)
    crop_size: int = 112
    batch_size: int = 32
    tolerance: int = 0  # a retrieved chunk within this many windows of the same instant counts as correct


@dataclass
class SuperpixelBenchmarkConfig:
    """``python -m ssl_video.eval.superpixel_benchmark`` (``eval=superpixels``, its settings under ``eval.params``).

    ``runs``: one row of the table each, ``{row name: {algo: <ssl_video.superpixels.segment.ALGOS name>, <that
    algorithm's parameters (skimage names)>}}``; the parameters differ per algorithm, so a run stays a free mapping.
    """

    split: str = "val"  # <davis>/ImageSets/2017/<split>.txt
    resolution: str = "480p"  # <davis>/JPEGImages/<resolution>/<seq>/*.jpg, Annotations/<resolution>/<seq>/*.png
    bound_th: float = 0.0025  # boundary recall tolerance (fraction of the diagonal)
    f_bound_th: float = 0.008  # F's boundary tolerance (DAVIS's official default)
    frame_stride: int = 1  # every k-th frame of each sequence
    max_sequences: int = 0  # 0: all
    threads: int = 1  # torch threads while timing (1: frames/s per core; skimage is single-threaded)
    device: str = "cpu"  # slic_fast's device (cuda on a GPU machine)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class EvalConfig:
    name: str = "davis"
    checkpoint: str = ""  # training checkpoint, exported state_dict, or "random" (untrained baseline)
    out_dir: str = "runs/eval"
    device: str = choice("auto", DEVICES)  # auto | cpu | cuda
    params: SuperpixelBenchmarkConfig = field(default_factory=SuperpixelBenchmarkConfig)  # eval=superpixels
    davis: DavisEvalConfig = field(default_factory=DavisEvalConfig)
    online_action: OnlineActionEvalConfig = field(default_factory=OnlineActionEvalConfig)
    retrieval: RetrievalEvalConfig = field(default_factory=RetrievalEvalConfig)
