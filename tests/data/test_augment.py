"""Augmentation: masks follow crops, flips and rotations exactly; one draw per chunk; independent draws per frame."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ssl_video.data import augment
from ssl_video.data.augment import AugParams, apply_geometric, augment_batch_on_device, augment_clip, cap_segments

PALETTE = torch.tensor([[0, 0, 0], [255, 0, 0], [0, 0, 255], [0, 255, 0]], dtype=torch.uint8)


def _cfg(**kw):
    base = dict(augment="judo", crop_size=48, max_superpixels=64, sampling="clip")
    return SimpleNamespace(**{**base, **kw})


def l_shape(t: int = 2, h: int = 60, w: int = 80) -> torch.Tensor:
    """An L (label 1: vertical bar, label 2: foot to the right): no flip or rotation maps it onto itself."""
    labels = torch.zeros(t, h, w, dtype=torch.int64)
    labels[:, 6:50, 10:22] = 1
    labels[:, 40:50, 22:60] = 2
    return labels


def paint(labels: torch.Tensor) -> torch.Tensor:
    return PALETTE[labels].permute(0, 3, 1, 2).contiguous()


def by_hand(labels: np.ndarray, p: AugParams) -> np.ndarray:
    """Nearest crop + resize + flip written with numpy indexing: source index floor(dst * in / out)."""
    top, left, h, w = p.crop
    rows = top + np.floor(np.arange(p.size) * h / p.size).astype(int)
    cols = left + np.floor(np.arange(p.size) * w / p.size).astype(int)
    out = labels[:, rows][:, :, cols]
    return out[:, :, ::-1] if p.flip else out


def test_mask_follows_crop_resize_and_flip_exactly():
    labels = l_shape()
    preset = augment.Preset("judo", (0.7, 0.9), flip_p=0.5)
    rng, flips = random.Random(0), set()
    for _ in range(20):
        p = augment.draw_params(preset, 60, 80, 48, rng)
        flips.add(p.flip)
        _, mask = apply_geometric(paint(labels), labels, p)
        np.testing.assert_array_equal(mask.numpy(), by_hand(labels.numpy(), p))
    assert flips == {True, False}
    # the check can fail: the unflipped expectation differs from a flipped result (the L is asymmetric)
    p = AugParams(crop=(0, 10, 60, 60), size=48, flip=True)
    _, mask = apply_geometric(paint(labels), labels, p)
    assert not np.array_equal(mask.numpy(), by_hand(labels.numpy(), AugParams(p.crop, 48, flip=False)))


@pytest.mark.parametrize("preset", ["judo", "walk"])
def test_frames_and_masks_share_every_draw_including_rotation(preset):
    """Frames painted from the labels: after augmentation, each interior pixel's colour is its label's colour."""
    labels = l_shape()
    rng = random.Random(1)
    cfg = _cfg(augment=preset)
    geometric_only = augment.Preset(**{**augment.PRESETS[preset].__dict__, "jitter_p": 0, "gray_p": 0, "erase_p": 0})
    for _ in range(15):
        p = augment.draw_params(geometric_only, 60, 80, cfg.crop_size, rng)
        video, mask = apply_geometric(paint(labels), labels, p)
        interior = torch.ones_like(mask, dtype=torch.bool)
        for shift in (1, 2, -1, -2):  # bilinear frames blur label edges: compare away from them
            interior &= (mask == torch.roll(mask, shift, -1)) & (mask == torch.roll(mask, shift, -2))
        interior &= mask >= 0  # corners uncovered by a rotation (fill) are not frame content
        expected = PALETTE[mask.clamp(min=0)].permute(0, 3, 1, 2).float()
        diff = (video.float() - expected).abs().amax(1)[interior]
        assert diff.max() < 100, f"{p}: frames and masks disagree"  # a misaligned map gives 255


def test_rotation_corners_become_their_own_segment():
    labels = l_shape(1)
    p = AugParams(crop=(0, 0, 60, 80), size=48, angle=10.0)
    _, mask = apply_geometric(paint(labels), labels, p)
    assert (mask == augment.MASK_FILL).any()
    _, capped = augment_clip(paint(labels), labels, _cfg(augment="none"), random.Random(0))
    assert torch.equal(torch.unique(capped), torch.arange(3))


def test_chunk_shares_one_draw_and_frames_mode_draws_per_frame():
    frame = paint(l_shape(1))
    frames, labels = frame.expand(6, -1, -1, -1).contiguous(), l_shape(6)
    cfg = _cfg()
    for seed in range(5):
        clip, maps = augment_clip(frames, labels, cfg, random.Random(seed))
        assert all(torch.equal(clip[0], clip[t]) for t in range(6))
        assert all(torch.equal(maps[0], maps[t]) for t in range(6))
    clip, maps = augment_clip(frames, labels, cfg, random.Random(0), per_frame=True)
    assert len({clip[t].sum().item() for t in range(6)}) > 1
    assert len({maps[t].numpy().tobytes() for t in range(6)}) > 1
    # a draw is a pure function of the RNG: replaying the seed replays the augmentation
    again, _ = augment_clip(frames, labels, cfg, random.Random(0), per_frame=True)
    assert torch.equal(clip, again)


def test_judo_crop_is_inside_the_central_square_at_70_to_90_percent():
    rng = random.Random(0)
    sides = []
    for _ in range(300):
        top, left, h, w = augment.draw_params(augment.PRESETS["judo"], 100, 160, 64, rng).crop
        assert h == w and 70 <= h <= 90
        assert left >= 30 and left + w <= 130 and top >= 0 and top + h <= 100
        sides.append(h)
    assert min(sides) <= 72 and max(sides) >= 88


def test_output_is_normalised_and_photometric_draws_apply():
    frames = paint(l_shape())
    clip, _ = augment_clip(frames, None, _cfg(augment="none"), random.Random(0))
    assert clip.dtype == torch.float32 and clip.shape == (2, 3, 48, 48)
    red = (1.0 - 0.485) / 0.229  # a pure red pixel of the foot/bar after ImageNet normalisation
    assert torch.isclose(clip[:, 0].max(), torch.tensor(red), atol=1e-4)
    p = AugParams(crop=(0, 0, 60, 80), size=48, gray=True)
    reddish = torch.zeros(1, 3, 4, 4, dtype=torch.uint8).index_fill_(1, torch.tensor([0]), 200)
    out = augment.apply_photometric(reddish, p)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])  # grayscale
    p = AugParams(crop=(0, 0, 1, 1), size=8, erase=(2, 3, 4, 2))
    erased = augment.apply_erase(torch.ones(1, 3, 8, 8), p)
    assert erased.sum() == 3 * (64 - 8) and (erased[:, :, 2:6, 3:5] == 0).all()
    with pytest.raises(ValueError, match="unknown data.augment 'fancy'"):
        augment_clip(frames, None, _cfg(augment="fancy"), random.Random(0))


def test_cap_segments_merges_the_smallest_into_neighbours_and_stays_contiguous():
    widths = [12, 9, 2, 7, 1, 1]  # vertical stripes with labels 10, 20, ... (not contiguous on input)
    labels = torch.cat([torch.full((8, w), 10 * (k + 1)) for k, w in enumerate(widths)], dim=1)
    capped = cap_segments(labels, 3)
    assert torch.equal(torch.unique(capped), torch.arange(3))
    for k in (0, 1, 3):  # the three largest stripes keep their pixels, one label each, all different
        assert len(torch.unique(capped[labels == 10 * (k + 1)])) == 1
    kept = [capped[labels == 10 * (k + 1)][0].item() for k in (0, 1, 3)]
    assert len(set(kept)) == 3
    assert torch.equal(cap_segments(labels, 10), torch.tensor(np.unique(labels.numpy(), return_inverse=True)[1]))


def test_batch_photometric_on_device_keeps_chunks_consistent():
    frames = paint(l_shape(1)).expand(3, -1, -1, -1).contiguous()
    cfg = _cfg(augment="walk", gpu_augment=True)
    clip, _ = augment_clip(frames, None, cfg, random.Random(0), photometric=False)
    batch = torch.stack([clip, clip]).unsqueeze(1).repeat(1, 2, 1, 1, 1, 1)  # (B=2, V=2, T=3, 3, H, W)
    out = augment_batch_on_device(batch, cfg, random.Random(0))
    assert out.shape == batch.shape and not torch.equal(out, batch)
    assert all(torch.allclose(out[b, v, 0], out[b, v, t]) for b in range(2) for v in range(2) for t in range(3))
    assert not torch.allclose(out[0, 0], out[0, 1])  # views drawn independently
    assert torch.equal(augment_batch_on_device(batch, _cfg(augment="none"), random.Random(0)), batch)


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]])
def test_fused_colour_jitter_equals_torchvision_functionals(order):
    """The in-place jitter on channel planes against v2's functionals applied one by one in the same order."""
    from torchvision.transforms.v2 import functional as F

    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (3, 20, 24, 3), dtype=torch.uint8, generator=gen).permute(0, 3, 1, 2)  # as decoded
    gray = order[0] == 2  # grayscale after the jitter in one case; the others keep colour (and clamped pixels)
    p = AugParams(crop=(0, 0, 20, 24), size=20, jitter=(order, 1.3, 0.6, 1.4, 0.08), gray=gray)
    expected = frames.float() / 255
    ops = [lambda x: F.adjust_brightness(x, 1.3), lambda x: F.adjust_contrast(x, 0.6),
           lambda x: F.adjust_saturation(x, 1.4), lambda x: F.adjust_hue(x, 0.08)]  # fmt: skip
    for k in order:
        expected = ops[k](expected)
    if gray:
        expected = F.rgb_to_grayscale(expected, num_output_channels=3)
    else:  # factors > 1 push pixels past 1: the clamps are exercised
        assert (expected == 1).any()
    before = frames.clone()
    out = augment.apply_photometric(frames, p)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert torch.equal(frames, before) and out.is_contiguous()  # input untouched, planes contiguous


