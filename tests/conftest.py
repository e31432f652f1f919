"""Shared fixtures: the real videos in ../shared/data/videos, markers that skip with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs 2 workers on 2 cores: one thread each, subprocesses too
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_VIDEOS = REPO.parent / "shared" / "data" / "videos"


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    """Folder of small real videos (mkv+audio, avi, HEVC, rotated mov, corrupt mp4); skip when absent."""
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"real test videos not found at {SHARED_VIDEOS} (they live beside the checkout, not in it)")
    return SHARED_VIDEOS


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA: no GPU on this machine (CI never has one)")
    for item in items:
        if item.get_closest_marker("gpu") is not None and not has_cuda:  # not keywords: they hold path parts
            item.add_marker(skip_gpu)
        if item.get_closest_marker("slurm") is not None:  # one test cluster at a time (fixed ports): one xdist worker
            item.add_marker(pytest.mark.xdist_group("slurm"))


# ----------------------------------------------------------------------------------------------------------------
# SHARED TEST FIXTURES (owner: packing). Session-scoped: built once, read-only for tests.
# ----------------------------------------------------------------------------------------------------------------
FIXTURE_PACK = {"short_side": 128, "fps": 25.0, "max_frames": 64}  # native size of the small synthetic videos
FIXTURE_SUPERPIXELS = {"algos": {"slic": {"n_segments": 32, "compactness": 10.0, "start_label": 0}}, "frame_stride": 4}


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """``make_all(root, seed=0, small=True)``: ``root/{davis,kinetics,takes}`` (128x128, 25 fps)."""
    from ssl_video.synthetic.generate import make_all

    root = tmp_path_factory.mktemp("synthetic")
    make_all(root, seed=0, small=True)
    return root


def _pack_fixture(out: Path, **pack) -> Path:
    from ssl_video.config import PackConfig, SuperpixelConfig
    from ssl_video.packing.shards import pack as run_pack

    run_pack(PackConfig(output=str(out), **FIXTURE_PACK, **pack), SuperpixelConfig(**FIXTURE_SUPERPIXELS),
             progress=False)
    return out


@pytest.fixture(scope="session")
def kinetics_shards(synthetic_root, tmp_path_factory) -> Path:
    """Folder with shard sets ``train/`` and ``val/`` (9 clips each, 3 classes, 4 clips per shard): 32 frames of
    128x128 at 25 fps, ``sp.slic.npz`` at frame_index 0, 4, 8, ... (frame stride 4, ~32 segments)."""
    kin = synthetic_root / "kinetics"
    return _pack_fixture(tmp_path_factory.mktemp("kinetics_shards"), kind="kinetics", input=str(kin),
                         annotations=f"{kin / 'train.csv'},{kin / 'val.csv'}", shard_size=4)


@pytest.fixture(scope="session")
def takes_shards(synthetic_root, tmp_path_factory) -> Path:
    """Folder with shard sets ``train/`` (4 takes), ``val/`` (1), ``test/`` (1): 3 synchronized views each
    (``view<k>.mp4``, ``view<k>.sp.slic.npz`` at frame stride 4), per-frame labels, 2 takes per shard."""
    return _pack_fixture(tmp_path_factory.mktemp("takes_shards"), kind="takes", input=str(synthetic_root / "takes"),
                         shard_size=2)
