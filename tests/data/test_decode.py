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
    assert active_decoder("auto") == "pyav" and active_decoder("gpu") == "cpu"  # the faster CPU decoder for auto


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


def gop_video(n: int = 40) -> bytes:
    """H.264 with B-frames and 8-frame GOPs like the packer's shards; every frame differs (moving ramp + noise)."""
    rng = np.random.default_rng(0)
    frames = np.stack([np.roll(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1)), 3 * i, 1) for i in range(n)])
    frames = np.repeat(frames[..., None], 3, -1) // 2 + rng.integers(0, 60, frames.shape + (3,), dtype=np.uint8)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"crf": "23", "x264-params": "keyint=8:min-keyint=8:scenecut=0:bframes=3:b-pyramid=normal"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def test_pyav_decoder_gives_the_frames_of_a_full_sequential_decode():
    """Per-GOP decoding with skipped non-reference frames against decoding every frame in order (the reference)."""
    data = gop_video()
    with av.open(io.BytesIO(data)) as container:  # the file really has B-frames and several GOPs
        kinds = [int(f.pict_type) for f in container.decode(video=0)]  # FFmpeg's AVPictureType: 1 I, 2 P, 3 B
    assert 3 in kinds and kinds.count(1) == 5
    full = decode_frames(data, ctx="cpu")
    assert len({full[i].tobytes() for i in range(40)}) == 40
    for indices in ([0, 4, 8, 12], [12, 16, 20, 24], [39], [7, 2, 2, 11, 39, 0], list(range(40)), [31, 30, 25]):
        np.testing.assert_array_equal(decode_frames(data, indices, ctx="pyav"), full[indices])
    np.testing.assert_array_equal(decode_frames(data, ctx="pyav"), full)
    assert decode_frames(data, [], ctx="pyav").shape == (0, 48, 64, 3)
    assert decode.resolve_decoder("pyav") == "pyav" and active_decoder("pyav") == "pyav"


def test_pyav_decoder_errors_and_fallback(shared_videos):
    data = gop_video(10)
    with pytest.raises(ValueError, match=r"out of range 0\.\.9: 3\.\.10"):
        decode_frames(data, [3, 10], ctx="pyav")
    with pytest.raises(ValueError, match="cannot open video") as err:
        decode_frames(b"not a video at all", ctx="pyav")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="cannot (open video|decode frames)"):
        decode_frames((shared_videos / "corrupted.mp4").read_bytes(), ctx="pyav")
    # AVI (frame numbering from its timestamps) and display-rotated files go to decord: same frames as ctx="cpu"
    for name in ("test.avi", "rotated_90.mov"):
        raw = (shared_videos / name).read_bytes()
        np.testing.assert_array_equal(decode_frames(raw, [0, 2], ctx="pyav"), decode_frames(raw, [0, 2], ctx="cpu"))


def _decode_in_child(data: bytes, queue) -> None:
    queue.put(decode_frames(data, [0, 5], ctx="pyav").sum())


def test_pyav_decoder_works_in_a_forked_worker_after_the_parent_used_it():
    """DataLoader workers are forked after the parent decoded (bench_loader, the trainer's first batches): an inherited
    swscale context deadlocked on first use in the child."""
    import multiprocessing as mp

    data = gop_video(10)
    expected = decode_frames(data, [0, 5], ctx="pyav").sum()  # the parent's context now exists
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_decode_in_child, args=(data, queue))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("decoding with PyAV hung in a forked child")
    assert child.exitcode == 0 and queue.get(timeout=5) == expected


def _needs_torchcodec():
    from ssl_video.data import decode_torchcodec

    if not decode_torchcodec.available():
        pytest.skip(f"torchcodec does not load here: {decode_torchcodec.error()}")