def test_finish_frames_normalises_like_the_reference_formula():
    frames = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    out = augment.finish_frames(frames, AugParams(crop=(0, 0, 16, 16), size=16))
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(out, (frames.float() / 255 - mean.view(3, 1, 1)) / std.view(3, 1, 1))
    assert out.is_contiguous() and out.dtype == torch.float32


def test_relabel_all_frames_at_once_matches_np_unique_per_frame():
    gen = torch.Generator().manual_seed(3)
    maps = torch.randint(0, 9, (4, 10, 12), generator=gen) * 7 - 1  # gaps, a -1 fill label, different sets per frame
    maps[2] = 5  # one segment only
    maps[3] += 1000
    out, counts = augment.relabel(maps.to(torch.int32))
    for t in range(4):
        values, inverse = np.unique(maps[t].numpy(), return_inverse=True)
        np.testing.assert_array_equal(out[t].numpy(), inverse.reshape(10, 12))
        assert counts[t] == len(values)
    assert out.dtype == torch.int64
    capped = augment.finish_maps(maps, 3)  # frames over the cap go through cap_segments, the others stay relabelled
    assert torch.equal(capped[2], torch.zeros(10, 12, dtype=torch.long))
    assert all(capped[t].max() == 2 for t in (0, 1, 3))


