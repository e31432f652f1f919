"""The judo probe diagnosis: the pixel baseline is the pooled frame, and many probes share one feature pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_video.eval import online_action as oa
from ssl_video.eval import take_clips as tc
from ssl_video.experiments import judo_probe_diagnosis as diag


def test_pixel_encoder_is_the_average_pooled_frame():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = diag.PixelEncoder(2)(x)
    assert out.shape == (2, 12)
    # independent: mean of each 4x4 block, channel-major
    blocks = x.view(2, 3, 2, 4, 2, 4).mean((3, 5)).flatten(1)
    torch.testing.assert_close(out, blocks)


def test_random_encoders_take_the_stem_of_the_encoders_they_are_compared_with():
    plain, cifar = diag.build_encoder("random:3"), diag.build_encoder("random:3:cifar")
    assert plain.conv1.kernel_size == (7, 7) and cifar.conv1.kernel_size == (3, 3)
    again = diag.build_encoder("random:3:cifar")  # the seed fixes the weights
    torch.testing.assert_close(cifar.layer4[0].conv1.weight, again.layer4[0].conv1.weight)


class _Counting(nn.Module):
    out_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.frames_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.frames_seen += len(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def test_probes_of_one_encoder_share_one_pass_over_the_frames():
    rng = np.random.default_rng(0)
    clips = [tc.Clip("t", 0, torch.from_numpy(rng.integers(0, 255, (12, 3, 8, 8), dtype=np.uint8)),
                     np.array([0] * 6 + [1] * 6)) for _ in range(2)]
    encoder = _Counting()
    feats = diag.shared_features(encoder, clips)
    for seed in (0, 1):
        probe = oa.Probe(encoder, "gru", 2, hidden=4)
        cfg = diag.probe_config(2, 2, 0.05, [1], 8, seed)
        oa.train_probe(probe, clips, cfg, torch.device("cpu"), show_progress=False, features=feats)
        oa.predict(probe, clips, cfg, torch.device("cpu"), features=feats)
    assert encoder.frames_seen == 24  # every frame of both clips once, not once per probe and split
    with pytest.raises(ValueError, match="same clips and backbone"):
        oa.predict(oa.Probe(_Counting(), "gru", 2, hidden=4), clips, cfg, torch.device("cpu"), features=feats)


def test_each_row_carries_the_majority_class_rate_of_its_test_windows():
    """The rate of always answering the commonest class, counted independently over the probe's test windows."""
    import argparse

    rng = np.random.default_rng(1)
    labels = [np.array([0] * 20 + [2] * 12), np.array([1] * 16 + [0] * 16)]
    clips = [tc.Clip("t", i, torch.from_numpy(rng.integers(0, 255, (32, 3, 8, 8), dtype=np.uint8)), lab)
             for i, lab in enumerate(labels)]
    args = argparse.Namespace(probe_seeds=[0], steps=2, batch=2, lr=0.05, milestones=[1], crop=8, centre=False)
    [row] = diag._probes("test", "stored", _Counting(), clips, clips, 3, args)
    cfg = diag.probe_config(2, 2, 0.05, [1], 8, 0)
    overlap = tc.resolve_overlap(cfg.chunk_len, cfg.overlap)
    windows = [tc.chunk_label(lab[s : s + cfg.chunk_len]) for lab in labels
               for s in tc.window_starts(len(lab), cfg.chunk_len, overlap)]
    assert row["majority"] == round(100 * max(np.bincount(windows)) / len(windows), 2)
    assert 0 < row["majority"] < 100


def _packed_takes(tmp_path, fps: float):
    """Two synthetic takes (2 cameras, 24 frames of 64² at 25 fps, actions over 60-80 % of each: not the default,
    so a re-render must read it from the set) packed at ``fps`` into ``packs/train``."""
    from ssl_video.config import PackConfig, SuperpixelConfig
    from ssl_video.packing.shards import pack
    from ssl_video.synthetic.generate import write_takes

    takes = write_takes(tmp_path / "takes", seed=5, num_takes=2, num_cameras=2, num_classes=2, num_frames=24,
                        size=(64, 64), segment_fraction=(0.6, 0.8))
    cfg = PackConfig(kind="takes", input=str(takes), output=str(tmp_path / "packs"), short_side=64, fps=fps,
                     split_ratios=[1.0], max_frames=0)
    pack(cfg, SuperpixelConfig(algos={}), progress=False)
    return takes, tmp_path / "packs" / "train"


