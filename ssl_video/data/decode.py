"""Decode the frames a clip needs straight from tar bytes (no temporary files); ``data.decoder`` picks the library.

``decode_frames(data, indices, ctx=...)`` decodes only what the requested frames need; the loader resolves
``data.decoder`` once per process (:func:`resolve_decoder`):
- ``auto`` / ``pyav`` (default): the PyAV decoder below, on the CPU.
- ``torchcodec``: torchcodec on the CPU (optional dependency, :mod:`decode_torchcodec`); PyAV where it is missing.
- ``gpu``: NVDEC through torchcodec's CUDA build where a CUDA device and torchcodec load, else decord's CUDA build
  (not on PyPI), else one warning and decord on the CPU.
- ``cpu``: decord on the CPU.
All give the same pixels on the packer's H.264 (tested); CPU cost per clip in docs/data-loading.md.

``pyav``: decord's ``get_batch`` decodes every frame from the keyframe before the first index to the last index
(13-17 frames for a 4-frame clip at stride 4 with 8-frame GOPs); this one decodes each needed GOP from its keyframe
only as far as its last needed frame, skips the non-reference frames (B-frames nothing depends on) that are not wanted
(6-8 frames), converts to RGB with one cached swscale context (a fresh one per frame costs more than the conversion),
and writes each frame straight into the output array (a per-frame array and a stack cost ~15% of an 8-frame clip).
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections.abc import Sequence

import numpy as np

from ssl_video.data import decode_torchcodec

log = logging.getLogger(__name__)

DECODERS = ("auto", "pyav", "torchcodec", "cpu", "gpu")  # data.decoder
RESOLVED = ("pyav", "torchcodec", "torchcodec-cuda", "cpu", "gpu")  # what resolve_decoder returns
_gpu_available: bool | None = None  # probed once per process, on the first GPU request


def _first_line(exc: BaseException) -> str:
    """decord's message without its C++ trace and ``[hh:mm:ss] file.cc:line:`` prefixes."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return re.sub(r"\[[\d:]+\] \S+:\d+: ", "", line).strip() or type(exc).__name__


def _gpu_reader(data: bytes):
    """A reader on ``decord.gpu(LOCAL_RANK)``, or None (with one warning per process) when decord has no CUDA."""
    global _gpu_available
    import decord

    if _gpu_available is False:
        return None
    device = int(os.environ.get("LOCAL_RANK", 0))
    try:
        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.gpu(device), num_threads=1)
    except decord.DECORDError as exc:
        if "CUDA not enabled" not in str(exc) and _gpu_available:
            raise  # GPU decoding works in this process: this is a bad video, not a missing decoder
        _gpu_available = False
        warnings.warn(f"decord GPU decoding unavailable ({_first_line(exc)}); decoding on the CPU", stacklevel=4)
        return None
    if _gpu_available is None:
        log.info("decoding videos with decord on GPU %d", device)
    _gpu_available = True
    return reader


def _cuda_device() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def resolve_decoder(ctx: str = "auto") -> str:
    """The decoder ``data.decoder`` gives in this process, logged: ``pyav`` | ``torchcodec`` | ``torchcodec-cuda`` |
    ``cpu`` (decord) | ``gpu`` (decord's CUDA build).

    ``auto`` is PyAV per GOP on the CPU (the fastest CPU decoder measured, docs/data-loading.md). ``torchcodec``
    without a loadable torchcodec warns once and uses PyAV. ``gpu`` is torchcodec on ``cuda:LOCAL_RANK`` where a CUDA
    device and torchcodec are present (NVDEC; :mod:`decode_torchcodec` falls back to its CPU path on a first
    failure), else decord's CUDA build where that exists, else one warning and decord on the CPU.
    """
    global _gpu_available
    if ctx not in DECODERS:
        raise ValueError(f"unknown decoder '{ctx}'; choose from {', '.join(DECODERS)}")
    if ctx == "auto":
        ctx = "pyav"
    if ctx == "torchcodec" and not decode_torchcodec.available():
        warnings.warn(f"torchcodec unavailable ({decode_torchcodec.error()}); decoding with PyAV", stacklevel=2)
        ctx = "pyav"
    if ctx in ("cpu", "pyav", "torchcodec"):
        log.info("decoding videos on the CPU with %s", {"cpu": "decord", "pyav": "PyAV per GOP"}.get(ctx, ctx))
        return ctx
    if _cuda_device() and decode_torchcodec.available():
        log.info("decoding videos on the GPU with torchcodec (NVDEC) (data.decoder=gpu)")
        return "torchcodec-cuda"
    if _gpu_available is None:
        import decord

        try:
            decord.nd.array(np.zeros(1, np.float32), ctx=decord.gpu(int(os.environ.get("LOCAL_RANK", 0))))
            _gpu_available = True
        except decord.DECORDError as exc:
            _gpu_available = False
            warnings.warn(
                "decord GPU decoding unavailable (this decord build has no CUDA: "
                f"{_first_line(exc).replace('Check failed: allow_missing ', '')}); decoding on the CPU",
                stacklevel=2,
            )
    log.info("decoding videos %s with decord (data.decoder=gpu)", "on the GPU" if _gpu_available else "on the CPU")
    return "gpu" if _gpu_available else "cpu"


