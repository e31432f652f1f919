"""One registry of methods: name -> (Method class, config dataclass). The trainer never branches on names."""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ssl_video.config import MethodConfig
    from ssl_video.methods.base import Method

_METHODS: dict[str, tuple[type[Method], type[MethodConfig]]] = {}
# Modules that register methods when imported; listed so lookups work without importing everything up front.
_MODULES = (
    "ssl_video.methods.moco",
    "ssl_video.methods.simclr",
    "ssl_video.methods.byol",
    "ssl_video.methods.simsiam",
    "ssl_video.methods.walk",
)


def register(name: str, config: type[MethodConfig]):
    """Class decorator: ``@register("moco", MocoConfig)``."""

    def wrap(cls):
        if name in _METHODS and _METHODS[name][0] is not cls:
            raise ValueError(f"method '{name}' is registered twice")
        _METHODS[name] = (cls, config)
        return cls

    return wrap


def _import_all() -> None:
    for module in _MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a method module not written yet must not hide the others
            if exc.name != module:
                raise


def names() -> list[str]:
    _import_all()
    return sorted(_METHODS)


def _lookup(name: str):
    if name not in _METHODS:
        _import_all()
    if name not in _METHODS:
        hint = difflib.get_close_matches(name, list(_METHODS), n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise KeyError(f"unknown method '{name}'{extra}; registered: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def config_class(name: str) -> type[MethodConfig]:
    return _lookup(name)[1]


def method_class(name: str) -> type[Method]:
    return _lookup(name)[0]


def build_method(cfg) -> Method:
    """Instantiate the method named by ``cfg.method.name`` with the whole validated config."""
    return method_class(cfg.method.name)(cfg)
