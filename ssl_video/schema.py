"""What the parts' config dataclasses share: choice fields, checked when a config is loaded.

A part declares ``decoder: str = choice("auto", DECODERS)``; :func:`check_choices` (called by
:func:`ssl_video.config.validate`) then rejects any other value with one line listing the choices, so a typo fails at
load time instead of deep in a loader worker. ``choices`` may be a zero-argument callable for lists known only at run
time (e.g. the registered backbones).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from ssl_video.errors import ConfigError


def choice(default: Any, choices: Sequence[Any] | Callable[[], Sequence[Any]]) -> Any:
    """A dataclass field whose value must be one of ``choices`` (``None`` passes for an optional field)."""
    return dataclasses.field(default=default, metadata={"choices": choices})


def check_choices(cfg: Any, schema: Any, prefix: str = "") -> None:
    """Raise :class:`ConfigError` for the first field of ``cfg`` outside its choices (walks nested sections)."""
    if not dataclasses.is_dataclass(schema):
        return
    for f in dataclasses.fields(schema):
        value, key = cfg[f.name], f"{prefix}{f.name}"
        allowed = f.metadata.get("choices")
        if allowed is not None and value is not None:
            allowed = tuple(allowed() if callable(allowed) else allowed)
            if value not in allowed:
                raise ConfigError(f"config key '{key}' got {value!r}; choose from: {', '.join(map(str, allowed))}")
        check_choices(value, getattr(schema, f.name), key + ".")