def active_decoder(ctx: str = "auto") -> str:
    """Which decoder ``ctx`` resolves to in this process so far: ``pyav``, ``torchcodec``, ``cpu``, or ``gpu``
    (decord's CUDA build, once it has worked)."""
    if ctx not in DECODERS:
        raise ValueError(f"unknown decoder '{ctx}'; choose from {', '.join(DECODERS)}")
    if ctx in ("auto", "pyav") or (ctx == "torchcodec" and not decode_torchcodec.available()):
        return "pyav"
    if ctx == "torchcodec":
        return "torchcodec"
    return "gpu" if _gpu_available else "cpu"


def _reader(data: bytes, ctx: str = "cpu"):
    import decord

    # decord's bundled ffmpeg prints every broken packet to stderr; our ValueError names the problem in one line
    decord.logging.set_level(decord.logging.QUIET)
    try:
        if ctx == "gpu":
            reader = _gpu_reader(data)
            if reader is not None:
                return reader
        return decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
    except Exception as exc:  # decord raises its own error types with C++ traces; keep one line
        raise ValueError(f"cannot open video: {_first_line(exc)}") from None


def video_info(data: bytes) -> tuple[int, float, int, int]:
    """``(num_frames, fps, height, width)`` of an encoded video (decodes its first frame for the size)."""
    reader = _reader(data)
    if len(reader) == 0:
        raise ValueError("cannot open video: no frames")
    height, width = reader[0].shape[:2]
    return len(reader), float(reader.get_avg_fps()), int(height), int(width)


def decode_frames(data: bytes, indices: Sequence[int] | None = None, *, ctx: str = "cpu") -> np.ndarray:
    """Frames ``indices`` (all when None) as ``(N, H, W, 3) uint8``; only those frames are decoded (get_batch).

    Raises ``ValueError`` (one line) for an undecodable video or an index outside ``0..num_frames-1``.
    """
    if ctx not in DECODERS + RESOLVED:
        raise ValueError(f"unknown decoder '{ctx}'; choose from {', '.join(DECODERS)}")
    if ctx == "torchcodec" and decode_torchcodec.available():
        return decode_torchcodec.decode(data, indices)
    if ctx == "torchcodec-cuda":
        return decode_torchcodec.decode_cuda(data, indices)
    if ctx in ("auto", "pyav", "torchcodec"):  # (torchcodec missing: resolve_decoder has said so once)
        try:
            return _decode_pyav(data, indices)
        except _Unsupported:  # not the packer's kind of file: decord, whose frame numbering is the reference
            ctx = "cpu"
    reader = _reader(data, ctx)
    n = len(reader)
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    if not indices:
        height, width = reader[0].shape[:2] if n else (0, 0)
        return np.empty((0, height, width, 3), dtype=np.uint8)
    if min(indices) < 0 or max(indices) >= n:
        raise ValueError(f"frame index out of range 0..{n - 1}: {min(indices)}..{max(indices)}")
    try:
        frames = reader.get_batch(indices)
    except Exception as exc:  # a stream that opens but breaks mid-way
        raise ValueError(f"cannot decode frames: {_first_line(exc)}") from None
    return frames.asnumpy()


class _Unsupported(Exception):
    """A video the PyAV path does not number or orient exactly as decord does (not mp4/mov, or display-rotated)."""


_reformatter: tuple[int, object] | None = None  # (pid, swscale context): one per process, reused across frames
_inherited: list = []  # contexts a forked child inherited: never freed there (see _rgb_into)


