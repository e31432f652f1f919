"""slic_fast's C kernel against its torch path (the same labels up to float ties, on real and synthetic frames), and
the torch fallback where the kernel was not built."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from ssl_video.superpixels import kernel
from ssl_video.superpixels.segment import segment, slic_fast

built = pytest.mark.skipif(not kernel.available(), reason=kernel.cpu_kernel())


def _real_frames(folder, per_video: int = 3, size: int = 128) -> torch.Tensor:
    """``(N, size, size, 3)`` uint8 frames spread over two real videos, short side ``size``, centre crop."""
    import av

    out = []
    for name in ("demo.mp4", "flipping_a_pancake.mkv"):
        with av.open(str(folder / name)) as container:
            frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(90), container.decode(video=0))]
        for i in np.linspace(0, len(frames) - 1, per_video).round().astype(int):
            x = TF.resize(torch.from_numpy(frames[i]).permute(2, 0, 1), size, antialias=True)  # short side
            out.append(TF.center_crop(x, size).permute(1, 2, 0))
    return torch.stack(out)


def _synthetic_frames(n: int, h: int, w: int) -> torch.Tensor:
    from ssl_video.synthetic.render import render_sequence

    return torch.from_numpy(np.ascontiguousarray(render_sequence(3, n, (h, w), num_objects=3)[0]))


def _assert_same_labels(c: torch.Tensor, t: torch.Tensor) -> None:
    """Per frame: the same segment count and >= 99.5% of pixels with the same label (float ties may move a few)."""
    assert c.dtype == t.dtype == torch.long and c.shape == t.shape
    for a, b in zip(c, t):
        assert int(a.max()) == int(b.max())
        assert (a == b).float().mean() >= 0.995


@built
@pytest.mark.parametrize("n_segments,compactness", [(10, 30.0), (30, 30.0), (64, 10.0)])
def test_c_kernel_gives_the_torch_paths_labels_on_real_frames(shared_videos, n_segments, compactness):
    frames = _real_frames(shared_videos)
    kw = {"n_segments": n_segments, "compactness": compactness, "min_size_factor": 0.25}
    c = slic_fast(frames, **kw, backend="c")
    _assert_same_labels(c, slic_fast(frames, **kw, backend="torch"))
    assert torch.equal(slic_fast(frames, **kw), c)  # auto takes the kernel for uint8 frames on CPU


@built
@pytest.mark.parametrize("kw", [{}, {"enforce_connectivity": False}, {"downsample": 1}, {"subsample": 1, "tol": 0.0},
                                {"start_label": 1, "max_num_iter": 3}, {"n_segments": 7, "compactness": 2.0}])
def test_c_kernel_gives_the_torch_paths_labels_on_synthetic_frames(kw):
    kw = {"n_segments": 30, "compactness": 10.0, **kw}
    for frames in (_synthetic_frames(3, 96, 128), _synthetic_frames(2, 75, 61)):  # odd sizes: partial blocks, cells
        _assert_same_labels(slic_fast(frames, **kw, backend="c"), slic_fast(frames, **kw, backend="torch"))
    channels_first = _synthetic_frames(2, 64, 64).permute(0, 3, 1, 2)  # a strided view
    _assert_same_labels(slic_fast(channels_first, **kw, backend="c"), slic_fast(channels_first, **kw, backend="torch"))


@built
def test_auto_backend_uses_the_kernel_only_where_it_applies(monkeypatch):
    calls = []
    real = kernel.slic_cpu
    monkeypatch.setattr(kernel, "slic_cpu", lambda *a, **k: calls.append(1) or real(*a, **k))
    frames = _synthetic_frames(2, 48, 48)
    slic_fast(frames, n_segments=9)
    assert len(calls) == 1
    slic_fast(frames.float() / 255, n_segments=9)  # float frames, smoothing: the torch path
    slic_fast(frames, n_segments=9, sigma=1.0)
    slic_fast(frames, n_segments=9, backend="torch")
    assert len(calls) == 1
    with pytest.raises(ValueError, match="backend='c' needs uint8"):
        slic_fast(frames, n_segments=9, sigma=1.0, backend="c")
    with pytest.raises(ValueError, match="backend must be"):
        slic_fast(frames, n_segments=9, backend="numba")


@built
def test_kernel_rejects_inconsistent_buffers():
    from ssl_video.superpixels import _slic

    frames = np.zeros((1, 16, 16, 3), np.uint8)
    out = np.empty((1, 16, 15), np.int64)  # one column short
    table, matrix = np.zeros(256, np.float32), np.zeros(9, np.float32)
    with pytest.raises(ValueError, match="inconsistent"):
        _slic.slic(frames, out, table, matrix, 1, 16, 16, 2, 2, 1, 16, 16, 8.0, 0.1, 10, 2, 0.02, 1, 4, 0)


def test_torch_fallback_where_the_kernel_is_missing(monkeypatch):
    frames = _synthetic_frames(2, 48, 64)
    ref = slic_fast(frames, n_segments=12, backend="torch")
    monkeypatch.setattr(kernel, "_slic", None)
    monkeypatch.setattr(kernel, "_MISSING", "ImportError: forced by the test")
    assert kernel.cpu_kernel().startswith("torch (C kernel not built: ImportError: forced by the test")
    assert torch.equal(slic_fast(frames, n_segments=12), ref)  # auto falls back, same result as the torch path
    with pytest.raises(ValueError, match="C kernel not built"):
        slic_fast(frames, n_segments=12, backend="c")


def test_package_imports_and_segments_without_the_extension():
    code = ("import sys; sys.modules['ssl_video.superpixels._slic'] = None\n"  # makes the import fail, as unbuilt
            "import numpy as np\n"
            "from ssl_video.superpixels import kernel\n"
            "from ssl_video.superpixels.segment import segment\n"
            "x = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)\n"
            "out = segment(x, 'slic_fast', n_segments=9)\n"
            "print(out.shape, out.dtype, kernel.available(), kernel.cpu_kernel())\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=os.environ)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("(2, 40, 40) uint16 False torch (C kernel not built: ModuleNotFoundError")


@built
def test_segment_entry_point_gives_the_kernels_labels():
    frames = _synthetic_frames(2, 64, 64)
    out = segment(frames.numpy(), "slic_fast", n_segments=16, compactness=10.0)
    assert out.dtype == np.uint16
    assert np.array_equal(out, slic_fast(frames, n_segments=16, compactness=10.0, backend="c").numpy())
