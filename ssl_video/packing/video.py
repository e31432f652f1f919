"""Video I/O for packing (PyAV): probe, decode to a fixed frame rate and short side with rotation applied, H.264 encode.

- :func:`probe` reads the container header and the first frame (size, display rotation, rate, audio).
- :func:`iter_frames` streams ``(H, W, 3) uint8`` RGB frames, upright, scaled so the short side is ``short_side``,
  resampled to ``fps`` (output frame ``k`` shows the source frame on screen at ``(k + 0.5) / fps``).
- :func:`count_frames` predicts how many frames :func:`iter_frames` yields, from packet timestamps only (no decoding).
- :func:`declared_frames` is what the container header promises; :func:`is_truncated` compares (a cut-off file).
- :class:`H264Writer` encodes frames into an in-memory mp4: short GOP (random access decodes few frames), no audio,
  byte-identical output for identical input (single-threaded x264, no mb-tree).

Every failure is a :class:`VideoError` with a one-line reason (the packer lists it in the manifest).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from av.video.reformatter import VideoReformatter

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


class VideoError(ValueError):
    """A video that cannot be read or written, described in one line."""


@dataclass
class VideoInfo:
    """What :func:`probe` learns about a file. ``width``/``height`` are the display size (rotation applied)."""

    path: str
    codec: str
    width: int
    height: int
    rotation: int  # degrees counter-clockwise to turn the decoded picture to show it upright (0, 90, 180, 270)
    fps: float
    num_frames: int | None  # container's count, when it has one
    duration: float | None  # seconds
    has_audio: bool


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _open(path: str | Path):
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises many error types; all mean "cannot open"
        raise VideoError(f"cannot open: {_one_line(exc)}") from None
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream")
    return container


def _rate(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _quarter_turns(rotation: float | None) -> int:
    """Display-matrix rotation (FFmpeg convention, counter-clockwise degrees) -> ``np.rot90`` ``k``."""
    if not rotation:
        return 0
    return int(round(rotation / 90.0)) % 4


def probe(path: str | Path) -> VideoInfo:
    """Header facts plus the first frame's display rotation; raises :class:`VideoError` if no frame decodes."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_count = 1
        try:
            first = next(container.decode(stream), None)
        except Exception as exc:
            raise VideoError(f"undecodable: {_one_line(exc)}") from None
        if first is None:
            raise VideoError("no decodable video frames")
        k = _quarter_turns(first.rotation)
        w, h = (first.height, first.width) if k % 2 else (first.width, first.height)
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        return VideoInfo(str(path), stream.codec_context.name, w, h, k * 90, _rate(stream), stream.frames or None,
                         duration, bool(container.streams.audio))
    finally:
        container.close()


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(w, h)`` with the short side ``short_side`` (0: unchanged), aspect kept, both even (yuv420p needs it)."""
    if short_side <= 0:
        return width - width % 2, height - height % 2
    scale = short_side / min(width, height)
    even = lambda x: max(2, int(round(x * scale / 2.0)) * 2)  # noqa: E731
    return even(width), even(height)


def _num_output_frames(first_t: float, last_t: float, src_rate: float, fps: float) -> int:
    """Frames at ``fps`` covering source frames shown from ``first_t`` to ``last_t + 1/src_rate``."""
    step = 1.0 / src_rate if src_rate > 0 else 1.0 / fps
    return int(math.floor((last_t - first_t + step) * fps + 0.5))


def declared_frames(path: str | Path, fps: float) -> int | None:
    """Frames at ``fps`` that the container's header promises (its frame count, else its duration); None if silent.

    A file cut short (a partial download) often keeps its header: decoding then yields fewer frames than this."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        seconds = None
        if stream.frames and _rate(stream) > 0:
            seconds = stream.frames / _rate(stream)
        elif stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1e6
        return int(math.floor(seconds * fps + 0.5)) if seconds and seconds > 0 else None
    finally:
        container.close()


def is_truncated(frames: int, declared: int | None, cap: int = 0) -> bool:
    """Fewer frames than declared (up to ``cap`` when > 0), beyond a tolerance of 2 frames or 2% (containers' durations
    include audio and rounding: whole files measured 1-2 frames under their header)."""
    if declared is None:
        return False
    expected = min(declared, cap) if cap > 0 else declared
    return frames < expected - max(2, math.ceil(0.02 * expected))


