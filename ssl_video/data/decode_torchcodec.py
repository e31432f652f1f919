"""torchcodec as a decoder (``data.decoder=torchcodec``, and ``gpu`` decoding through its CUDA build): optional.

torchcodec is never required: ``pip install torchcodec`` (its Linux wheels on PyPI are CUDA builds that also decode
on the CPU) plus FFmpeg's shared libraries (Debian: ``apt-get install libavcodec59 libavformat59 libavfilter8
libavdevice59 libswscale6``, whose builds include NVDEC). Where it does not load, the loader says why once and decodes
with PyAV. Frames equal PyAV's and decord's on the packer's H.264 (tested); CPU cost: docs/data-loading.md.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np

_error: str | None = None  # why torchcodec does not load here (None: not tried yet, or it loads)
_loaded = False
_cuda_works: bool | None = None  # None until the first CUDA decode of this process


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def available() -> bool:
    """Whether torchcodec and the FFmpeg shared libraries it needs load in this process (tried once)."""
    global _error, _loaded
    if not _loaded and _error is None:
        try:
            from torchcodec._core import ops
            from torchcodec.decoders import VideoDecoder  # noqa: F401

            # torchcodec >= 0.8 imports without FFmpeg and fails only at the first decoder; its loader says why
            if not getattr(ops, "_FFMPEG_AVAILABLE", True):
                try:
                    ops.load_core_libraries()
                except Exception:  # its text is a 40-line essay; the usual cause in one line
                    raise RuntimeError("libtorchcodec does not load: no FFmpeg 4-9 shared libraries (libavcodec, "
                                       "libavformat, ...) found, or torchcodec built for another torch") from None
            _loaded = True
        except Exception as exc:  # ImportError, or RuntimeError/OSError when no FFmpeg shared libraries load
            _error = _first_line(exc)
    return _loaded


def error() -> str | None:
    """Why torchcodec does not load (after ``available()`` returned False)."""
    return _error


def decode(
    data: bytes, indices: Sequence[int] | None = None, *, seek_mode: str = "exact", device: str = "cpu"
) -> np.ndarray:
    """Frames ``indices`` (all when None) as ``(N, H, W, 3) uint8`` on the host, one FFmpeg thread.

    ``exact`` seeking numbers frames by their sorted timestamps, as the PyAV and decord paths do (``approximate``
    trusts the container index: the same frames on the packer's mp4s, not measurably faster there).
    ``device="cuda:N"`` decodes with NVDEC. Raises a one-line ``ValueError`` for a bad video or index."""
    from torchcodec.decoders import VideoDecoder

    try:
        reader = VideoDecoder(data, seek_mode=seek_mode, num_ffmpeg_threads=1, dimension_order="NHWC", device=device)
        n = reader.metadata.num_frames or 0
    except Exception as exc:  # torchcodec raises RuntimeError/ValueError with FFmpeg's text
        raise ValueError(f"cannot open video: {_first_line(exc)}") from None
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    if not indices:
        return np.empty((0, reader.metadata.height or 0, reader.metadata.width or 0, 3), dtype=np.uint8)
    if min(indices) < 0 or max(indices) >= n:
        raise ValueError(f"frame index out of range 0..{n - 1}: {min(indices)}..{max(indices)}")
    try:
        frames = reader.get_frames_at(indices).data
    except Exception as exc:
        raise ValueError(f"cannot decode frames: {_first_line(exc)}") from None
    return frames.cpu().numpy()


def decode_cuda(data: bytes, indices: Sequence[int] | None = None) -> np.ndarray:
    """``decode`` on ``cuda:LOCAL_RANK``; if the first CUDA decode of the process fails (no NVDEC in this FFmpeg,
    no CUDA runtime), one warning, and this and every later call decode on the CPU instead."""
    global _cuda_works
    if _cuda_works is not False:
        try:
            frames = decode(data, indices, device=f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        except ValueError as exc:
            if _cuda_works:
                raise  # CUDA decoding works in this process: this is a bad video
            _cuda_works = False
            warnings.warn(f"torchcodec CUDA decoding unavailable ({exc}); decoding on the CPU", stacklevel=3)
        else:
            _cuda_works = True
            return frames
    return decode(data, indices)
