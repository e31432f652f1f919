"""The one place a device name from a config (``train.device``, ``eval.device``) becomes a ``torch.device``."""

from __future__ import annotations

import torch

from ssl_video.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")  # the choices a config accepts (``cuda:N`` too, outside the trainer)


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda``: GPU ``local_rank`` of this node; ``cuda:N``: GPU N.

    A CUDA device without CUDA raises :class:`ConfigError` (one line) instead of failing at the first tensor.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' requested but CUDA is not available")
        return torch.device(name) if ":" in name else torch.device("cuda", local_rank)
    raise ConfigError(f"unknown device '{name}'; choose from: {', '.join(DEVICES)} (or cuda:N)")