def test_actor_tracks_follow_the_actor_mask_and_move_when_the_labels_say(tmp_path):
    """The track at packed frame k is where the renderer's own actor mask is, at the source frame shown at k (the
    pack resamples 25 -> 30 fps), and the actor moves over the labelled frames and rests before its segment."""
    import json

    from ssl_video.synthetic.generate import render_synced_take

    takes, shards = _packed_takes(tmp_path, fps=30.0)
    tracks = diag.object_tracks(takes, shards)
    samples, _ = tc.read_samples(shards)
    assert sorted(tracks) == sorted((s["__key__"], v) for s in samples for v in (0, 1))
    for s in samples:
        labels = np.asarray(json.loads(s["json"])["frame_label_idx"])
        take, _ = render_synced_take(5, int(s["__key__"][-3:]), 2, 2, 24, (64, 64), segment_fraction=(0.6, 0.8))
        for v in (0, 1):
            track = tracks[(s["__key__"], v)][:, 0].numpy()  # the actor
            assert len(track) == len(labels) >= 27  # 24 frames at 25 fps shown at 30 fps (views trimmed alike)
            for k in (0, 10, 20, len(labels) - 1):
                source = take["lead"] + min(int((k + 0.5) * 25 / 30), 23)
                ys, xs = np.nonzero(take["masks"][v, source] == 1)  # the actor is object 0: mask value 1
                centroid = np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / 64
                np.testing.assert_allclose(track[k, :2], centroid, atol=2.5 / 64)
            moving = np.nonzero(np.abs(np.diff(track, axis=0)).max(1) > 1e-6)[0]
            labelled = np.nonzero(labels > 0)[0]
            assert moving[0] <= labelled[0] and labelled[-1] <= moving[-1] + 1
            if moving[0] > 0:  # at rest before the segment
                assert np.ptp(track[: moving[0] + 1], axis=0).max() < 1e-6


def test_decode_track_reads_a_linear_code_of_the_track_and_not_noise():
    """Features that are a fixed linear map of the actor's track (plus a little noise) decode with R² near 1, for
    positions and for motion, and do not decode a distractor moving on its own; features of pure noise decode
    nothing (R² near 0 or below)."""
    rng = np.random.default_rng(0)
    mix = torch.from_numpy(rng.normal(size=(2, 16))).float()
    clips, tracks, codes = [], {}, {}
    for t in range(8):
        for v in range(2):
            objects = []
            for periods in ((4, 5), (7, 3)):  # the actor's x and y, then the distractor's: their own rhythms
                a, b = rng.uniform(0, 6.3, 2)
                objects.append(np.stack([np.sin(np.arange(40) / periods[0] + a), np.cos(np.arange(40) / periods[1] + b),
                                         np.zeros(40), np.ones(40), np.ones(40)], -1))
            track = torch.from_numpy(np.stack(objects, 1)).float()  # (T, 2 objects, 5)
            key = (f"take-{t:03d}", v)
            tracks[key] = track
            codes[key] = track[:, 0, :2] @ mix + 0.01 * torch.from_numpy(rng.normal(size=(40, 16))).float()
            clips.append(tc.Clip(key[0], v, torch.zeros(40, 3, 4, 4, dtype=torch.uint8), np.zeros(40, np.int64)))

    class Lookup(nn.Module):  # returns the code of the clip being encoded (features are computed clip by clip)
        out_dim = 16

        def __init__(self, table):
            super().__init__()
            self.queue = list(table)

        def forward(self, x):
            return self.queue.pop(0)[: len(x)]

    train, test = clips[:8], clips[8:]
    good = diag.decode_track(Lookup([codes[(c.take, c.view)] for c in train + test]), train, test, tracks)
    assert good["r2_position"] > 0.99 and good["r2_motion"] > 0.9 and good["r2_distractors"] < 0.1
    alone = {key: track[:, :1] for key, track in tracks.items()}  # takes without distractors: nothing to compare
    solo = diag.decode_track(Lookup([codes[(c.take, c.view)] for c in train + test]), train, test, alone)
    assert solo["r2_position"] == good["r2_position"] and "r2_distractors" not in solo
    noise = [torch.from_numpy(rng.normal(size=(40, 16))).float() for _ in clips]
    bad = diag.decode_track(Lookup(noise), train, test, tracks)
    assert bad["r2_position"] < 0.1 and bad["r2_motion"] < 0.1
