"""Synthetic data: masks match pixels, takes are synchronised, on-disk layouts parse back, determinism by seed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_video.synthetic import generate as syn
from ssl_video.synthetic.render import action_offsets

REPO = Path(__file__).resolve().parents[2]


def _decode(path: Path) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy()


@pytest.fixture(scope="session")
def small(tmp_path_factory) -> dict[str, Path]:
    return syn.make_all(tmp_path_factory.mktemp("synthetic"), seed=0, small=True)


# ------------------------------------------------------------------------------------------------ in memory
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sequence_masks_match_rendered_pixels(seed):
    size, t_len = (64, 96), 12
    frames, masks = syn.render_sequence(seed, t_len, size, num_objects=3)
    assert frames.shape == (t_len, *size, 3) and frames.dtype == np.uint8
    assert masks.shape == (t_len, *size) and masks.dtype == np.uint8
    scene = syn.make_sequence_scene(seed, t_len, size, 3)
    depth = {label: i for i, label in enumerate(scene.z_order)}
    background, _ = syn.render_sequence(seed, t_len, size, only=[])
    assert np.array_equal(frames[masks == 0], background[masks == 0])
    for sprite in scene.sprites:
        k = sprite.label
        own = masks == k
        assert own.any(), f"object {k} never visible"
        # independent of composition: every pixel labelled k carries one of object k's two texture tones
        tones = np.clip(np.rint(sprite.colors), 0, 255).astype(np.uint8)
        assert (frames[own][:, None, :] == tones[None]).all(-1).any(-1).all()
        alone, alone_mask = syn.render_sequence(seed, t_len, size, only=[k])
        assert np.array_equal(frames[own], alone[own])
        assert not (own & (alone_mask != k)).any()
        hidden = (alone_mask == k) & ~own  # where k would be but is not: only objects in front of it
        assert all(depth[int(o)] > depth[k] for o in np.unique(masks[hidden]))


def test_sequences_do_occlude():
    """The occlusion checks above are not vacuous: objects do hide each other in these seeds."""
    hidden = 0
    for seed in range(4):
        scene = syn.make_sequence_scene(seed, 12, (64, 96), 3)
        _, masks = syn.render_sequence(seed, 12, (64, 96))
        for s in scene.sprites:
            hidden += int(((syn.render_sequence(seed, 12, (64, 96), only=[s.label])[1] == s.label) & (masks != s.label))
                          .sum())
    assert hidden > 100


def _actor_agreement(take: dict, shift: int = 0) -> np.ndarray:
    """(V,T) bool: view v at frame t+shift shows the actor (mask and colour) at the actor's world position at t."""
    frames, masks = take["frames"], take["masks"]
    v_len, t_len, h, w = masks.shape
    tone = take["actor_colors"][0] / np.linalg.norm(take["actor_colors"][0])
    ok = np.zeros((v_len, t_len), bool)
    for v in range(v_len):
        for t in range(max(0, -shift), min(t_len, t_len - shift)):
            x, y = take["object_state"][t, 0, :2]
            p = take["world_to_view"][v] @ [x, y, 1.0]
            px, py = int(np.floor(p[0] / p[2])), int(np.floor(p[1] / p[2]))
            assert 0 <= px < w and 0 <= py < h
            patch = frames[v, t + shift, py - 1 : py + 2, px - 1 : px + 2].reshape(-1, 3).astype(float)
            color = (np.median(patch, 0) - take["bias"][v]) / take["gain"][v]
            cos = color @ tone / np.linalg.norm(color)
            ok[v, t] = masks[v, t + shift, py, px] == 1 and cos > 0.97
    return ok


def test_take_views_are_synchronised():
    take = syn.render_take(5, num_cameras=3, num_frames=24, size=(96, 128), action=0, num_classes=3, segment=(4, 20))
    assert take["frames"].shape == (3, 24, 96, 128, 3) and take["masks"].shape == (3, 24, 96, 128)
    assert take["object_state"].shape[:2] == (24, 3)
    assert not np.allclose(take["world_to_view"][0], take["world_to_view"][1])  # distinct viewpoints
    assert _actor_agreement(take).all()
    # sensitivity: pairing each state with a later frame of the views breaks the agreement during the action
    assert not _actor_agreement(take, shift=4)[:, 4:16].all()


