"""The packer's transcoding path: YUV frames straight to x264 where the source allows, the x264 settings that reach
the encoder, and how close the packed frames stay to the source (ssl_video.packing.sample / video)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ssl_video.config import load_config
from ssl_video.packing import video as V
from ssl_video.packing.inputs import Item
from ssl_video.packing.sample import make_sample, plain

FRAMES = 24  # a second of video: a few hundred ms of CPU per pack


def _pc(*overrides: str) -> dict:
    return plain(load_config([f"pack.max_frames={FRAMES}", "pack.short_side=128", *overrides]).pack)


def _mp4(path, *overrides: str) -> bytes:
    item = Item("clip", "train", None, [str(path)], path.name)
    return dict(make_sample(item, _pc(*overrides), {}, []))["clip.mp4"]


def _x264_options(mp4: bytes) -> dict[str, str]:
    """The settings x264 writes into its SEI message (``options: cabac=1 ref=1 ... crf=25.0 ...``)."""
    text = re.search(rb"options: ([ -~]+)", mp4).group(1).decode()
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def test_configured_preset_and_crf_reach_x264(shared_videos):
    default = _x264_options(_mp4(shared_videos / "demo.mp4"))
    old = _x264_options(_mp4(shared_videos / "demo.mp4", "pack.preset=veryfast", "pack.crf=23"))
    # superfast searches motion with the diamond at sub-pixel level 1; veryfast with the hexagon at level 2
    assert (default["me"], default["subme"], default["crf"]) == ("dia", "1", "25.0")
    assert (old["me"], old["subme"], old["crf"]) == ("hex", "2", "23.0")
    for options in (default, old):  # what keeps the bytes reproducible and random access short
        assert (options["threads"], options["mbtree"], options["keyint"]) == ("1", "0", "8")


def test_without_yuv_passthrough_the_bytes_are_the_former_rgb_path(shared_videos):
    path = shared_videos / "demo.mp4"
    pc = _pc("pack.yuv_passthrough=false")
    former = V.encode_h264(V.read_video(path, pc["fps"], pc["short_side"], 0, FRAMES), pc["fps"], pc["gop"],
                           pc["crf"], pc["preset"])  # every frame to RGB, then to yuv420p for x264: the old packer
    assert _mp4(path, "pack.yuv_passthrough=false") == former
    assert _mp4(path) != former  # untagged 8-bit 4:2:0: passed through


def _write_clip(path, frames: np.ndarray, fps: int, **codec_attrs) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for key, value in codec_attrs.items():  # colour tags the decoder reports on every frame
            setattr(s.codec_context, key, value)
        for i, a in enumerate(frames):
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode())


def _gradient(n: int) -> np.ndarray:
    yy, xx = np.mgrid[:96, :128]
    base = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1).astype(np.uint8)
    return np.stack([np.roll(base, 3 * t, axis=1) for t in range(n)])


@pytest.mark.parametrize("source", ["rotated_90.mov", "bt709", "full_range"])
def test_rotated_bt709_or_full_range_sources_still_go_through_rgb(shared_videos, tmp_path, source):
    # rotated: the turn is done on RGB; BT.709 or full range: the packed stream is untagged (read as BT.601, limited)
    path = shared_videos / source
    if source == "bt709":
        _write_clip(path := tmp_path / "bt709.mp4", _gradient(FRAMES), 25, colorspace=1)  # AVCOL_SPC_BT709
    elif source == "full_range":
        _write_clip(path := tmp_path / "full.mp4", _gradient(FRAMES), 25, color_range=2)  # AVCOL_RANGE_JPEG
    assert _mp4(path) == _mp4(path, "pack.yuv_passthrough=false")


def test_untagged_limited_range_sources_are_passed_through(shared_videos, tmp_path):
    _write_clip(tmp_path / "plain.mp4", _gradient(FRAMES), 25)
    for path in (tmp_path / "plain.mp4", shared_videos / "h265_video.mp4"):
        assert _mp4(path) != _mp4(path, "pack.yuv_passthrough=false")


@pytest.mark.parametrize("yuv", ["true", "false"])
def test_packed_frames_stay_close_to_the_source(shared_videos, yuv):
    path = shared_videos / "demo.mp4"
    source = V.read_video(path, 25.0, 128, 0, FRAMES)  # resized straight to RGB, never encoded
    packed = V.decode_bytes(_mp4(path, f"pack.yuv_passthrough={yuv}"))
    assert packed.shape == source.shape
    # measured 31.9 (YUV) / 31.5 (RGB) dB here, 35-36 dB at 256 px over 10 s (docs/packing.md); swapped colour
    # planes measured 14.6 dB, frames shifted by one pixel 21.6 dB
    assert _psnr(packed, source) > 30.0


def test_a_slow_source_frame_is_converted_once_and_repeated(tmp_path):
    src = np.repeat(np.arange(5, dtype=np.uint8)[:, None, None, None] * 40, 64 * 64 * 3).reshape(5, 64, 64, 3)
    _write_clip(tmp_path / "five.mp4", src, 5)  # 5 fps: each source frame is 5 output frames at 25 fps
    frames = list(V.iter_video_frames(tmp_path / "five.mp4", 25.0, 64, yuv=True))
    assert len(frames) == 25 and all(f.format.name == "yuv420p" for f in frames)
    assert len({id(f) for f in frames}) == 5  # one conversion per source frame
    grey = [f.to_ndarray(format="rgb24").mean() for f in frames[::5]]
    np.testing.assert_allclose(grey, [0, 40, 80, 120, 160], atol=4)
