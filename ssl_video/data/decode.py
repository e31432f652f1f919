"""Decode the frames a clip needs straight from tar bytes with decord (no temporary files).

``decode_frames(data, indices, ctx="cpu" | "gpu" | "auto")``: only the requested frames are decoded (``get_batch``).
The loader resolves ``data.decoder`` once (:func:`resolve_decoder`): ``auto`` is decord on the GPU where that works,
else the ``pyav`` decoder below (the faster on CPU); ``cpu`` is decord on the CPU.
``gpu`` / ``auto`` decode on ``decord.gpu(LOCAL_RANK)`` where decord was built with CUDA; the PyPI wheels are CPU-only,
so the first GPU attempt fails, one warning says so, and every later call decodes on the CPU.

``pyav``: a CPU decoder that does less work than decord's ``get_batch`` for sparse clips (same pixels, tested equal):
decord decodes every frame from the keyframe before the first index to the last index (13-17 frames for a 4-frame
clip at stride 4 with 8-frame GOPs); this one decodes each needed GOP from its keyframe only as far as its last needed
frame, and skips the non-reference frames (B-frames nothing depends on) that are not wanted (6-8 frames), and converts
to RGB with one cached swscale context (a fresh one per frame costs more than the conversion).
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

DECODERS = ("cpu", "gpu", "auto", "pyav")
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
    """Probe once whether decord can decode on the GPU; return the decoder ``ctx`` gives (``cpu`` | ``gpu`` | ``pyav``).

    Logs which decoder runs. ``auto`` without a CUDA device is PyAV's per-GOP CPU decoder, silently; ``gpu`` (or
    ``auto`` beside a CUDA device) without a CUDA build of decord warns once per process and falls back to the CPU
    (``gpu``: decord; ``auto``: PyAV).
    """
    global _gpu_available
    import decord
    import numpy as np

    if ctx not in DECODERS:
        raise ValueError(f"unknown decoder '{ctx}'; choose from {', '.join(DECODERS)}")
    if ctx in ("cpu", "pyav"):
        log.info("decoding videos on the CPU with %s (data.decoder=%s)", "decord" if ctx == "cpu" else "PyAV", ctx)
        return ctx
    if ctx == "auto" and not _cuda_device():
        log.info("decoding videos on the CPU with PyAV per GOP (data.decoder=auto, no CUDA device)")
        return "pyav"
    if _gpu_available is None:
        device = int(os.environ.get("LOCAL_RANK", 0))
        try:
            decord.nd.array(np.zeros(1, np.float32), ctx=decord.gpu(device))
            _gpu_available = True
        except decord.DECORDError as exc:
            _gpu_available = False
            warnings.warn(
                "decord GPU decoding unavailable (this decord build has no CUDA: "
                f"{_first_line(exc).replace('Check failed: allow_missing ', '')}); decoding on the CPU",
                stacklevel=2,
            )
    if _gpu_available:
        log.info("decoding videos with decord on the GPU (data.decoder=%s)", ctx)
        return "gpu"
    # auto: the faster CPU decoder (bench_loader: 8.4 vs 17.4 ms CPU per 4-frame clip); gpu asked for decord: decord
    decoder = "pyav" if ctx == "auto" else "cpu"
    log.info("decoding videos on the CPU with %s (data.decoder=%s)", "PyAV" if ctx == "auto" else "decord", ctx)
    return decoder


def active_decoder(ctx: str = "auto") -> str:
    """Which decoder ``ctx`` resolves to in this process so far: ``cpu``, ``pyav`` or ``gpu`` (once it has worked)."""
    if ctx not in DECODERS:
        raise ValueError(f"unknown decoder '{ctx}'; choose from {', '.join(DECODERS)}")
    if ctx == "pyav":
        return "pyav"
    if ctx != "cpu" and _gpu_available:
        return "gpu"
    return "pyav" if ctx == "auto" else "cpu"


def _reader(data: bytes, ctx: str = "cpu"):
    import decord

    # decord's bundled ffmpeg prints every broken packet to stderr; our ValueError names the problem in one line
    decord.logging.set_level(decord.logging.QUIET)
    if ctx not in DECODERS:
        raise ValueError(f"unknown decoder '{ctx}'; choose from {', '.join(DECODERS)}")
    try:
        if ctx != "cpu":
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
    if ctx == "pyav":
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
_inherited: list = []  # contexts a forked child inherited: never freed there (see _to_rgb)


def _to_rgb(frame) -> np.ndarray:
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
    return _reformatter[1].reformat(frame, format="rgb24", interpolation="POINT", threads=1).to_ndarray()


def _decode_pyav(data: bytes, indices: Sequence[int] | None) -> np.ndarray:
    """``decode_frames`` with PyAV, decoding per GOP and skipping unwanted non-reference frames (module docstring)."""
    import av

    try:
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
            if not indices:
                height, width = (codec.height, codec.width) if n else (0, 0)
                return np.empty((0, height, width, 3), dtype=np.uint8)
            if min(indices) < 0 or max(indices) >= n:
                raise IndexError(f"frame index out of range 0..{n - 1}: {min(indices)}..{max(indices)}")
            # the GOP of each frame: the last keyframe before it in decode order; a leading picture (shown before its
            # keyframe, open GOPs) may reference the previous GOP, so it starts one keyframe earlier
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
            wanted = {order[i] for i in indices}
            frames: dict[int, np.ndarray] = {}
            for first in sorted({gop[order[i]] for i in indices}):
                last = max(pts for pts in wanted if gop[pts] == first)
                if last in frames:
                    continue  # decoded on the way through an earlier GOP
                codec.flush_buffers()
                for packet in packets[first:]:
                    codec.skip_frame = "DEFAULT" if packet.pts in wanted else "NONREF"
                    for frame in codec.decode(packet):
                        if frame.pts in wanted:
                            frames[frame.pts] = _to_rgb(frame)
                    if last in frames:
                        break
                else:  # the stream ended first: drain the frames the decoder still holds (B-frame reordering)
                    codec.skip_frame = "DEFAULT"
                    for frame in codec.decode(None):
                        if frame.pts in wanted:
                            frames[frame.pts] = _to_rgb(frame)
            missing = [i for i in indices if order[i] not in frames]
            if missing:
                raise ValueError(f"frames {missing[:4]} did not decode")
            return np.stack([frames[order[i]] for i in indices])
    except IndexError as exc:
        raise ValueError(str(exc)) from None
    except (av.FFmpegError, ValueError) as exc:
        opened = "container" in locals()
        raise ValueError(f"cannot {'decode frames' if opened else 'open video'}: {_first_line(exc)}") from None