def count_frames(path: str | Path, fps: float) -> int:
    """How many frames :func:`iter_frames` would yield at ``fps`` (from packet timestamps; nothing is decoded)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        times = []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size:
                    times.append(float(packet.pts * packet.time_base))
        except Exception as exc:
            raise VideoError(f"cannot read packets: {_one_line(exc)}") from None
        if not times:
            raise VideoError("no video packets")
        return _num_output_frames(min(times), max(times), _rate(stream), fps)
    finally:
        container.close()


# source frames x264 can take as they are (after resizing): 8-bit 4:2:0, limited range, BT.601 or untagged colour (read
# as BT.601 by every decoder, and so by the loader). Others (BT.709-tagged, full range, 10-bit, rotated) go through RGB.
_PASSTHROUGH_COLORSPACES = (2, 5, 6)  # AVCOL_SPC_UNSPECIFIED, BT470BG, SMPTE170M
_PASSTHROUGH_RANGES = (0, 1)  # AVCOL_RANGE_UNSPECIFIED, MPEG (limited)


def _yuv_passthrough(frame, turns: int) -> bool:
    return (not turns and frame.format.name == "yuv420p" and frame.colorspace in _PASSTHROUGH_COLORSPACES
            and frame.color_range in _PASSTHROUGH_RANGES)


def _resampled(path: str | Path, fps: float, short_side: int, start: int, count: int | None,
               size: tuple[int, int] | None, convert: Callable) -> Iterator:
    """``convert(frame, (w, h) coded, quarter turns)`` of the source frame on screen at each output frame ``start ..
    start+count-1``; a source frame shown at several output frames (source rate below ``fps``) is converted once and
    its result yielded again; frames never shown are never converted (frame-rate subsampling before conversion)."""
    # hand-written frame-rate conversion (not FFmpeg's fps filter): the exact frame count must be predictable
    # (count_frames) so that the views of a take can be trimmed to a common length before decoding them.
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_count = 1  # parallelism comes from packing workers
        src_rate = _rate(stream)
        k = 0  # next output frame index
        stop = None if count is None else start + count
        prev, prev_t, first_t, turns, coded, out = None, 0.0, None, 0, None, None
        decoded = 0

        def emit():
            nonlocal out
            if out is None:
                out = convert(prev, coded, turns)
            return out

        frames = container.decode(stream)
        while stop is None or k < stop:
            try:
                frame = next(frames, None)
            except Exception as exc:
                raise VideoError(f"decoding failed after {decoded} frames: {_one_line(exc)}") from None
            if frame is None:
                break
            t = float(frame.time) if frame.time is not None else decoded / (src_rate or fps)
            decoded += 1
            if first_t is None:
                first_t, turns = t, _quarter_turns(frame.rotation)
                if size is None:
                    coded = output_size(frame.width, frame.height, short_side)
                else:  # size is upright; the decoded picture is still sideways when turns is odd
                    coded = (size[1], size[0]) if turns % 2 else tuple(size)
            t -= first_t
            while prev is not None and (k + 0.5) / fps < t and (stop is None or k < stop):
                if k >= start:
                    yield emit()
                k += 1
            prev, prev_t, out = frame, t, None
        if prev is None:
            raise VideoError("no decodable video frames")
        total = _num_output_frames(0.0, prev_t, src_rate, fps)
        while k < total and (stop is None or k < stop):
            if k >= start:
                yield emit()
            k += 1
    finally:
        container.close()


def iter_frames(path: str | Path, fps: float, short_side: int, start: int = 0, count: int | None = None,
                size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Output frames ``start .. start+count-1`` (``count`` None: to the end) as upright RGB ``(H, W, 3) uint8``.

    ``size``: force the upright output ``(width, height)`` instead of scaling to ``short_side`` (views of one take).

    Raises :class:`VideoError` on a decoding error anywhere in the range read, or if no frame decodes.
    """
    # one reformatter for all frames: frame.reformat() builds a new swscale context per call (6x slower, measured);
    # threads=1: swscale's default (0) scales on every core, and the packing workers already use them all
    reformatter = VideoReformatter()

    def rgb(frame, coded: tuple[int, int], turns: int) -> np.ndarray:
        out = reformatter.reformat(frame, width=coded[0], height=coded[1], format="rgb24", threads=1).to_ndarray()
        return np.ascontiguousarray(np.rot90(out, turns)) if turns else out

    return _resampled(path, fps, short_side, start, count, size, rgb)