def _rgb_into(frame, out: np.ndarray, rows: list[int]) -> None:
    """Convert ``frame`` to RGB and copy it into ``out[rows]`` (no per-frame array, no stacking afterwards)."""
    global _reformatter
    if frame.rotation:
        raise _Unsupported  # decord applies the display matrix; shards are stored upright
    from av.video.reformatter import VideoReformatter

    # per process, single-threaded: freeing a context with a slice-thread pool inherited through fork (DataLoader
    # workers) hung in pthread_cond_destroy; threads=1 has no pool, and an inherited context is kept, never freed
    if _reformatter is None or _reformatter[0] != os.getpid():
        if _reformatter is not None:
            _inherited.append(_reformatter)
        _reformatter = (os.getpid(), VideoReformatter())
    # POINT: no scaling happens, and its yuv420p -> rgb24 output is identical to the default's (tested against decord)
    rgb = _reformatter[1].reformat(frame, format="rgb24", interpolation="POINT", threads=1)
    plane, height, width = rgb.planes[0], rgb.height, rgb.width
    if out.shape[1:] != (height, width, 3):
        raise _Unsupported  # frames not of the stream's declared size: decord's handling is the reference
    pixels = np.frombuffer(plane, np.uint8, count=height * plane.line_size).reshape(height, plane.line_size)
    for row in rows:
        out[row] = pixels[:, : 3 * width].reshape(height, width, 3)


def _decode_pyav(data: bytes, indices: Sequence[int] | None) -> np.ndarray:
    """``decode_frames`` with PyAV, decoding per GOP and skipping unwanted non-reference frames (module docstring)."""
    import av

    try:
        # (naming the format, format="mp4", skips the probe but made the whole decode ~1.5x slower: not done)
        with av.open(io.BytesIO(data)) as container:
            if not container.format.name.startswith("mov"):
                raise _Unsupported  # e.g. AVI timestamps number frames differently from decord
            stream = container.streams.video[0]
            stream.thread_type = "NONE"  # one core per worker: frame threads would only add latency and copies
            codec = stream.codec_context
            packets = [p for p in container.demux(stream) if p.size]  # decode order; no decoding yet
            if any(p.pts is None for p in packets):
                raise ValueError("packets without timestamps")
            order = sorted(p.pts for p in packets)  # frame i is the i-th timestamp, as decord numbers frames
            n = len(order)
            indices = list(range(n)) if indices is None else [int(i) for i in indices]
            out = np.empty((len(indices), codec.height, codec.width, 3) if n else (0, 0, 0, 3), dtype=np.uint8)
            if not indices:
                return out
            if min(indices) < 0 or max(indices) >= n:
                raise IndexError(f"frame index out of range 0..{n - 1}: {min(indices)}..{max(indices)}")
            rows: dict[int, list[int]] = {}  # pts -> the output rows showing that frame (a frame may be asked twice)
            for row, i in enumerate(indices):
                rows.setdefault(order[i], []).append(row)
            done = _decode_gops(codec, packets, rows, out)
            missing = [i for i in indices if order[i] not in done]
            if missing:
                raise ValueError(f"frames {missing[:4]} did not decode")
            return out
    except IndexError as exc:
        raise ValueError(str(exc)) from None
    except (av.FFmpegError, ValueError) as exc:
        opened = "container" in locals()
        raise ValueError(f"cannot {'decode frames' if opened else 'open video'}: {_first_line(exc)}") from None


def _gop_starts(packets: list) -> dict[int, int]:
    """pts -> position (in decode order) of the packet to start decoding from to get that frame.

    The GOP of a frame is the last keyframe before it in decode order; a leading picture (shown before its keyframe,
    open GOPs) may reference the previous GOP, so it starts one keyframe earlier."""
    start, gop, keys = 0, {}, []
    for pos, packet in enumerate(packets):
        if packet.is_keyframe:
            keys.append(pos)
            start = pos
        gop[packet.pts] = start
    previous = dict(zip(keys[1:], keys))
    for pts, pos in gop.items():
        if pts < packets[pos].pts and pos in previous:
            gop[pts] = previous[pos]
    return gop


def _decode_gops(codec, packets: list, rows: dict[int, list[int]], out: np.ndarray) -> set[int]:
    """Decode each needed GOP from its start up to its last wanted frame, skipping unwanted non-reference frames;
    wanted frames go to ``out[rows[pts]]``. Returns the pts decoded."""
    gop, done = _gop_starts(packets), set()
    for first in sorted({gop[pts] for pts in rows}):
        last = max(pts for pts in rows if gop[pts] == first)
        if last in done:
            continue  # decoded on the way through an earlier GOP
        codec.flush_buffers()
        for packet in packets[first:]:
            codec.skip_frame = "DEFAULT" if packet.pts in rows else "NONREF"
            for frame in codec.decode(packet):
                if frame.pts in rows and frame.pts not in done:
                    _rgb_into(frame, out, rows[frame.pts])
                    done.add(frame.pts)
            if last in done:
                break
        else:  # the stream ended first: drain the frames the decoder still holds (B-frame reordering)
            codec.skip_frame = "DEFAULT"
            for frame in codec.decode(None):
                if frame.pts in rows and frame.pts not in done:
                    _rgb_into(frame, out, rows[frame.pts])
                    done.add(frame.pts)
    return done
