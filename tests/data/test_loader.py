"""Loader: equal batch counts per rank, deterministic order, masks follow the frames, bad data skipped and counted."""

from __future__ import annotations

import io
import json
import random
import tarfile

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from ssl_video.config import load_config
from ssl_video.data.augment import build_transform, cap_segments
from ssl_video.data.loader import build_loader, shard_list


def _cfg(root, *extra):
    return load_config(
        ["method=walk_superpixel", f"data.root={root}", "data.crop_size=64", "data.num_workers=0",
         "data.epoch_length=4", "data.shuffle_buffer=4", *extra]
    ).data  # fmt: skip


def _keys(loader):
    return [tuple(b["frame_index"][:, 0].tolist()) + tuple(b["label"].tolist()) for b in loader]


def test_batches_follow_the_schema(kinetics_shards):
    cfg = _cfg(kinetics_shards / "train")
    batches = list(build_loader(cfg, batch_size=3, seed=0))
    assert len(batches) == cfg.epoch_length
    b = batches[0]
    assert b["clips"].shape == (3, 1, 4, 3, 64, 64) and b["clips"].dtype == torch.float32
    assert b["superpixels"].shape == (3, 4, 64, 64)
    # labels are contiguous 0..n-1 per frame and num_superpixels counts them
    for i in range(3):
        for t in range(4):
            values = torch.unique(b["superpixels"][i, t])
            assert torch.equal(values, torch.arange(len(values)))
            assert b["num_superpixels"][i, t] == len(values) <= cfg.max_superpixels


def test_ranks_get_equal_counts_and_different_orders(kinetics_shards):
    cfg = _cfg(kinetics_shards / "train", "data.epoch_length=5")
    rank0 = _keys(build_loader(cfg, batch_size=2, rank=0, world_size=2, seed=1))
    rank1 = _keys(build_loader(cfg, batch_size=2, rank=1, world_size=2, seed=1))
    assert len(rank0) == len(rank1) == 5
    assert rank0 != rank1
    assert rank0 == _keys(build_loader(cfg, batch_size=2, rank=0, world_size=2, seed=1))  # deterministic
    assert rank0 != _keys(build_loader(cfg, batch_size=2, rank=0, world_size=2, seed=1, epoch=1))


def test_two_workers_still_give_epoch_length_batches(kinetics_shards):
    cfg = _cfg(kinetics_shards / "train", "data.epoch_length=5", "data.num_workers=2")
    assert len(list(build_loader(cfg, batch_size=2, seed=0))) == 5


def test_mask_follows_crop_and_flip_exactly():
    """An asymmetric L-shaped label map painted into the frames: after one joint draw, colours still match labels."""
    labels = torch.zeros(2, 64, 64, dtype=torch.int64)
    labels[:, 8:56, 8:20] = 1
    labels[:, 44:56, 8:48] = 2
    palette = torch.tensor([[0, 0, 0], [255, 0, 0], [0, 0, 255]], dtype=torch.uint8)
    frames = palette[labels].permute(0, 3, 1, 2).contiguous()
    geo, _ = build_transform("walk", 48)
    for seed in range(10):
        torch.manual_seed(seed)
        video, mask = geo(tv_tensors.Video(frames), tv_tensors.Mask(labels))
        video, mask = torch.as_tensor(video).float(), torch.as_tensor(mask)
        expected = palette[mask].permute(0, 3, 1, 2).float()
        # interpolation blurs edges: compare away from label boundaries
        interior = torch.ones_like(mask, dtype=torch.bool)
        for shift in (1, 2, -1, -2):
            interior &= (mask == torch.roll(mask, shift, -1)) & (mask == torch.roll(mask, shift, -2))
        diff = (video - expected).abs().amax(1)[interior]
        assert diff.max() < 128, f"seed {seed}: frames and masks disagree"  # a misaligned mask gives 255
        assert torch.equal(mask[0], mask[1])  # one draw for all frames of the chunk


def test_frames_mode_draws_independently(kinetics_shards):
    cfg = _cfg(kinetics_shards / "train", "data.sampling=frames", "data.num_frames=4", "data.superpixels=null")
    from ssl_video.data.augment import augment_clip

    frames = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).expand(4, 3, 8, 8).repeat(1, 1, 8, 8)
    out, _ = augment_clip(frames.contiguous(), None, cfg, random.Random(0), per_frame=True)
    assert not all(torch.allclose(out[0], out[t]) for t in range(1, 4))


def test_cap_segments_merges_smallest_and_stays_contiguous():
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 30, size=(32, 32)))
    capped = cap_segments(labels, 10)
    values = torch.unique(capped)
    assert torch.equal(values, torch.arange(10))
    big = torch.zeros(32, 32, dtype=torch.int64)
    big[:, 16:] = 5
    assert torch.equal(torch.unique(cap_segments(big, 10)), torch.tensor([0, 1]))  # relabelled contiguously


def test_corrupt_video_is_skipped_and_counted(kinetics_shards, tmp_path):
    """A shard whose samples carry undecodable video: skipped, counted in batch['skipped'], no crash."""
    good = shard_list(kinetics_shards / "train")[0]
    bad_shard = tmp_path / "shard-000000.tar"
    with tarfile.open(good) as src, tarfile.open(bad_shard, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith(".mp4") and int(member.name.split("/")[-1].split(".")[0][-1], 16) % 2 == 0:
                data = data[:200]  # truncated video
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    manifest = json.loads((kinetics_shards / "train" / "manifest.json").read_text())
    manifest["shards"] = [{"name": bad_shard.name, "samples": manifest["shards"][0]["samples"]}]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    cfg = _cfg(tmp_path)
    batches = list(build_loader(cfg, batch_size=2, seed=0))
    assert len(batches) == cfg.epoch_length
    assert sum(int(b["skipped"].sum()) for b in batches) > 0


def test_missing_manifest_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        shard_list(tmp_path)


def test_hard_positives_come_from_two_cameras_with_one_set_of_frame_indices(takes_shards):
    """Views of a pair are distinct cameras (different pixels), decoded at one shared set of frame indices."""
    cfg = _cfg(
        takes_shards / "train", "data.sampling=frames", "data.num_frames=4", "data.num_views=2",
        "data.positive=other_camera", "data.superpixels=null", "data.augment=none",
    )  # fmt: skip
    batch = next(iter(build_loader(cfg, batch_size=4, seed=0)))
    assert batch["clips"].shape[:3] == (4, 2, 4)
    assert (batch["camera"][:, 0] != batch["camera"][:, 1]).all()
    assert not torch.allclose(batch["clips"][:, 0], batch["clips"][:, 1])
    # the same frame indices serve both views; they are the instants of the per-frame labels as well
    assert batch["frame_index"].shape == (4, 4) and (batch["frame_labels"] >= 0).all()


def test_other_camera_on_single_view_shards_is_a_clear_error(kinetics_shards):
    cfg = _cfg(kinetics_shards / "train", "data.num_views=2", "data.positive=other_camera")
    from ssl_video.data.loader import make_example

    sample = next(iter(__import__("webdataset").WebDataset(shard_list(cfg.root)[0], shardshuffle=False)))
    with pytest.raises(ValueError, match="needs multi-view samples"):
        make_example(sample, cfg, random.Random(0))
