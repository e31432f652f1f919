"""Configuration: compose YAML groups, apply ``key=value`` overrides, validate against the parts' dataclasses.

``load_config(["method=moco", "backbone=resnet18", "optim.lr=0.03"])`` composes, in increasing priority:

1. ``ssl_video/configs/base.yaml`` (its ``defaults:`` names one file per group),
2. the group files chosen (command line beats the method file's ``defaults:`` beats base's),
3. the method file's ``overrides:`` (dotted keys a method needs, e.g. ``data.num_views: 2``),
4. dotted ``key=value`` overrides from the command line.

The result is validated against :class:`Config`, which assembles the sections each part owns beside its code:
``method`` (the dataclass of the chosen method, found through a schema lookup: by default
``ssl_video.methods.registry.config_class``), ``backbone`` (``ssl_video/models/backbones.py``), ``data``
(``ssl_video/data/schema.py``), ``superpixels`` and ``pack`` (``ssl_video/packing/schema.py``), ``optim``
(``ssl_video/optim.py``), ``eval`` (``ssl_video/eval/schema.py``); ``train`` and ``launch`` are defined here. An
unknown key, a wrong type or a value outside a field's choices raises :class:`ConfigError` with one line naming the
key (and the closest valid key / the expected type / the choices). No part imports this module: the dependency runs
one way, config -> parts.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from ssl_video.data.schema import DataConfig
from ssl_video.device import DEVICES
from ssl_video.errors import ConfigError
from ssl_video.eval.schema import (
    DavisEvalConfig,
    EvalConfig,
    OnlineActionEvalConfig,
    RetrievalEvalConfig,
    SuperpixelBenchmarkConfig,
)
from ssl_video.methods.base import MethodConfig
from ssl_video.models.backbones import BackboneConfig
from ssl_video.optim import OptimConfig
from ssl_video.packing.schema import PackConfig, SuperpixelConfig
from ssl_video.schema import check_choices, choice

__all__ = [  # the parts' schemas are re-exported: ``from ssl_video.config import DataConfig`` keeps working
    "BackboneConfig", "Config", "ConfigError", "DataConfig", "DavisEvalConfig", "EvalConfig", "LaunchConfig",
    "MethodConfig", "OnlineActionEvalConfig", "OptimConfig", "PackConfig", "RetrievalEvalConfig",
    "SuperpixelBenchmarkConfig", "SuperpixelConfig", "TrainConfig", "config_from_yaml", "load_config",
    "save_config", "to_yaml", "validate",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # package data: installed with the wheel
CONFIG_PATH_ENV = "SSL_VIDEO_CONFIG_PATH"  # user config folders searched before CONFIG_DIR (os.pathsep-separated)
GROUPS = ("method", "backbone", "data", "eval", "launch")


# ----------------------------------------------------------------------------------------------------------
# Schema: the sections the parts own are imported above; the trainer's and the launcher's are here.
# ----------------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8  # per rank
    seed: int = 0
    device: str = choice("auto", DEVICES)  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast, on CUDA only
    channels_last: bool = False
    compile: bool = False  # torch.compile the module each step calls (DDP-wrapped when distributed)
    deterministic: bool = False
    out_dir: str = ""  # empty: a fresh runs/<method>/<date-time>; a folder with checkpoints resumes (docs/training.md)
    log_every: int = 10
    image_every: int = 200
    ckpt_every: int = 500
    keep_last: int = 3
    resume: str = "auto"  # auto (true) | force (resume although settings changed) | never (false)


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


def config_search_path(config_dir: str | Path | list | tuple | None = None) -> list[Path]:
    """Folders searched for config files, first match wins: ``config_dir`` (one folder or a list), then the folders of
    ``$SSL_VIDEO_CONFIG_PATH`` (``os.pathsep``-separated), then the packaged ``ssl_video/configs``. A user folder may
    hold any subset of the files (``base.yaml``, ``<group>/<choice>.yaml``): it adds choices or overrides files."""
    given = [] if config_dir is None else [config_dir] if isinstance(config_dir, (str, Path)) else list(config_dir)
    env = [p for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]
    path = []
    for folder in [*given, *env]:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"config folder not found: {folder}")
        if folder.resolve() not in [p.resolve() for p in path]:
            path.append(folder)
    return path + [CONFIG_DIR] if CONFIG_DIR.resolve() not in [p.resolve() for p in path] else path


def group_choices(group: str, search_path: list[Path] | None = None) -> list[str]:
    """Every choice of ``group`` in the search path (user folders add to the packaged ones)."""
    search_path = config_search_path() if search_path is None else search_path
    return sorted({p.stem for folder in search_path for p in (folder / group).glob("*.yaml")})


def _find_file(relative: str, search_path: list[Path]) -> Path:
    """The first ``folder/relative`` that exists (the packaged folder's path when none does, for the error)."""
    for folder in search_path:
        if (folder / relative).is_file():
            return folder / relative
    return search_path[-1] / relative


def _group_file(group: str, choice: str, search_path: list[Path]) -> Path:
    path = _find_file(f"{group}/{choice}.yaml", search_path)
    if not path.is_file():
        options = group_choices(group, search_path)
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


def registered_method_schema(name: str) -> type[MethodConfig]:
    """The default schema lookup: the dataclass of method ``name`` in ``ssl_video.methods.registry.METHODS``."""
    from ssl_video.methods.registry import config_class

    return config_class(name)


def load_config(overrides: list[str] | None = None, config_dir: str | Path | list | None = None) -> DictConfig:
    """Compose and validate the configuration; see the module docstring for the order.

    ``config_dir`` (one folder or a list) and ``$SSL_VIDEO_CONFIG_PATH`` are searched before the packaged configs
    (:func:`config_search_path`)."""
    config_dir = config_search_path(config_dir)
    choices, dotted = _split_overrides(list(overrides or []))

    base = _read_yaml(_find_file("base.yaml", config_dir))
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
    raw: DictConfig | dict,
    value_hint: dict[str, str] | None = None,
    choices: dict | None = None,
    method_schema: Callable[[str], type[MethodConfig]] = registered_method_schema,
) -> DictConfig:
    """Merge ``raw`` into the structured schema; raise :class:`ConfigError` naming the first bad key.

    ``method_schema(name)`` gives the dataclass of the ``method`` section for method ``name`` (a ``KeyError`` naming
    the choices when there is none).
    """
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
    check_choices(cfg, schema)
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
    try:
        print(to_yaml(load_config(sys.argv[1:] if argv is None else argv)))
    except ConfigError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
