"""Checkpoints that are never half-written: temporary file, fsync, rename; the last k kept.

Format (docs/design.md): ``{"model", "optimizer", "scheduler", "step", "rng", "config", "world_size"}``.
Everything is plain tensors / containers so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

_NAME = re.compile(r"step_(\d{8})\.pt$")


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def save_atomic(obj: dict, path: str | Path) -> Path:
    """Write ``obj`` to ``path`` so that a reader (or a kill -9) only ever sees the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a crash
    finally:
        os.close(dir_fd)
    return path


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    folder = checkpoint_dir(out_dir)
    found = [p for p in folder.glob("step_*.pt") if _NAME.search(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(_NAME.search(p.name).group(1)))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def save_checkpoint(state: dict, out_dir: str | Path, step: int, keep_last: int) -> Path:
    path = save_atomic(state, checkpoint_dir(out_dir) / f"step_{step:08d}.pt")
    for old in list_checkpoints(out_dir)[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def rng_state() -> dict:
    state = {
        "python": torch.tensor(_py_state(), dtype=torch.int64),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": torch.tensor(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_state() -> list[int]:
    version, internal, gauss = random.getstate()
    return [version, *internal, -1 if gauss is None else 0]


def set_rng_state(state: dict) -> None:
    values = [int(x) for x in state["python"].tolist()]
    random.setstate((values[0], tuple(values[1:-1]), None))
    np_state = np.random.get_state()
    np.random.set_state((np_state[0], state["numpy"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_backbone_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Backbone weights from a training checkpoint (``backbone.*`` keys of ``model``) or an exported state_dict."""
    obj = load_checkpoint(path)
    if isinstance(obj, dict) and "model" in obj:
        prefix = "backbone."
        state = {k[len(prefix) :]: v for k, v in obj["model"].items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"checkpoint {path} holds no backbone.* weights")
        return state
    return obj
