"""ssl_video.packing.video: decoding (rotation, rate, size), frame-count prediction, deterministic H.264 encoding."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from ssl_video.packing import video as V


def _raw_frames(path) -> tuple[list[np.ndarray], float]:
    """Independent decode: every frame as stored (no rotation, no scaling) and the stream's rate."""
    with av.open(str(path)) as c:
        rate = float(c.streams.video[0].average_rate)
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)], rate


def _write(path, frames: np.ndarray, fps: int) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for i, a in enumerate(frames):
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            c.mux(s.encode(f))
        c.mux(s.encode())


def test_output_size_keeps_aspect_and_even_sides():
    assert V.output_size(340, 256, 256) == (340, 256)
    assert V.output_size(426, 240, 256) == (454, 256)
    assert V.output_size(320, 568, 256) == (256, 454)
    assert V.output_size(129, 97, 0) == (128, 96)


def test_rotated_mov_is_upright_portrait(shared_videos):
    path = shared_videos / "rotated_90.mov"
    info = V.probe(path)
    assert (info.width, info.height, info.rotation) == (320, 568, 270)
    frames = V.read_video(path, 25.0, 256)
    assert frames.shape == (3, 454, 256, 3)
    raw, _ = _raw_frames(path)
    assert raw[0].shape == (320, 568, 3)  # stored sideways

    def diff(k: int) -> float:  # display matrix of -90 degrees: the player turns the picture clockwise
        ref = np.asarray(Image.fromarray(np.rot90(raw[0], k)).resize((256, 454), Image.BILINEAR), dtype=float)
        return float(np.abs(ref - frames[0]).mean())

    assert diff(-1) < 8.0 < diff(1)


@pytest.mark.parametrize("name", ["demo.mp4", "flipping_a_pancake.mkv", "h265_video.mp4", "test.avi"])
def test_real_videos_frame_counts(shared_videos, name):
    raw, rate = _raw_frames(shared_videos / name)
    expected = math.floor(len(raw) * 25.0 / rate + 0.5)  # the same duration at 25 fps
    assert V.count_frames(shared_videos / name, 25.0) == expected
    frames = V.read_video(shared_videos / name, 25.0, 128)
    assert frames.shape[0] == expected and min(frames.shape[1:3]) == 128


def test_corrupt_and_non_videos_raise_one_line(shared_videos, tmp_path):
    with pytest.raises(V.VideoError, match="decoding failed after"):
        V.read_video(shared_videos / "corrupted.mp4", 25.0, 128)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_bytes(b"not a video at all\n" * 50)
    for name, reason in [("empty.mp4", "empty file"), ("text.mp4", "cannot open"), ("missing.mp4", "not found")]:
        with pytest.raises(V.VideoError, match=reason) as err:
            V.read_video(tmp_path / name, 25.0, 128)
        assert "\n" not in str(err.value)


def test_rate_conversion_picks_the_frame_on_screen(tmp_path):
    # 20 frames at 10 fps, frame i uniformly grey 10*i: output frame k at 25 fps shows source floor((k+.5)/25*10)
    src = np.repeat(np.arange(20, dtype=np.uint8)[:, None, None, None] * 10, 64 * 64 * 3).reshape(20, 64, 64, 3)
    _write(tmp_path / "ten.mp4", src, 10)
    assert V.count_frames(tmp_path / "ten.mp4", 25.0) == 50
    out = V.read_video(tmp_path / "ten.mp4", 25.0, 64)
    assert out.shape == (50, 64, 64, 3)
    expected = [10 * math.floor((k + 0.5) / 25 * 10) for k in range(50)]
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), expected, atol=3)
    part = V.read_video(tmp_path / "ten.mp4", 25.0, 64, start=7, count=5)
    np.testing.assert_array_equal(part, out[7:12])


def test_encode_is_deterministic_with_short_gop():
    yy, xx = np.mgrid[:48, :64]
    base = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)  # smooth: x264 keeps it closely
    frames = np.stack([np.roll(base, 2 * t, axis=1) for t in range(20)])
    data = V.encode_h264(frames, 25.0, gop=8)
    assert data == V.encode_h264(frames, 25.0, gop=8)
    with av.open(__import__("io").BytesIO(data)) as c:
        assert not c.streams.audio
        decoded = list(c.decode(video=0))
    assert [i for i, f in enumerate(decoded) if f.key_frame] == [0, 8, 16]
    back = V.decode_bytes(data)
    assert back.shape == frames.shape
    assert np.abs(back.astype(float) - frames).mean() < 6


def test_probe_sees_audio_and_output_drops_it(shared_videos):
    assert V.probe(shared_videos / "flipping_a_pancake.mkv").has_audio
    frames = V.read_video(shared_videos / "flipping_a_pancake.mkv", 25.0, 64, count=4)
    with av.open(__import__("io").BytesIO(V.encode_h264(frames, 25.0))) as c:
        assert len(c.streams.video) == 1 and not c.streams.audio
