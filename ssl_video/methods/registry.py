"""The methods, by name: one explicit list (:data:`METHODS`). The trainer never branches on names.

Adding a method (docs/extending.md): write ``ssl_video/methods/<name>.py`` (a :class:`~ssl_video.methods.base.Method`
subclass whose ``config_class`` is its :class:`~ssl_video.methods.base.MethodConfig` subclass), its YAML
``ssl_video/configs/method/<name>.yaml``, and one line in :data:`METHODS` below. Code outside the package (a test, a
notebook) can add one at run time with :func:`register`.
"""

from __future__ import annotations

import difflib

from ssl_video.methods.base import Method, MethodConfig
from ssl_video.methods.byol import BYOL
from ssl_video.methods.moco import MoCo
from ssl_video.methods.simclr import SimCLR
from ssl_video.methods.simsiam import SimSiam
from ssl_video.methods.vicreg import VICReg
from ssl_video.methods.walk import WalkMixed, WalkPatch, WalkSuperpixel

METHODS: dict[str, type[Method]] = {
    "moco": MoCo,
    "simclr": SimCLR,
    "byol": BYOL,
    "simsiam": SimSiam,
    "vicreg": VICReg,
    "walk_patch": WalkPatch,
    "walk_superpixel": WalkSuperpixel,
    "walk_mixed": WalkMixed,
}


def register(name: str, config: type[MethodConfig] | None = None):
    """Class decorator adding a method defined outside this package: ``@register("mine", MineConfig)``."""

    def wrap(cls: type[Method]) -> type[Method]:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method '{name}' is registered twice")
        if config is not None:
            cls.config_class = config
        METHODS[name] = cls
        return cls

    return wrap


def names() -> list[str]:
    return sorted(METHODS)


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        hint = difflib.get_close_matches(name, list(METHODS), n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise KeyError(f"unknown method '{name}'{extra}; registered: {', '.join(names())}")
    return METHODS[name]


def config_class(name: str) -> type[MethodConfig]:
    """The dataclass of method ``name``'s ``method`` section (the schema lookup ``ssl_video.config`` uses)."""
    return method_class(name).config_class


def build_method(cfg) -> Method:
    """Instantiate the method named by ``cfg.method.name`` with the whole validated config.

    With several ranks and ``method.sync_bn`` (two-view methods) every batch norm, momentum copies included, is
    converted to a synchronised one here, once, before DDP wraps the method.
    """
    from ssl_video.device import resolve_device
    from ssl_video.distributed import convert_sync_batchnorm, get_world_size

    method = method_class(cfg.method.name)(cfg)
    if get_world_size() > 1 and getattr(cfg.method, "sync_bn", False):
        convert_sync_batchnorm(method, resolve_device(cfg.train.device).type)
    return method