def test_device_batch_path_computes_the_worker_path_with_one_draw_per_chunk():
    """gpu_augment: worker warps + normalises, the batch pass replays the photometric draw; the result is the same."""
    gen = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (3, 24, 24, 3), dtype=torch.uint8, generator=gen).permute(0, 3, 1, 2)
    cfg = _cfg(augment="judo", crop_size=24)
    preset, size = augment.get_preset("judo"), 24
    for seed in range(6):  # a chunk's photometric draw from Random(seed), as the batch pass draws its first chunk
        p = augment.draw_photometric(AugParams(crop=(0, 0, 24, 24), size=size), preset, random.Random(seed))
        on_worker = augment.finish_frames(frames, p)
        batch = augment.finish_frames(frames, p, photometric=False)[None, None]  # (B=1, V=1, T, 3, H, W)
        on_device = augment_batch_on_device(batch, cfg, random.Random(seed))
        torch.testing.assert_close(on_device[0, 0], on_worker, atol=1e-4, rtol=0)
    masks, still = l_shape(3), augment.finish_frames(frames[:1].expand(3, -1, -1, -1), p, photometric=False)
    batch = {"clips": torch.stack([still, still]).unsqueeze(1), "superpixels": masks.clone()}  # 3 equal frames
    batch["clips"] = augment_batch_on_device(batch["clips"], _cfg(augment="walk"), random.Random(0))
    assert torch.equal(batch["superpixels"], masks)  # the batch pass touches colours only
    assert all(torch.allclose(batch["clips"][b, 0, 0], batch["clips"][b, 0, t]) for b in range(2) for t in (1, 2))
    assert not torch.allclose(batch["clips"][0], batch["clips"][1])  # one draw per clip, independent across clips


