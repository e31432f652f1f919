"""Configuration: compose YAML groups, apply ``key=value`` overrides, validate against dataclasses.

``load_config(["method=moco", "backbone=resnet18", "optim.lr=0.03"])`` composes, in increasing priority:

1. ``ssl_video/configs/base.yaml`` (its ``defaults:`` names one file per group),
2. the group files chosen (command line beats the method file's ``defaults:`` beats base's),
3. the method file's ``overrides:`` (dotted keys a method needs, e.g. ``data.num_views: 2``),
4. dotted ``key=value`` overrides from the command line.

The result is validated against :class:`Config`; the ``method`` node against the dataclass the method
registered (``ssl_video.methods.registry``). An unknown key or a wrong type raises :class:`ConfigError` with
one line naming the key (and the closest valid key / the expected type).
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # package data: installed with the wheel
GROUPS = ("method", "backbone", "data", "eval", "launch")


class ConfigError(ValueError):
    """A configuration problem, described in one line."""


# ----------------------------------------------------------------------------------------------------------
# Schema. Each section is owned by one part of the library; ``method`` is validated per method (registry).
# ----------------------------------------------------------------------------------------------------------
@dataclass
class MethodConfig:
    """Fields every method has; methods subclass this (see ``ssl_video.methods``)."""

    name: str = "walk_superpixel"


@dataclass
class BackboneConfig:
    name: str = "resnet18"  # resnet18 | resnet18_s8 | resnet18_gru | x3d_xs
    gru_hidden: int = 512  # resnet18_gru: clip feature size (its out_dim)
    gru_layers: int = 1
    zero_init_residual: bool = False
    x3d_head_dim: int = 2048  # x3d_xs: width of the projected-pooling feature (its out_dim)


@dataclass
class DataConfig:
    name: str = "synthetic"
    root: str = "shards/synthetic/kinetics/train"  # a shard set: a folder with manifest.json and its shards
    sampling: str = "clip"  # clip: T frames at a stride | frames: N independent frames of a video
    clip_len: int = 4
    frame_stride: int = 4
    num_frames: int = 8  # frames mode
    num_views: int = 1
    positive: str = "same_clip"  # same_clip | other_camera (hard positives)
    crop_size: int = 256
    augment: str = "walk"  # walk | judo | none
    gpu_augment: bool = False  # photometric part on the device, whole batches (augment.augment_batch_on_device)
    superpixels: str | None = "slic"  # algorithm whose maps travel with the frames; null: none
    max_superpixels: int = 64
    epoch_length: int = 100  # batches per rank per epoch: equal on every rank by construction
    shuffle_buffer: int = 64
    num_workers: int = 2
    # auto | cpu | gpu | pyav; gpu: decord.gpu(LOCAL_RANK) where built with CUDA (else CPU + one warning);
    # pyav: per-GOP CPU decoding that skips unneeded non-reference frames; auto: gpu where it works, else pyav
    decoder: str = "auto"
    skip_limit: int = 100  # bad samples in a row before the loader stops with an error (a config problem, not data)


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
    kind: str = "kinetics"  # kinetics | takes | filelist
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


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw | lars
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    schedule: str = "cosine"  # cosine | constant | step
    step_milestones: list[int] = field(default_factory=list)
    grad_clip: float | None = None
    lars_eta: float = 0.001  # LARS trust coefficient (SimCLR/BYOL); biases and norm parameters are not adapted


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8  # per rank
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast, on CUDA only
    channels_last: bool = False
    compile: bool = False  # torch.compile the module each step calls (DDP-wrapped when distributed)
    deterministic: bool = False
    out_dir: str = "runs/default"
    log_every: int = 10
    image_every: int = 200
    ckpt_every: int = 500
    keep_last: int = 3
    resume: bool = True


@dataclass
class LaunchConfig:
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    cpus_per_task: int = 2
    mem_gb: int = 16
    timeout_min: int = 60
    partition: str = ""
    max_num_timeout: int = 3
    slurm_additional_parameters: dict[str, Any] = field(default_factory=dict)
    folder: str = "runs/submitit"


@dataclass
class DavisEvalConfig:
    """``python -m ssl_video.eval.davis``: videowalk's label propagation (defaults = the paper's protocol)."""

    split: str = "val"  # <root>/ImageSets/2017/<split>.txt
    resolution: str = "480p"  # frames at full resolution
    stage: str = "layer3"  # ResNet stage whose stride-8 map is the feature
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

    model: str = "gru"  # gru: frozen per-frame ResNet-18 + GRU + linear | x3d: frozen X3D-XS + linear
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
class EvalConfig:
    name: str = "davis"
    checkpoint: str = ""  # training checkpoint, exported state_dict, or "random" (untrained baseline)
    out_dir: str = "runs/eval"
    device: str = "auto"  # auto | cpu | cuda
    params: dict[str, Any] = field(default_factory=dict)  # free-form settings (the superpixel benchmark's)
    davis: DavisEvalConfig = field(default_factory=DavisEvalConfig)
    online_action: OnlineActionEvalConfig = field(default_factory=OnlineActionEvalConfig)
    retrieval: RetrievalEvalConfig = field(default_factory=RetrievalEvalConfig)


@dataclass
class Config:
    method: MethodConfig = field(default_factory=MethodConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    superpixels: SuperpixelConfig = field(default_factory=SuperpixelConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------------------------------------
# Composition
# ----------------------------------------------------------------------------------------------------------
def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml errors are multi-line; keep the first line
        raise ConfigError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
    return node if node is not None else OmegaConf.create({})


def _group_file(group: str, choice: str, config_dir: Path) -> Path:
    path = config_dir / group / f"{choice}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
        hint = difflib.get_close_matches(choice, options, n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(f"unknown {group} '{choice}'{extra}; choose from: {', '.join(options)}")
    return path


def _split_overrides(overrides: list[str]) -> tuple[dict[str, str], list[str]]:
    choices, dotted = {}, []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, value = item.split("=", 1)
        if key in GROUPS:
            choices[key] = value
        else:
            dotted.append(item)
    return choices, dotted


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            full = f"{prefix}{f.name}"
            keys.append(full)
            keys += _all_keys(getattr(node, f.name), full + ".")
    return keys


def _explain(exc: OmegaConfBaseException, schema: Config, value_hint: dict[str, str]) -> ConfigError:
    """Turn an omegaconf error into one line naming the key."""
    key = getattr(exc, "full_key", None) or "?"
    if isinstance(exc, ConfigKeyError) or "Key '" in str(exc) and "not in" in str(exc):
        candidates = _all_keys(schema)
        hint = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        return ConfigError(f"unknown config key '{key}'{extra}")
    if isinstance(exc, ValidationError):
        expected = _expected_type(schema, key)
        value = value_hint.get(key, getattr(exc, "value", "?"))
        return ConfigError(f"config key '{key}' got {value!r}, expected {expected}")
    return ConfigError(f"config key '{key}': {str(exc).splitlines()[0]}")


def _expected_type(schema: Any, key: str) -> str:
    node = schema
    for part in key.split("."):
        fields_ = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields_:
            return "another type"
        annotation = fields_[part].type
        node = getattr(node, part)
    return str(annotation)


def method_schema(name: str) -> type[MethodConfig]:
    """The dataclass registered for method ``name`` (imports the method registry lazily)."""
    from ssl_video.methods import registry

    return registry.config_class(name)


def load_config(overrides: list[str] | None = None, config_dir: str | Path | None = None) -> DictConfig:
    """Compose and validate the configuration; see the module docstring for the order."""
    config_dir = Path(config_dir) if config_dir else CONFIG_DIR
    choices, dotted = _split_overrides(list(overrides or []))

    base = _read_yaml(config_dir / "base.yaml")
    defaults = dict(OmegaConf.to_container(base.pop("defaults", OmegaConf.create({}))))
    defaults.update({k: v for k, v in choices.items() if k == "method"})
    method_file = _read_yaml(_group_file("method", defaults["method"], config_dir))
    method_defaults = OmegaConf.to_container(method_file.pop("defaults", OmegaConf.create({})))
    method_overrides = method_file.pop("overrides", OmegaConf.create({}))
    defaults.update(method_defaults)
    defaults.update(choices)

    composed = OmegaConf.merge(base, {"method": method_file})
    for group in GROUPS:
        if group != "method" and defaults.get(group):
            composed = OmegaConf.merge(composed, {group: _read_yaml(_group_file(group, defaults[group], config_dir))})
    composed = OmegaConf.merge(composed, method_overrides)
    value_hint = {}
    for item in dotted:
        key, value = item.split("=", 1)
        value_hint[key] = value
    composed = OmegaConf.merge(composed, OmegaConf.from_dotlist(dotted))
    return validate(composed, value_hint, choices=defaults)


def validate(
    raw: DictConfig | dict, value_hint: dict[str, str] | None = None, choices: dict | None = None
) -> DictConfig:
    """Merge ``raw`` into the structured schema; raise :class:`ConfigError` naming the first bad key."""
    raw = raw if isinstance(raw, DictConfig) else OmegaConf.create(raw)
    method_name = OmegaConf.select(raw, "method.name") or MethodConfig.name
    try:
        method_cls = method_schema(method_name)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None
    schema = Config(method=method_cls())
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), raw)
    except OmegaConfBaseException as exc:
        raise _explain(exc, schema, value_hint or {}) from None
    if choices:
        cfg_choices = {k: v for k, v in choices.items() if k in GROUPS}
        OmegaConf.set_struct(cfg, False)
        cfg["_choices"] = cfg_choices  # recorded so a saved config says which files it came from
        OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, False)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config (atomically: a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(to_yaml(cfg), encoding="utf-8")
    tmp.replace(path)


def config_from_yaml(text: str) -> DictConfig:
    """Rebuild a validated config from a saved YAML string (checkpoints, job folders)."""
    raw = OmegaConf.create(text)
    choices = raw.pop("_choices", None)
    return validate(raw, choices=OmegaConf.to_container(choices) if choices is not None else None)


def main(argv: list[str] | None = None) -> None:
    """``python -m ssl_video.config method=moco optim.lr=0.1``: print the resolved config."""
    # run as `python -m ssl_video.config`, this file is __main__: use the imported module so the dataclasses are
    # the same classes the method registry subclassed
    from ssl_video import config

    try:
        print(config.to_yaml(config.load_config(sys.argv[1:] if argv is None else argv)))
    except config.ConfigError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