def test_torchcodec_decoder_gives_the_frames_of_the_pyav_and_decord_paths(shared_videos):
    _needs_torchcodec()
    data = gop_video()
    full = decode_frames(data, ctx="cpu")  # decord, every frame in order
    for indices in ([0, 4, 8, 12], [7, 2, 2, 11, 39, 0], list(range(40)), [31, 30, 25]):
        np.testing.assert_array_equal(decode_frames(data, indices, ctx="torchcodec"), full[indices])
    assert decode_frames(data, [], ctx="torchcodec").shape == (0, 48, 64, 3)
    with pytest.raises(ValueError, match=r"out of range 0\.\.39: 3\.\.40"):
        decode_frames(data, [3, 40], ctx="torchcodec")
    for bad in (b"not a video at all", (shared_videos / "corrupted.mp4").read_bytes()):
        with pytest.raises(ValueError, match="cannot (open video|decode frames)") as err:
            decode_frames(bad, ctx="torchcodec")
        assert "\n" not in str(err.value)
    raw = (shared_videos / "demo.mp4").read_bytes()  # a real H.264 file, B-frames, other GOP structure
    np.testing.assert_array_equal(decode_frames(raw, [3, 40, 41, 200], ctx="torchcodec"),
                                  decode_frames(raw, [3, 40, 41, 200], ctx="pyav"))  # fmt: skip
    assert decode.resolve_decoder("torchcodec") == "torchcodec" and active_decoder("torchcodec") == "torchcodec"


def test_missing_torchcodec_falls_back_to_pyav_with_one_warning(monkeypatch):
    from ssl_video.data import decode_torchcodec

    monkeypatch.setattr(decode_torchcodec, "_loaded", False)
    monkeypatch.setattr(decode_torchcodec, "_error", "No module named 'torchcodec'")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert decode.resolve_decoder("torchcodec") == "pyav"
    expected = "torchcodec unavailable (No module named 'torchcodec'); decoding with PyAV"
    assert [str(w.message) for w in caught] == [expected]
    data = gop_video(10)
    got = decode_frames(data, [1, 5], ctx="torchcodec")
    np.testing.assert_array_equal(got, decode_frames(data, [1, 5], ctx="pyav"))
    assert active_decoder("torchcodec") == "pyav" and decode.resolve_decoder("auto") == "pyav"


def test_torchcodec_without_ffmpeg_libraries_is_unavailable_with_one_line(monkeypatch):
    """torchcodec >= 0.8 imports without FFmpeg and fails only at the first decoder: that must count as unavailable,
    or every video would fail instead of falling back to PyAV."""
    pytest.importorskip("torchcodec")
    from torchcodec._core import ops

    from ssl_video.data import decode_torchcodec

    def no_ffmpeg():
        raise RuntimeError("Could not load libtorchcodec. Likely causes:\n 1. FFmpeg is not properly installed")

    monkeypatch.setattr(ops, "_FFMPEG_AVAILABLE", False, raising=False)
    monkeypatch.setattr(ops, "load_core_libraries", no_ffmpeg)
    monkeypatch.setattr(decode_torchcodec, "_loaded", False)
    monkeypatch.setattr(decode_torchcodec, "_error", None)
    assert not decode_torchcodec.available()
    assert "no FFmpeg 4-9 shared libraries" in decode_torchcodec.error() and "\n" not in decode_torchcodec.error()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert decode.resolve_decoder("torchcodec") == "pyav"


def test_torchcodec_cuda_request_falls_back_to_its_cpu_path_once(monkeypatch):
    """Where the first CUDA decode fails (here: no CUDA device at all), one warning, then CPU decoding."""
    _needs_torchcodec()
    import torch

    from ssl_video.data import decode_torchcodec

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the fallback path does not run")
    monkeypatch.setattr(decode_torchcodec, "_cuda_works", None)
    data = gop_video(10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = decode_frames(data, [2, 6], ctx="torchcodec-cuda")
        second = decode_frames(data, [2, 6], ctx="torchcodec-cuda")
    assert len([w for w in caught if "torchcodec CUDA decoding unavailable" in str(w.message)]) == 1
    np.testing.assert_array_equal(first, decode_frames(data, [2, 6], ctx="pyav"))
    np.testing.assert_array_equal(first, second)