def test_resized_crop_box_keeps_videowalk_scale_and_aspect_inside_the_frame():
    rng, fallbacks = random.Random(0), 0
    for _ in range(400):
        top, left, h, w = augment.resized_crop_box(60, 80, (0.8, 0.95), (0.7, 1.3), rng)
        assert top >= 0 and top + h <= 60 and left >= 0 and left + w <= 80
        if (top, left, h, w) == (0, 1, 60, 78):
            fallbacks += 1  # 10 failed tries: the central crop, its aspect 4/3 clamped to 1.3 (as torchvision does)
            continue
        assert 0.8 - 0.03 <= h * w / (60 * 80) <= 0.95 + 0.03  # rounding of h and w
        assert 0.7 - 0.03 <= w / h <= 1.3 + 0.03
    assert fallbacks < 40


def test_per_frame_crop_gives_each_frame_its_own_crop_and_the_maps_follow():
    """Six copies of one frame: with data.per_frame_crop each gets its own videowalk crop (replayed from the seed and
    checked with numpy indexing); without it the walk preset draws once per chunk and every frame stays equal."""
    frames, labels = paint(l_shape(6)), l_shape(6)
    cfg = _cfg(augment="none", per_frame_crop=True)
    _, maps = augment_clip(frames, labels, cfg, random.Random(3))
    preset = augment.Preset(**{**augment.PRESETS["none"].__dict__, **augment.PER_FRAME_CROP})
    replay, crops = random.Random(3), set()
    for t in range(6):
        p = augment.draw_params(preset, 60, 80, cfg.crop_size, replay)
        crops.add(p.crop)
        expected = augment.finish_maps(torch.from_numpy(by_hand(labels[t : t + 1].numpy(), p).copy()), 64)
        assert torch.equal(maps[t], expected[0]), t
    assert len(crops) == 6
    clip, maps = augment_clip(frames, labels, _cfg(augment="walk", per_frame_crop=False), random.Random(3))
    assert all(torch.equal(clip[0], clip[t]) and torch.equal(maps[0], maps[t]) for t in range(6))
    clip, _ = augment_clip(frames, labels, _cfg(augment="walk", per_frame_crop=True), random.Random(3))
    assert len({clip[t].sum().item() for t in range(6)}) == 6


def test_writing_into_a_preallocated_slot_equals_a_fresh_result():
    frames, labels = paint(l_shape(4)), l_shape(4)
    for preset, per_frame in (("judo", False), ("judo", True), ("walk", False)):
        for seed in range(6):
            fresh, fresh_maps = augment_clip(frames, labels, _cfg(augment=preset), random.Random(seed), per_frame)
            slot = torch.full((2, 4, 3, 48, 48), float("nan"))
            into, maps = augment_clip(frames, labels, _cfg(augment=preset), random.Random(seed), per_frame, out=slot[1])
            assert into.data_ptr() == slot[1].data_ptr() and torch.equal(slot[1], fresh)
            assert torch.equal(maps, fresh_maps) and slot[0].isnan().all()
