"""Checkpoints that are never half-written: temporary file, fsync, rename; the last k kept.

Format (docs/design.md): ``{"model", "optimizer", "scheduler", "step", "rng", "config", "world_size"}``.
Everything is plain tensors / containers so ``torch.load(weights_only=True)`` reads it.

Failures (docs/failures.md): a write that fails (disk full, I/O error) removes its temporary file and raises
:class:`CheckpointError` naming the last good checkpoint; temporary files a killed writer left behind are swept at
start-up (:func:`sweep_temp_files`); a checkpoint that does not load (truncated by a node that died on a filesystem
without atomic rename) is renamed ``*.corrupt`` with one warning and the next older one is used
(:func:`load_latest_good`).
"""

from __future__ import annotations

import os
import random
import re
import sys
from pathlib import Path

import numpy as np
import torch

from ssl_video.training.errors import CheckpointError

_NAME = re.compile(r"step_(\d{8})\.pt$")
_REQUIRED = ("model", "optimizer", "scheduler", "step", "rng")  # what a resume needs


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def save_atomic(obj: dict, path: str | Path) -> Path:
    """Write ``obj`` to ``path`` so that a reader (or a kill -9) only ever sees the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError("... file write failed")
        tmp.unlink(missing_ok=True)  # a full disk must not stay full of half a checkpoint
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise CheckpointError(f"cannot write {path}: {reason}") from None
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
    """Write ``step_<step>.pt`` atomically, then prune to the last ``keep_last``; on failure the previous ones stay
    and :class:`CheckpointError` names the last good one."""
    try:
        path = save_atomic(state, checkpoint_dir(out_dir) / f"step_{step:08d}.pt")
    except CheckpointError as exc:
        last = latest_checkpoint(out_dir)
        raise CheckpointError(f"{exc}; last good checkpoint: {last if last else 'none'}") from None
    for old in list_checkpoints(out_dir)[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def sweep_temp_files(out_dir: str | Path) -> list[Path]:
    """Remove the temporary files of writers that were killed (``.step_*.pt.tmp.<pid>``, ``config.yaml.tmp``).

    Call it only while holding the run folder's lock: a live writer's temporary file looks the same.
    """
    out_dir = Path(out_dir)
    stale = list(checkpoint_dir(out_dir).glob(".step_*.pt.tmp.*")) + list(out_dir.glob("*.yaml.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def read_resume_state(path: Path, map_location) -> tuple[dict | None, str]:
    """``(state, "")`` for a checkpoint a run can resume from, else ``(None, reason)`` (one line)."""
    try:
        state = load_checkpoint(path, map_location=map_location)
    except Exception as exc:  # torch/zipfile/pickle raise many types for a truncated or garbled file
        return None, (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    missing = [k for k in _REQUIRED if not isinstance(state, dict) or k not in state]
    return (None, f"missing {', '.join(missing)}") if missing else (state, "")


def load_latest_good(out_dir: str | Path, map_location="cpu") -> tuple[Path, dict] | None:
    """The newest checkpoint that loads, as ``(path, state)``; None when the run folder has none.

    Each newer one that does not load is renamed ``<name>.corrupt`` (so a requeued job does not crash on it again)
    with one warning naming it. Raises :class:`CheckpointError` when checkpoints exist but none loads: starting
    again from step 0 silently would throw a long run away.
    """
    corrupt = [Path(p) for p in sorted(checkpoint_dir(out_dir).glob("step_*.pt.corrupt"))]
    for path in reversed(list_checkpoints(out_dir)):
        state, reason = read_resume_state(path, map_location)
        if state is not None:
            return path, state
        bad = path.with_name(path.name + ".corrupt")
        os.replace(path, bad)
        corrupt.append(bad)
        print(f"warning: checkpoint {path} does not load ({reason}); renamed to {bad.name}", file=sys.stderr,
              flush=True)  # fmt: skip
    if corrupt:
        raise CheckpointError(
            f"no loadable checkpoint in {checkpoint_dir(out_dir)} (corrupt: {', '.join(p.name for p in corrupt)}); "
            "move them away to start this run again from step 0, or use another train.out_dir"
        )
    return None


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