def test_take_action_only_inside_segment_and_classes_differ():
    trajectories = []
    for action in range(3):
        take = syn.render_take(7, num_cameras=1, num_frames=30, action=action, num_classes=3, segment=(10, 25))
        state = take["object_state"][:, 0]
        assert take["segment"] == (10, 25) and take["label"] == action and take["label_name"] == syn.ACTIONS[action]
        assert np.allclose(state[:11], state[0]) and np.allclose(state[25:], state[0])  # idle outside
        assert np.abs(np.diff(state[10:25], axis=0)).max() > 1.0  # moving inside
        trajectories.append(state[10:25])
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(trajectories[a] - trajectories[b]).max() > 5.0
    for action in range(len(syn.ACTIONS)):
        d = action_offsets(action, np.array([0.0, 1.0]), amplitude=10)
        assert np.allclose(d[:, :2], 0, atol=1e-9) and np.allclose(d[:, 3], 1)  # continuous at the segment bounds
        assert np.allclose(np.exp(1j * d[:, 2]), 1)  # angle: whole turns


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"action": 3, "num_classes": 3}, "action must be in 0..2"),
        ({"num_classes": 9}, "num_classes must be in 1..6"),
        ({"segment": (10, 5)}, "segment must satisfy"),
        ({"num_cameras": 0}, "num_cameras must be >= 1"),
    ],
)
def test_take_bad_input_is_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        syn.render_take(0, num_frames=8, **kwargs)
    assert "\n" not in str(info.value)


def test_write_video_rejects_odd_size(tmp_path):
    with pytest.raises(ValueError, match="even height and width"):
        syn.write_video(tmp_path / "x.mp4", np.zeros((2, 15, 16, 3), np.uint8))
    assert not (tmp_path / "x.mp4").exists()


# ------------------------------------------------------------------------------------------------ on disk
def test_kinetics_csv_parses_back_to_the_files(small):
    root = small["kinetics"]
    for split in ("train", "val"):
        with open(root / f"{split}.csv", newline="") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames == ["label", "youtube_id", "time_start", "time_end", "split"]
            rows = list(reader)
        assert len(rows) == 3 * 3 and {r["split"] for r in rows} == {split}
        assert {r["label"] for r in rows} == set(syn.ACTIONS[:3])
        assert all(len(r["youtube_id"]) == 11 for r in rows)
        from_csv = {
            root / split / r["label"] / f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}.mp4"
            for r in rows
        }
        assert from_csv == set((root / split).rglob("*.mp4"))
    clip = sorted((root / "train").rglob("*.mp4"))[0]
    assert _decode(clip).shape == (32, 128, 128, 3)


def test_davis_layout_reads_back(small):
    root = small["davis"]
    names = (root / "ImageSets/2017/val.txt").read_text().split()
    assert names == ["synth-000", "synth-001", "synth-002"]
    palette = syn.davis_palette()
    assert palette[3:9] == [128, 0, 0, 0, 128, 0]  # DAVIS: object 1 red, object 2 green
    for i, name in enumerate(names):
        frames, masks = syn.render_sequence(syn.child_seed(0, 1, i), 24, (128, 128), num_objects=2 + i % 3)
        jpgs = sorted((root / "JPEGImages/480p" / name).glob("*.jpg"))
        pngs = sorted((root / "Annotations/480p" / name).glob("*.png"))
        assert [p.name for p in jpgs] == [f"{t:05d}.jpg" for t in range(24)]
        assert [p.stem for p in pngs] == [p.stem for p in jpgs]
        for t in (0, 23):
            png = Image.open(pngs[t])
            assert png.mode == "P" and png.getpalette()[:30] == palette[:30]
            assert np.array_equal(np.array(png), masks[t])
            jpg = np.asarray(Image.open(jpgs[t]).convert("RGB"), dtype=float)
            assert np.abs(jpg - frames[t]).mean() < 4  # JPEG q95 on fine noise textures
        assert set(np.unique(masks)) == set(range(3 + i % 3))
        decoded = _decode(root / "videos" / f"{name}.mp4")
        assert decoded.shape == (24, 128, 128, 3)
        assert np.abs(decoded.astype(float) - frames).mean() < 4


def test_takes_annotation_and_offsets_align_views(small):
    root = small["takes"]
    takes = sorted(p for p in root.iterdir() if p.is_dir())
    assert [p.name for p in takes] == [f"take-{i:03d}" for i in range(6)]
    any_offset = False
    for i, folder in enumerate(takes[:3]):
        ann = json.loads((folder / "annotation.json").read_text())
        assert ann["fps"] == 25 and set(ann["sync_offsets"]) == {"cam0", "cam1", "cam2"}
        (seg,) = ann["segments"]
        assert seg["label"] == syn.ACTIONS[i % 3] and 0 <= seg["start"] < seg["end"] <= 48
        offsets = ann["sync_offsets"]
        any_offset |= any(offsets.values())
        lead = max(offsets.values())
        ref = syn.render_take(syn.child_seed(0, 3, i), 3, 48 + lead, (128, 128), action=i % 3, num_classes=3,
                              segment=(seg["start"] + lead, seg["end"] + lead))["frames"][:, lead:]
        for k in range(3):
            video = _decode(folder / f"cam{k}.mp4")
            assert len(video) == 48 + offsets[f"cam{k}"]
            aligned = video[offsets[f"cam{k}"] :].astype(float)  # own frame i + offset = common instant i
            assert np.abs(aligned - ref[k]).mean() < 5
            for t in range(2, 46):  # each aligned frame matches its own instant better than its neighbours
                errors = [np.abs(aligned[t] - ref[k, t + d]).mean() for d in (-2, -1, 0, 1, 2)]
                assert int(np.argmin(errors)) == 2, (folder.name, k, t, errors)
    assert any_offset, "take-001 must have a camera out of sync"


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    def run(name: str, seed: int) -> dict[str, bytes]:
        out = tmp_path / name
        syn.write_davis(out / "davis", seed, num_sequences=1, num_frames=6, size=(64, 64))
        syn.write_kinetics(out / "kinetics", seed, classes=2, clips_per_class=1, num_frames=6, size=(64, 64))
        syn.write_takes(out / "takes", seed, num_takes=2, num_cameras=2, num_frames=8, size=(64, 64))
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    a, b, c = run("a", 0), run("b", 0), run("c", 1)
    assert a == b
    videos = [k for k in a if k.endswith(".mp4") and k in c]
    assert videos and all(a[k] != c[k] for k in videos)
    assert a["kinetics/train.csv"] != c["kinetics/train.csv"]


