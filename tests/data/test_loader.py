"""Loader: the batch schema, equal and deterministic batch counts, hard positives, bad data skipped and counted."""

from __future__ import annotations

import io
import json
import random
import shutil
import tarfile

import numpy as np
import pytest
import torch
import webdataset as wds

from ssl_video.config import load_config
from ssl_video.data.decode import decode_frames
from ssl_video.data.loader import (
    StopSafeLoader,
    build_loader,
    ignore_stop_signals,
    make_example,
    shard_list,
    shards_for,
)


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
    assert b["superpixels"].shape == (3, 4, 64, 64) and b["superpixels"].dtype == torch.long
    assert b["camera"].shape == (3, 1) and b["skipped"].shape == (3,) and b["label"].shape == (3,)
    assert (b["label"] >= 0).all() and (b["frame_labels"] == -1).all()  # Kinetics: clip labels, no frame labels
    for i in range(3):
        idx = b["frame_index"][i]
        assert (idx % 4 == 0).all() and (idx.diff() == 4).all()  # stride 4 on the packed superpixel frames
        for t in range(4):
            values = torch.unique(b["superpixels"][i, t])
            assert torch.equal(values, torch.arange(len(values)))  # contiguous 0..n-1
            assert b["num_superpixels"][i, t] == len(values) <= cfg.max_superpixels


def test_ranks_get_equal_counts_deterministic_and_different_orders(kinetics_shards):
    cfg = _cfg(kinetics_shards / "train", "data.epoch_length=5")
    rank0 = _keys(build_loader(cfg, batch_size=2, rank=0, world_size=2, seed=1))
    rank1 = _keys(build_loader(cfg, batch_size=2, rank=1, world_size=2, seed=1))
    assert len(rank0) == len(rank1) == 5
    assert rank0 != rank1
    assert rank0 == _keys(build_loader(cfg, batch_size=2, rank=0, world_size=2, seed=1))  # deterministic
    assert rank0 != _keys(build_loader(cfg, batch_size=2, rank=0, world_size=2, seed=1, epoch=1))
    assert rank0 != _keys(build_loader(cfg, batch_size=2, rank=0, world_size=2, seed=2))


def test_two_workers_give_epoch_length_batches_deterministically(kinetics_shards):
    cfg = _cfg(kinetics_shards / "train", "data.epoch_length=5", "data.num_workers=2")
    first = list(build_loader(cfg, batch_size=2, seed=0))
    second = list(build_loader(cfg, batch_size=2, seed=0))
    assert len(first) == len(second) == 5
    assert all(torch.equal(a["clips"], b["clips"]) for a, b in zip(first, second))


def test_loader_leaves_the_global_torch_rng_alone(kinetics_shards):
    """The trainer's RNG (dropout, bit-identical resume) must not depend on when a loader was built or iterated."""
    cfg = _cfg(kinetics_shards / "train", "data.epoch_length=2")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    for _ in build_loader(cfg, batch_size=2, seed=0, epoch=1):
        pass
    assert torch.equal(before, torch.get_rng_state())


def test_shards_split_over_rank_worker_pairs_when_there_are_enough():
    shards = [f"s{i}" for i in range(5)]
    parts = [shards_for(shards, r, 2, w, 2) for r in range(2) for w in range(2)]
    assert sorted(sum(parts, [])) == shards and all(parts)
    assert shards_for(shards[:3], 1, 2, 1, 2) == shards[:3]  # fewer shards than pairs: every pair resamples all


def test_views_of_a_sample_share_frames_and_differ_by_augmentation(kinetics_shards):
    cfg = _cfg(kinetics_shards / "train", "data.num_views=2", "data.superpixels=null", "data.augment=judo")
    batch = next(iter(build_loader(cfg, batch_size=2, seed=0)))
    assert batch["clips"].shape == (2, 2, 4, 3, 64, 64) and "superpixels" not in batch
    assert (batch["camera"] == 0).all()
    assert not torch.allclose(batch["clips"][:, 0], batch["clips"][:, 1])


