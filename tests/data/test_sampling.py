"""Frame and camera sampling: clips lie on superpixel frames, frames mode draws distinct frames, cameras differ."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from ssl_video.data import sampling


def _cfg(**kw):
    base = dict(sampling="clip", clip_len=4, frame_stride=4, num_frames=8, num_views=1, positive="same_clip",
                superpixels="slic")  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def _meta(num_frames=32, sp_stride=4, labels=None):
    meta = {"num_frames": num_frames, "superpixels": {"slic": {"frame_index": list(range(0, num_frames, sp_stride))}}}
    if labels is not None:
        meta["frame_label_idx"] = labels
    return meta


def test_clip_frames_are_strided_and_all_have_superpixels():
    meta, rng = _meta(32, sp_stride=4), random.Random(0)
    starts = set()
    for _ in range(200):
        idx = sampling.choose_frames(meta, _cfg(), rng)
        assert [b - a for a, b in zip(idx, idx[1:])] == [4, 4, 4]
        assert all(i % 4 == 0 and 0 <= i < 32 for i in idx)
        starts.add(idx[0])
    assert starts == {0, 4, 8, 12, 16}  # every start whose clip fits is drawn
    # without superpixels any start works at any stride
    idx = sampling.choose_frames(meta, _cfg(superpixels=None, frame_stride=3), random.Random(1))
    assert [b - a for a, b in zip(idx, idx[1:])] == [3, 3, 3] and idx[-1] < 32


def test_clip_stride_off_the_superpixel_grid_is_a_clear_error():
    with pytest.raises(ValueError, match="superpixels are every 4 frames: use a multiple"):
        sampling.choose_frames(_meta(32, sp_stride=4), _cfg(frame_stride=2), random.Random(0))
    with pytest.raises(ValueError, match="no clip of 4 frames"):
        sampling.choose_frames(_meta(8, sp_stride=1), _cfg(frame_stride=4, superpixels=None), random.Random(0))
    with pytest.raises(ValueError, match="no 'felz' superpixels"):
        sampling.choose_frames(_meta(), _cfg(superpixels="felz"), random.Random(0))


def test_frames_mode_draws_distinct_sorted_frames_among_candidates():
    meta, rng = _meta(64, sp_stride=2), random.Random(0)
    seen = set()
    for _ in range(50):
        idx = sampling.choose_frames(meta, _cfg(sampling="frames", num_frames=6), rng)
        assert idx == sorted(idx) and len(set(idx)) == 6 and all(i % 2 == 0 for i in idx)
        seen.update(idx)
    assert len(seen) > 25  # spread over the whole video, not a window
    with pytest.raises(ValueError, match="16 usable frames < data.num_frames=20"):
        sampling.choose_frames(_meta(32, 2), _cfg(sampling="frames", num_frames=20), rng)


def test_cameras_distinct_for_hard_positives_and_shared_otherwise():
    rng = random.Random(0)
    pairs = [sampling.choose_cameras(3, _cfg(num_views=2, positive="other_camera"), rng) for _ in range(100)]
    assert all(a != b for a, b in pairs)
    assert {tuple(p) for p in pairs} == {(a, b) for a in range(3) for b in range(3) if a != b}
    same = [sampling.choose_cameras(3, _cfg(num_views=2), rng) for _ in range(30)]
    assert all(a == b for a, b in same) and {a for a, _ in same} == {0, 1, 2}
    with pytest.raises(ValueError, match="needs 2 cameras per sample, this one has 1"):
        sampling.choose_cameras(1, _cfg(num_views=2, positive="other_camera"), rng)
    with pytest.raises(ValueError, match="unknown data.positive 'mine'"):
        sampling.choose_cameras(2, _cfg(positive="mine"), rng)


def test_rows_labels_and_view_order():
    meta = _meta(16, sp_stride=4, labels=[0] * 8 + [2] * 8)
    assert sampling.superpixel_rows(meta, "slic", [4, 12, 0]) == [1, 3, 0]
    with pytest.raises(ValueError, match=r"frames \[5\] have no 'slic'"):
        sampling.superpixel_rows(meta, "slic", [4, 5])
    assert sampling.frame_labels(meta, [0, 9, 15]) == [0, 2, 2]
    assert sampling.frame_labels(_meta(), [1, 2]) == [-1, -1]
    assert sampling.sample_label({"label_idx": None}) == -1 and sampling.sample_label({"label_idx": 3}) == 3
    sample = {f"view{k}.mp4": b"" for k in (10, 2, 0, 1)} | {"json": b"{}", "view0.sp.slic.npz": b""}
    assert sampling.view_prefixes(sample) == ["view0.", "view1.", "view2.", "view10."]
    assert sampling.view_prefixes({"mp4": b"", "json": b""}) == [""]
    with pytest.raises(ValueError, match="no video"):
        sampling.view_prefixes({"json": b""})
