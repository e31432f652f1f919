"""decord decoding from bytes: the right frames, one-line errors, GPU fallback with one warning, real videos."""

from __future__ import annotations

import io
import warnings

import av
import numpy as np
import pytest

from ssl_video.data import decode
from ssl_video.data.decode import active_decoder, decode_frames, video_info


def encode_mp4(frames: np.ndarray, fps: int = 25) -> bytes:
    """``(N, H, W, 3) uint8`` -> H.264 mp4 bytes (PyAV, libx264, every frame a keyframe for exact seeking)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "10", "g": "4"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def ramp_video(n: int = 12, size: int = 48) -> tuple[np.ndarray, bytes]:
    """Frame i is uniformly grey at level 20*i: a decoded frame names its own index."""
    frames = np.stack([np.full((size, size + 16, 3), 20 * i, np.uint8) for i in range(n)])
    return frames, encode_mp4(frames)


def test_info_and_selected_frames_match_the_source():
    frames, data = ramp_video()
    assert video_info(data) == (12, 25.0, 48, 64)
    out = decode_frames(data, [7, 2, 2, 11])
    assert out.shape == (4, 48, 64, 3) and out.dtype == np.uint8
    levels = out.reshape(4, -1).mean(1)
    np.testing.assert_allclose(levels, [140, 40, 40, 220], atol=3)
    assert decode_frames(data).shape[0] == 12
    assert decode_frames(data, []).shape == (0, 48, 64, 3)


def test_bad_input_is_one_line_value_error():
    _, data = ramp_video(4)
    with pytest.raises(ValueError, match=r"out of range 0\.\.3: 0\.\.4"):
        decode_frames(data, [0, 4])
    with pytest.raises(ValueError, match="cannot open video") as err:
        decode_frames(b"not a video at all")
    assert "\n" not in str(err.value) and ".cc:" not in str(err.value)
    with pytest.raises(ValueError, match="cannot open video"):
        decode_frames(data[: len(data) // 3][:100])
    with pytest.raises(ValueError, match="unknown decoder 'cuda'"):
        decode_frames(data, [0], ctx="cuda")


def test_gpu_request_falls_back_to_cpu_with_one_warning(monkeypatch):

    _, data = ramp_video(4)
    monkeypatch.setattr(decode, "_gpu_available", None)
    if _decord_has_cuda():
        pytest.skip("decord here is built with CUDA: the fallback path does not run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = decode_frames(data, [1, 3], ctx="auto")
        second = decode_frames(data, [1, 3], ctx="gpu")
    messages = [str(w.message) for w in caught if "GPU decoding unavailable" in str(w.message)]
    assert len(messages) == 1 and "CUDA not enabled" in messages[0]
    np.testing.assert_array_equal(first, second)
    assert active_decoder("auto") == "cpu"


def _decord_has_cuda() -> bool:
    import decord

    _, data = ramp_video(2)
    try:
        decord.VideoReader(io.BytesIO(data), ctx=decord.gpu(0))
    except decord.DECORDError:
        return False
    return True


def test_real_videos_decode_and_the_corrupt_one_fails_cleanly(shared_videos):
    for name in ("demo.mp4", "flipping_a_pancake.mkv", "h265_video.mp4", "rotated_90.mov", "test.avi"):
        data = (shared_videos / name).read_bytes()
        n, fps, h, w = video_info(data)
        assert n > 0 and fps > 0
        out = decode_frames(data, [0, n - 1])
        assert out.shape == (2, h, w, 3), name
        assert out.std() > 0, f"{name}: blank frames"
    with pytest.raises(ValueError, match="cannot (open video|decode frames)"):
        decode_frames((shared_videos / "corrupted.mp4").read_bytes())