def _rewrite_shard(src: str, dst, corrupt=lambda name, data: data) -> None:
    with tarfile.open(src) as inp, tarfile.open(dst, "w") as out:
        for member in inp.getmembers():
            data = corrupt(member.name, inp.extractfile(member).read())
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


def _shard_set(folder, names_and_counts) -> None:
    manifest = {"shards": [{"name": n, "samples": c} for n, c in names_and_counts]}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_truncated_shard_and_corrupt_video_are_skipped_and_counted(kinetics_shards, tmp_path):
    good = shard_list(kinetics_shards / "train")[0]
    # shard 0: the videos of two of its samples cut to 200 bytes; shard 1: the tar itself cut inside a member
    with tarfile.open(good) as tar:
        cut = sorted({m.name.split(".")[0] for m in tar.getmembers()})[:2]
    _rewrite_shard(good, tmp_path / "shard-000000.tar",
                   lambda name, data: data[:200] if name.endswith(".mp4") and name.split(".")[0] in cut else data)
    raw = open(good, "rb").read()
    (tmp_path / "shard-000001.tar").write_bytes(raw[: len(raw) // 2 + 100])
    for name in ("shard-000000.tar", "shard-000001.tar"):  # corrupt videos, then a truncated tar
        folder = tmp_path / name.replace(".tar", "")
        folder.mkdir()
        shutil.copy(tmp_path / name, folder / name)
        _shard_set(folder, [(name, 4)])
        cfg = _cfg(folder, "data.epoch_length=6")
        batches = list(build_loader(cfg, batch_size=2, seed=0))
        assert len(batches) == cfg.epoch_length, name
        assert all(b["clips"].isfinite().all() for b in batches)
        assert sum(int(b["skipped"].sum()) for b in batches) > 0, name  # each kind of damage is counted


def test_each_failure_kind_is_counted(kinetics_shards, tmp_path):
    """Videos all cut: every sample of shard 0 is skipped and counted, the good shard feeds the batches."""
    shards = shard_list(kinetics_shards / "train")
    _rewrite_shard(shards[0], tmp_path / "bad.tar", lambda name, data: data[:100] if name.endswith(".mp4") else data)
    shutil.copy(shards[1], tmp_path / "good.tar")
    _shard_set(tmp_path, [("bad.tar", 4), ("good.tar", 4)])
    cfg = _cfg(tmp_path, "data.epoch_length=6")
    batches = list(build_loader(cfg, batch_size=2, seed=3))
    assert len(batches) == 6 and sum(int(b["skipped"].sum()) for b in batches) >= 4


def test_all_bad_data_stops_with_one_clear_error_instead_of_hanging(kinetics_shards, tmp_path):
    _rewrite_shard(shard_list(kinetics_shards / "train")[0], tmp_path / "bad.tar",
                   lambda name, data: b"junk" if name.endswith(".mp4") else data)
    _shard_set(tmp_path, [("bad.tar", 4)])
    with pytest.raises(RuntimeError, match="10 bad samples in a row"):
        list(build_loader(_cfg(tmp_path, "data.skip_limit=10"), batch_size=2, seed=0))


def test_empty_shards_stop_with_an_error_instead_of_hanging(tmp_path):
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass  # a valid tar without members: no exception anywhere, just no samples
    _shard_set(tmp_path, [("empty.tar", 1)])
    with pytest.raises(RuntimeError, match="10 shards in a row held no sample"):
        list(build_loader(_cfg(tmp_path, "data.skip_limit=10"), batch_size=2, seed=0))


def test_config_errors_are_one_line(kinetics_shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        shard_list(tmp_path)
    with pytest.raises(ValueError, match="data.sampling' got 'chunks'"):
        build_loader(_cfg(kinetics_shards / "train", "data.sampling=chunks"), batch_size=2)
    cfg = _cfg(kinetics_shards / "train", "data.num_views=2", "data.positive=other_camera")
    sample = next(iter(wds.WebDataset(shard_list(cfg.root)[0], shardshuffle=False)))
    with pytest.raises(ValueError, match="needs 2 cameras per sample, this one has 1"):
        make_example(sample, cfg, random.Random(0))


def test_hard_positives_are_other_cameras_at_the_same_instants(takes_shards, synthetic_root):
    """Each view equals the raw camera file's frame that shows the common instant of ``frame_index`` (offsets
    applied): two different cameras, one instant. Checked against the unpacked takes, not against the loader."""
    cfg = _cfg(
        takes_shards / "train", "data.sampling=frames", "data.num_frames=4", "data.num_views=2",
        "data.positive=other_camera", "data.superpixels=null", "data.augment=none", "data.crop_size=128",
    )  # fmt: skip
    rng = random.Random(0)
    for sample in wds.WebDataset(shard_list(cfg.root), shardshuffle=False):
        meta = json.loads(sample["json"])
        ex = make_example(sample, cfg, rng)
        cams = ex["camera"].tolist()
        assert cams[0] != cams[1]
        offsets = json.loads((synthetic_root / "takes" / meta["source"] / "annotation.json").read_text())
        offsets = offsets.get("sync_offsets", {})
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        for v, cam in enumerate(cams):
            name = meta["cameras"][cam]
            raw = decode_frames((synthetic_root / "takes" / meta["source"] / f"{name}.mp4").read_bytes())
            instants = np.array([meta.get("timeline_start", 0) + i + offsets.get(name, 0) for i in ex["frame_index"]])
            got = ((ex["clips"][v] * std + mean) * 255).permute(0, 2, 3, 1).numpy()
            # mismatch against the raw file shifted by d frames: the packed view must line up at d = 0 exactly
            errors = {d: np.abs(raw[np.clip(instants + d, 0, len(raw) - 1)] - got).mean() for d in range(-3, 4)}
            assert min(errors, key=errors.get) == 0, (meta["source"], name, errors)
            assert errors[0] < 6  # transcoding noise only


def test_shards_of_the_real_videos_load_and_decode(shared_videos, tmp_path):
    from ssl_video.config import PackConfig, SuperpixelConfig
    from ssl_video.packing.shards import pack

    names = ["demo.mp4", "flipping_a_pancake.mkv", "h265_video.mp4", "rotated_90.mov", "test.avi", "corrupted.mp4"]
    (tmp_path / "list.txt").write_text("".join(f"{n}\n" for n in names))
    pack(PackConfig(output=str(tmp_path / "out"), kind="filelist", input=str(shared_videos),
                    annotations=str(tmp_path / "list.txt"), short_side=64, max_frames=12, shard_size=2),
         SuperpixelConfig(algos={"slic": {"n_segments": 16, "start_label": 0}}, frame_stride=1), progress=False)
    cfg = _cfg(tmp_path / "out" / "train", "data.clip_len=2", "data.frame_stride=1", "data.crop_size=32")
    sources = set()
    for sample in wds.WebDataset(shard_list(cfg.root), shardshuffle=False):
        ex = make_example(sample, cfg, random.Random(0))
        assert ex["clips"].shape == (1, 2, 3, 32, 32) and ex["clips"].std() > 0
        assert ex["superpixels"].shape == (2, 32, 32)
        sources.add(json.loads(sample["json"])["source"])
    assert set(names[:-1]) <= sources  # (corrupted.mp4 breaks after its first 12 frames: it may be packed)
    batches = list(build_loader(cfg, batch_size=2, seed=0))
    assert len(batches) == cfg.epoch_length and sum(int(b["skipped"].sum()) for b in batches) == 0
    assert np.isfinite(torch.cat([b["clips"] for b in batches]).numpy()).all()


def _signalled_before_init(worker_id: int) -> None:
    """A SIGTERM to the process group that lands after a worker's fork, before its worker_init_fn has run."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGTERM)
    ignore_stop_signals(worker_id)


def test_a_stop_signal_while_workers_start_does_not_kill_them():
    from torch.utils.data import DataLoader

    data = list(range(6))
    safe = StopSafeLoader(data, batch_size=2, num_workers=1, worker_init_fn=_signalled_before_init)
    assert [b.tolist() for b in safe] == [[0, 1], [2, 3], [4, 5]]
    plain = DataLoader(data, batch_size=2, num_workers=1, worker_init_fn=_signalled_before_init)
    with pytest.raises(RuntimeError, match="worker"):  # the hazard itself: a plain loader's worker dies
        list(plain)
