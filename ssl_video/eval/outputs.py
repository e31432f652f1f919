"""Where an evaluation writes: a folder derived from what it evaluates, never one another evaluation wrote.

- a training checkpoint ``<run>/checkpoints/step_00001000.pt`` -> ``<run>/eval/<name>/step_1000/`` (beside the run's
  own TensorBoard logs, so ``tensorboard --logdir <run>`` shows each evaluation as its own run);
- ``random`` (the untrained baseline) -> ``<eval.out_dir>/<name>/random/``;
- anything else (an export, a data folder) -> ``<eval.out_dir>/<name>/<file stem>/``.

When that folder already holds files (the same checkpoint evaluated again, e.g. with other settings), the next free
``<folder>-2``, ``-3``, ... is used instead: results are never overwritten.
"""

from __future__ import annotations

import re
from pathlib import Path

from ssl_video.eval.common import RANDOM

_STEP = re.compile(r"step_(\d+)$")


def derived_dir(source: str | Path, name: str, root: str | Path) -> Path:
    """The folder for evaluation ``name`` of ``source`` (checkpoint path, ``random`` or a data folder)."""
    if str(source) == RANDOM:
        return Path(root) / name / RANDOM
    path = Path(source)
    step = _STEP.match(path.stem)
    if step and path.parent.name == "checkpoints":
        return path.parent.parent / "eval" / name / f"step_{int(step.group(1))}"
    return Path(root) / name / (path.stem or "input")


def fresh(folder: Path) -> Path:
    """``folder`` if it is absent or empty, else the first ``folder-N`` (N >= 2) that is."""
    candidate, n = folder, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = folder.with_name(f"{folder.name}-{n}")
    return candidate


def output_dir(source: str | Path, name: str, root: str | Path, explicit: str | Path | None = None) -> Path:
    """``explicit`` (the user's ``--out``) as given, else a fresh :func:`derived_dir`; created."""
    out = Path(explicit) if explicit else fresh(derived_dir(source, name, root))
    out.mkdir(parents=True, exist_ok=True)
    return out
