"""slic_fast's CPU kernel (``_slic.c``, built by setup.py) and whether it is there.

The kernel runs the torch path's algorithm (:func:`ssl_video.superpixels.segment.slic_fast`) one frame at a time in
C: on one CPU core the torch path is bound by per-call overhead, the C loop is not. Where the extension was not built
(no compiler at install time) slic_fast falls back to its torch path on CPU; :func:`cpu_kernel` says which runs and
why, so a benchmark never reports a silent slowdown.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    from ssl_video.superpixels import _slic
    _MISSING = None
except ImportError as err:  # not built: the torch path serves CPU too
    _slic, _MISSING = None, f"{type(err).__name__}: {err}"


def cpu_kernel() -> str:
    """Which code segments uint8 frames on CPU: ``"C kernel"``, or ``"torch (C kernel not built: <why>)"``."""
    if _slic is None:
        return (f"torch (C kernel not built: {_MISSING}; build it with `pip install -e .` or "
                "`python setup.py build_ext --inplace`)")
    return "C kernel"


def available() -> bool:
    return _slic is not None


def slic_cpu(rgb: torch.Tensor, grid: tuple[int, int, float], f: int, compactness: float, iters: int, subsample: int,
             tol: float, connect: bool, min_size_factor: float, start_label: int) -> torch.Tensor:
    """Labels ``(N, H, W)`` long of uint8 frames ``rgb`` ``(N, H, W, 3)`` on CPU: slic_fast's steps with the grid
    ``(rows, cols, step)`` of the full frame and block factor ``f`` (see slic_fast for the other arguments)."""
    from ssl_video.superpixels.segment import _srgb_table, _xyz_matrix  # the torch path's constants, bit for bit

    if _slic is None:
        raise RuntimeError(cpu_kernel())
    rows, cols, full_step = grid
    frames = np.ascontiguousarray(rgb.numpy())
    n, height, width, _ = frames.shape
    h, w = -(-height // f), -(-width // f)
    out = torch.empty(n, height, width, dtype=torch.long)
    lin = np.ascontiguousarray(_srgb_table("cpu").numpy(), dtype=np.float32)
    xyz = np.ascontiguousarray(_xyz_matrix("cpu").numpy(), dtype=np.float32)
    min_size = int(min_size_factor * h * w / (rows * cols))
    _slic.slic(frames, out.numpy(), lin, xyz, n, height, width, rows, cols, f, h, w, full_step / f,
               1.0 / compactness, int(iters), int(subsample), float(tol), int(connect), min_size, int(start_label))
    return out