def test_replaces_own_output_but_never_a_foreign_folder(tmp_path):
    out = syn.write_takes(tmp_path / "takes", 0, num_takes=1, num_cameras=1, num_frames=4, size=(32, 32))
    (out / "stale.txt").write_text("from an older run")
    syn.write_takes(out, 1, num_takes=1, num_cameras=1, num_frames=4, size=(32, 32))
    assert not (out / "stale.txt").exists() and (out / "take-000/cam0.mp4").is_file()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="refusing to replace"):
        syn.write_takes(foreign, 0, num_takes=1, num_cameras=1, num_frames=4, size=(32, 32))
    assert (foreign / "notes.txt").read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == [
        "mine", "takes"]


def test_cli_writes_and_reports_errors_in_one_line(tmp_path, capsys):
    assert syn.main(["--out", str(tmp_path), "--what", "davis", "--seed", "3"]) == 0
    assert "davis:" in capsys.readouterr().out and (tmp_path / "davis/ImageSets/2017/val.txt").is_file()
    proc = subprocess.run([sys.executable, str(REPO / "tools/make_synthetic.py"), "--out", str(tmp_path),
                           "--what", "davis,imagenet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2  # an input error
    expected = "error: unknown data set ['imagenet']; choose from davis, kinetics, takes"
    assert proc.stderr.strip().splitlines() == [expected]


def test_takes_without_distractors_hold_only_the_actor(tmp_path):
    """``num_distractors=0``: the take's one object is the actor, the set records it (so its ground truth can be
    re-rendered), and outside its segment nothing in a view moves but the camera noise."""
    root = syn.write_takes(tmp_path / "takes", seed=2, num_takes=1, num_cameras=2, num_classes=1, num_frames=16,
                           size=(48, 48), num_distractors=0)
    assert json.loads((root / syn.MARKER).read_text())["num_distractors"] == 0
    take, _ = syn.render_synced_take(2, 0, 2, 1, 16, (48, 48), num_distractors=0)
    assert take["object_state"].shape[1] == 1 and take["masks"].max() == 1
    start = take["segment"][0]
    still = take["frames"][:, :start].astype(float)
    assert start >= 2 and np.abs(still - still.mean(1, keepdims=True)).mean() < 6  # noise std 2-5 only
    with_others, _ = syn.render_synced_take(2, 0, 2, 1, 16, (48, 48))
    moving = with_others["frames"][:, :start].astype(float)
    assert np.abs(moving - moving.mean(1, keepdims=True)).mean() > np.abs(still - still.mean(1, keepdims=True)).mean()


def test_segment_fraction_sets_how_much_of_each_take_is_action(tmp_path):
    """Each take's action segment spans a share of the timeline drawn from ``segment_fraction`` (recorded in the set,
    so its ground truth can be re-rendered); the default keeps the 40-70 % of the sets written before it existed."""
    root = syn.write_takes(tmp_path / "takes", seed=4, num_takes=4, num_cameras=1, num_classes=2, num_frames=40,
                           size=(32, 32), segment_fraction=(0.9, 1.0))
    assert json.loads((root / syn.MARKER).read_text())["segment_fraction"] == [0.9, 1.0]
    for take in sorted(root.glob("take-*")):
        segment = json.loads((take / "annotation.json").read_text())["segments"][0]
        assert segment["start"] >= 0 and segment["end"] <= 40 and segment["end"] - segment["start"] >= 36
    lengths = [np.subtract(*syn.render_synced_take(4, i, 1, 2, 40, (32, 32))[0]["segment"][::-1]) for i in range(4)]
    assert all(16 <= n <= 28 for n in lengths)
    with pytest.raises(ValueError, match="segment_fraction"):
        syn.render_synced_take(4, 0, 1, 2, 40, (32, 32), segment_fraction=(0.8, 0.5))
