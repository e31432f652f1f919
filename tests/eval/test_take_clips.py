"""Take shards as clips: chunk labels, test windows, training draws and the stored frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssl_video.eval import take_clips as tc
from tests.helpers import coded_clip


def test_chunk_label_is_the_majority_ties_to_lower_index():
    assert tc.chunk_label([0, 2, 2, 2, 0, 1, 2, 0]) == 2
    assert tc.chunk_label([3, 3, 1, 1]) == 1  # tie: the lower class index
    assert tc.chunk_label([0, 0, 5, 5, 5, 0, 0, 0]) == 0
    with pytest.raises(ValueError, match="labels"):
        tc.chunk_label([])


@pytest.mark.parametrize(("n", "chunk_len", "expected"), [(48, 8, 9), (48, 4, 23), (8, 8, 1), (7, 8, 0), (13, 8, 2)])
def test_sliding_window_counts_with_study_overlap(n, chunk_len, expected):
    overlap = tc.resolve_overlap(chunk_len, None)
    assert overlap == {8: 3, 4: 2}[chunk_len]
    starts = tc.window_starts(n, chunk_len, overlap)
    assert len(starts) == expected == (max(0, (n - chunk_len) // (chunk_len - overlap) + 1) if n >= chunk_len else 0)
    assert all(b - a == chunk_len - overlap for a, b in zip(starts, starts[1:]))
    assert not starts or starts[-1] + chunk_len <= n


def test_overlap_must_leave_a_stride():
    with pytest.raises(ValueError, match="overlap"):
        tc.resolve_overlap(8, 8)
    with pytest.raises(ValueError, match="study overlap"):
        tc.resolve_overlap(6, None)


def test_train_starts_are_uniform_over_valid_positions():
    rng = np.random.default_rng(0)
    starts = [tc.train_start(20, 8, rng) for _ in range(6000)]
    counts = np.bincount(starts)
    assert len(counts) == 13 and counts.min() > 6000 / 13 * 0.8


def test_background_is_15_percent_of_each_segment_edge(takes_shards, synthetic_root):
    samples, classes = tc.read_samples(takes_shards / "train")
    assert classes[0] == "background"
    for s in samples:
        meta = json.loads(s["json"])
        labels = np.asarray(meta["frame_label_idx"])
        seg = json.loads((synthetic_root / "takes" / meta["source"] / "annotation.json").read_text())["segments"][0]
        edge = int(np.floor(0.15 * (seg["end"] - seg["start"]) + 0.5))
        frames = np.arange(len(labels)) + meta["timeline_start"]
        inside = (frames >= seg["start"] + edge) & (frames < seg["end"] - edge)
        np.testing.assert_array_equal(labels > 0, inside)  # the segment's edges and the outside are background
        assert set(labels[inside]) == {classes.index(seg["label"])}
    # the rule itself, on a hand-made segment of 40 frames: 6 background frames at each edge (round(0.15 * 40))
    from ssl_video.packing.inputs import frame_labels

    names = frame_labels([{"start": 10, "end": 50, "label": "sway"}], 0, 60, 25.0, 25.0, 0.15)
    assert names[:16] == ["background"] * 16 and names[16:44] == ["sway"] * 28 and names[44:] == ["background"] * 16
    labels = np.array([n == "sway" for n in names], dtype=np.int64)
    assert tc.chunk_label(labels[10:18]) == 0  # a chunk at the segment start is mostly background
    assert tc.chunk_label(labels[20:28]) == 1


def test_chunk_windows_cut_and_flip_the_stored_frames():
    clip = coded_clip()
    centre = clip.window(2, 4)
    assert centre.shape == (4, 3, 16, 16)
    assert centre[0, 0].unique().tolist() == [2] and centre[-1, 0].unique().tolist() == [5]
    assert centre[0, 1, :, 0].tolist() == list(range(2, 18)) and centre[0, 2, 0].tolist() == list(range(2, 18))
    cut = clip.window(0, 3, top=4, left=1, flip=True)
    assert cut[0, 1, :, 0].tolist() == list(range(4, 20))  # rows 4..19
    assert cut[0, 2, 0].tolist() == list(range(16, 0, -1))  # columns 1..16, mirrored


def test_augmentation_draws_cover_the_frame_and_flip_40_percent():
    clip = coded_clip()
    rng = np.random.default_rng(0)
    draws = [tc.draw_aug(clip, rng) for _ in range(4000)]
    tops, lefts = [d.top for d in draws], [d.left for d in draws]
    assert set(tops) == set(lefts) == set(range(5))  # every window position of the 20² frame for a 16² window
    assert np.bincount(tops).min() > 4000 / 5 * 0.85
    assert abs(np.mean([d.flip for d in draws]) - tc.FLIP_P) < 0.03  # binomial sd 0.008 at p 0.4


def test_probe_clips_are_stored_larger_than_the_window(takes_shards):
    clips, _ = tc.load_clips(takes_shards / "test", 64, tc.CROP_FRACTION)
    assert all(c.frames.shape[-2:] == (80, 80) and c.crop == 64 for c in clips)  # 64 / 0.8
    assert clips[0].window(0, 2).shape == (2, 3, 64, 64)
