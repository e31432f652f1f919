"""make_example: equal to the previous per-view computation; partial npz reads; a superpixel algorithm per clip."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
import torch
import webdataset as wds

from ssl_video.config import load_config
from ssl_video.data import augment, sampling
from ssl_video.data.decode import decode_frames
from ssl_video.data.label_maps import read_rows
from ssl_video.data.loader import check_data_config, make_example, plain_config, shard_list
from ssl_video.normalise import normalise

pytestmark = pytest.mark.xdist_group("two_algo_shards")  # its module-scoped shard set is built once, in one worker


def _cfg(root, *extra):
    return plain_config(load_config(["method=walk_superpixel", f"data.root={root}", "data.crop_size=64", *extra]).data)


def previous_augment_clip(frames, labels, cfg, rng, per_frame, photometric):
    """augment_clip before it wrote into a slot: a fresh tensor per draw group, then torch.cat."""
    preset = augment.get_preset(cfg.augment)
    height, width = frames.shape[-2:]
    groups = [slice(t, t + 1) for t in range(frames.shape[0])] if per_frame else [slice(None)]
    labels = None if labels is None else labels.to(torch.int32)
    out_frames, out_labels = [], []
    for group in groups:
        p = augment.draw_params(preset, height, width, cfg.crop_size, rng)
        video, mask = augment.apply_geometric(frames[group], None if labels is None else labels[group], p)
        x = augment.apply_photometric(video, p) if photometric else augment.to_float(video)
        x = normalise(x)
        out_frames.append(augment.apply_erase(x, p) if photometric else x)
        if mask is not None:
            out_labels.append(mask)
    maps = None if labels is None else augment.finish_maps(torch.cat(out_labels), cfg.max_superpixels)
    return torch.cat(out_frames), maps


def previous_make_example(sample, cfg, rng):
    """make_example before the preallocated clips and partial npz reads: np.load, per-view tensors, torch.stack.
    Frames come from decord (``ctx="cpu"``), not from the PyAV path the loader uses."""
    meta = json.loads(sample["json"])
    prefixes = sampling.view_prefixes(sample)
    cameras = sampling.choose_cameras(len(prefixes), cfg, rng)
    indices = sampling.choose_frames(meta, cfg, rng)
    clips, maps, decoded = [], None, {}
    for v, cam in enumerate(cameras):
        if cam not in decoded:
            decoded[cam] = torch.from_numpy(decode_frames(sample[f"{prefixes[cam]}mp4"], indices, ctx="cpu"))
        frames = decoded[cam].permute(0, 3, 1, 2)
        labels = None
        if cfg.superpixels and v == 0:
            rows = sampling.superpixel_rows(meta, cfg.superpixels, indices)
            with np.load(io.BytesIO(sample[f"{prefixes[cam]}sp.{cfg.superpixels}.npz"])) as npz:
                labels = torch.from_numpy(npz["labels"][rows].astype(np.int32))
        clip, labels = previous_augment_clip(
            frames, labels, cfg, rng, cfg.sampling == "frames", photometric=not cfg.gpu_augment
        )
        clips.append(clip)
        maps = labels if v == 0 else maps
    return torch.stack(clips), maps


CASES = {
    "walk_superpixel": ("kinetics", []),
    "judo_frames": ("kinetics", ["data.augment=judo", "data.sampling=frames", "data.num_frames=4"]),
    "gpu_augment": ("kinetics", ["data.augment=judo", "data.gpu_augment=true"]),
    "hard_positives": ("takes", ["data.augment=judo", "data.num_views=2", "data.positive=other_camera"]),
    "two_views_no_maps": ("takes", ["data.augment=judo", "data.num_views=2", "data.superpixels=null"]),
}


@pytest.mark.parametrize("case", CASES)
def test_make_example_equals_the_previous_computation(case, kinetics_shards, takes_shards):
    kind, extra = CASES[case]
    root = (kinetics_shards if kind == "kinetics" else takes_shards) / "train"
    cfg = _cfg(root, *extra)
    new_rng, old_rng = random.Random(7), random.Random(7)
    for sample in list(wds.WebDataset(shard_list(root), shardshuffle=False))[:6]:
        ex = make_example(sample, cfg, new_rng, ctx="pyav")
        clips, maps = previous_make_example(sample, cfg, old_rng)
        assert ex["clips"].shape == clips.shape and torch.equal(ex["clips"], clips), (case, sample["__key__"])
        assert (maps is None) == ("superpixels" not in ex)
        if maps is not None:
            assert torch.equal(ex["superpixels"], maps) and ex["superpixels"].dtype == torch.long


def _npz(labels: np.ndarray, save=np.savez_compressed) -> bytes:
    buf = io.BytesIO()
    save(buf, labels=labels)
    return buf.getvalue()


def test_read_rows_equals_np_load_for_every_layout():
    from ssl_video.packing.shards import npz_bytes

    labels = np.random.default_rng(0).integers(0, 700, (12, 20, 30)).astype(np.uint16)
    for data in (_npz(labels), _npz(labels, np.savez), _npz(np.asfortranarray(labels)), npz_bytes(labels),
                 _npz(labels.astype(np.int64))):  # fmt: skip
        for rows in ([0], [11], [3, 7, 7, 2], list(range(12)), []):
            got = read_rows(data, rows)
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, labels[rows].astype(np.int32))


def test_read_rows_bad_input_is_one_line_value_error():
    data = _npz(np.zeros((4, 8, 8), np.uint16))
    for bad, message in ((data, "outside 0..3"), (data[: len(data) // 2], "bad superpixel npz"),
                         (b"not a zip", "bad superpixel npz")):  # fmt: skip
        with pytest.raises(ValueError, match=message) as err:
            read_rows(bad, [1, 4] if bad is data else [1])
        assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def two_algo_shards(synthetic_root, tmp_path_factory):
    """The synthetic Kinetics train clips packed with SLIC and Felzenszwalb maps (every 4th frame, 128²)."""
    from ssl_video.config import PackConfig, SuperpixelConfig
    from ssl_video.packing.shards import pack

    kin, out = synthetic_root / "kinetics", tmp_path_factory.mktemp("two_algos")
    algos = {"slic": {"n_segments": 16, "start_label": 0}, "felzenszwalb": {"scale": 200, "min_size": 40}}
    pack(PackConfig(output=str(out), kind="kinetics", input=str(kin), annotations=str(kin / "train.csv"),
                    short_side=128, max_frames=24, shard_size=4),
         SuperpixelConfig(algos=algos, frame_stride=4), progress=False)  # fmt: skip
    return out / "train"


def _relabelled(sample, algo, frame_index) -> torch.Tensor:
    """The packed maps of ``algo`` at those frames, relabelled 0..n-1 per frame with np.unique (independent path)."""
    meta = json.loads(sample["json"])
    rows = sampling.superpixel_rows(meta, algo, [int(i) for i in frame_index])
    with np.load(io.BytesIO(sample[f"sp.{algo}.npz"])) as npz:
        maps = npz["labels"][rows]
    return torch.from_numpy(np.stack([np.unique(m, return_inverse=True)[1].reshape(m.shape) for m in maps]))


def test_superpixel_list_draws_one_packed_algorithm_per_clip_deterministically(two_algo_shards):
    cfg = _cfg(two_algo_shards, "data.superpixels=[slic,felzenszwalb]", "data.augment=none", "data.crop_size=128",
               "data.max_superpixels=100000")  # fmt: skip
    samples = list(wds.WebDataset(shard_list(two_algo_shards), shardshuffle=False)) * 2
    rng, chosen, first = random.Random(0), [], []
    for sample in samples:
        ex = make_example(sample, cfg, rng, ctx="pyav")
        maps = ex["superpixels"]
        matches = [a for a in ("slic", "felzenszwalb") if torch.equal(maps, _relabelled(sample, a, ex["frame_index"]))]
        assert len(matches) == 1, matches
        chosen.append(matches[0])
        first.append(ex["superpixels"])
    assert {"slic", "felzenszwalb"} == set(chosen)
    rng = random.Random(0)
    assert all(torch.equal(make_example(s, cfg, rng, ctx="pyav")["superpixels"], f) for s, f in zip(samples, first))
    # one algorithm, as a string or a one-item list: the same stream as before lists existed (no extra draw)
    one, listed = _cfg(two_algo_shards, "data.superpixels=slic"), _cfg(two_algo_shards, "data.superpixels=[slic]")
    a, b = random.Random(1), random.Random(1)
    for sample in samples[:4]:
        assert torch.equal(make_example(sample, one, a)["clips"], make_example(sample, listed, b)["clips"])


def test_superpixel_setting_errors_are_one_line(kinetics_shards):
    root = kinetics_shards / "train"
    for value in ("[]", "[slic,3]"):
        cfg = load_config(["method=walk_superpixel", f"data.root={root}", f"data.superpixels={value}"]).data
        with pytest.raises(ValueError, match="data.superpixels must be null, an algorithm name or a non-empty list"):
            check_data_config(cfg)
    cfg = _cfg(root, "data.superpixels=[slic,felzenszwalb]")
    sample = next(iter(wds.WebDataset(shard_list(root), shardshuffle=False)))
    rng = random.Random(0)
    with pytest.raises(ValueError, match="no 'felzenszwalb' superpixels"):
        for _ in range(20):  # the draw picks felzenszwalb within a few clips; this set packed only slic
            make_example(sample, cfg, rng)


def test_worker_malloc_thresholds_apply_once_in_a_fresh_process():
    """On glibc (the CI machines), mallopt accepts both thresholds; a second call is a no-op that reports success."""
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        libc = platform.libc_ver()[0] or "unknown libc"
        pytest.skip(f"not glibc ({platform.system()}, {libc}): the mallopt thresholds tested are glibc's")
    code = "from ssl_video.data.malloc import keep_freed_memory as k; print(k(), k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True", "True"]