def iter_video_frames(path: str | Path, fps: float, short_side: int, start: int = 0, count: int | None = None,
                      size: tuple[int, int] | None = None, yuv: bool = False) -> Iterator:
    """:func:`iter_frames` as PyAV ``VideoFrame`` s for :meth:`H264Writer.write_frame` (a repeated frame is the same
    object). ``yuv``: yuv420p frames resized without leaving YUV where the source allows (``_yuv_passthrough``), so
    x264 takes them with no RGB round trip; else (and always when not ``yuv``) rgb24 frames."""
    import av

    reformatter = VideoReformatter()

    def convert(frame, coded: tuple[int, int], turns: int):
        if yuv and _yuv_passthrough(frame, turns):
            return reformatter.reformat(frame, width=coded[0], height=coded[1], format="yuv420p", threads=1)
        rgb = reformatter.reformat(frame, width=coded[0], height=coded[1], format="rgb24", threads=1).to_ndarray()
        # a fresh frame, not swscale's: that one keeps the source's chroma siting, which changes x264's input
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(rgb, turns)), format="rgb24")

    return _resampled(path, fps, short_side, start, count, size, convert)


def read_video(path: str | Path, fps: float, short_side: int, start: int = 0, count: int | None = None,
               size: tuple[int, int] | None = None) -> np.ndarray:
    """All frames of :func:`iter_frames` stacked: ``(T, H, W, 3) uint8``."""
    frames = list(iter_frames(path, fps, short_side, start, count, size))
    if not frames:
        raise VideoError(f"no frames in range start={start} count={count}")
    return np.stack(frames)


class H264Writer:
    """Encode RGB frames into an in-memory H.264 mp4; :meth:`close` returns the bytes."""

    def __init__(self, width: int, height: int, fps: float, gop: int = 8, crf: int = 23, preset: str = "veryfast"):
        import av

        if width % 2 or height % 2:
            raise VideoError(f"H.264 yuv420p needs even width and height, got {width}x{height}")
        self.width, self.height, self.frames = width, height, 0
        self._reformatter = VideoReformatter()
        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, "w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        self._time_base = 1 / rate
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.codec_context.thread_count = 1
        # measured (synthetic.py): x264 output bytes vary between identical runs unless threads=1 and mb-tree off;
        # identical bytes make shards reproducible, so a resumed run verifies against an uninterrupted one.
        self._stream.options = {
            "crf": str(crf), "preset": preset,
            "x264-params": f"threads=1:mbtree=0:keyint={gop}:min-keyint={gop}:scenecut=0",
        }

    def write(self, rgb: np.ndarray) -> None:
        """Encode one ``(H, W, 3) uint8`` RGB frame."""
        import av

        if rgb.shape != (self.height, self.width, 3):
            raise VideoError(f"frame shape {rgb.shape} != {(self.height, self.width, 3)}")
        self.write_frame(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))

    def write_frame(self, frame) -> None:
        """Encode one PyAV ``VideoFrame`` of the writer's size: yuv420p goes to x264 as it is, others are converted."""
        if (frame.width, frame.height) != (self.width, self.height):
            raise VideoError(f"frame size {frame.width}x{frame.height} != {self.width}x{self.height}")
        # convert with a reused context (the encoder's own conversion costs ~12% more; the bytes are identical);
        # a yuv420p frame comes back as it is (swscale no-op)
        frame = self._reformatter.reformat(frame, width=self.width, height=self.height, format="yuv420p", threads=1)
        frame.pts, frame.time_base = self.frames, self._time_base
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> bytes:
        if self.frames == 0:
            self._container.close()
            raise VideoError("no frames to encode")
        self._container.mux(self._stream.encode())
        self._container.close()
        return self._buffer.getvalue()


def encode_h264(frames: np.ndarray, fps: float, gop: int = 8, crf: int = 23, preset: str = "veryfast") -> bytes:
    """``(T, H, W, 3) uint8`` -> mp4 bytes (see :class:`H264Writer`)."""
    writer = H264Writer(frames.shape[2], frames.shape[1], fps, gop, crf, preset)
    for rgb in frames:
        writer.write(rgb)
    return writer.close()


def decode_bytes(data: bytes) -> np.ndarray:
    """Decode an in-memory video to ``(T, H, W, 3) uint8`` RGB (tests, inspection)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
