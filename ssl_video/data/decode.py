"""Decode the frames a clip needs straight from tar bytes with decord (no temporary files)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np


def _reader(data: bytes):
    import decord

    try:
        return decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
    except Exception as exc:  # decord raises its own error types; keep one line
        raise ValueError(f"cannot open video: {str(exc).splitlines()[0]}") from None


def video_info(data: bytes) -> tuple[int, float, int, int]:
    """``(num_frames, fps, height, width)`` of an encoded video."""
    reader = _reader(data)
    height, width = reader[0].shape[:2]
    return len(reader), float(reader.get_avg_fps()), int(height), int(width)


def decode_frames(data: bytes, indices: Sequence[int] | None = None) -> np.ndarray:
    """Frames ``indices`` (all when None) as ``(N, H, W, 3) uint8``; only those frames are decoded (get_batch)."""
    reader = _reader(data)
    indices = list(range(len(reader))) if indices is None else [int(i) for i in indices]
    if indices and (min(indices) < 0 or max(indices) >= len(reader)):
        raise ValueError(f"frame index out of range 0..{len(reader) - 1}: {min(indices)}..{max(indices)}")
    return reader.get_batch(indices).asnumpy()
