"""The packer: shard schema read back with plain webdataset, labels, splits, real videos, resumability, bad input."""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from ssl_video.config import PackConfig, SuperpixelConfig
from ssl_video.packing import cli
from ssl_video.packing import shards as packing
from ssl_video.packing.inputs import Item, PackError, frame_labels, stratified_split
from ssl_video.packing.video import decode_bytes

SP = {"algos": {"slic": {"n_segments": 16, "start_label": 0}}, "frame_stride": 8}


def _samples(shard_set: Path) -> tuple[dict, list[dict]]:
    manifest = json.loads((shard_set / "manifest.json").read_text())
    for shard in manifest["shards"]:
        assert hashlib.sha256((shard_set / shard["name"]).read_bytes()).hexdigest() == shard["sha256"]
    urls = [str(shard_set / s["name"]) for s in manifest["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False)) if urls else []
    assert len(samples) == manifest["packed"] == sum(s["samples"] for s in manifest["shards"])
    assert manifest["inputs"] == manifest["packed"] + len(manifest["failed"])
    return manifest, samples


def _raw(path: Path) -> np.ndarray:
    """Independent decode of a source video (frames as stored; the fixtures keep the native size and rate)."""
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _check_superpixels(frames: np.ndarray, npz: bytes, meta: dict, source: np.ndarray | None = None) -> None:
    """Maps have the decoded frames' HxW and contiguous labels; with ``source`` (the input frames the packed frames
    were made from, aligned), they equal superpixels recomputed on the listed frames: right frames, right place."""
    from ssl_video.superpixels.segment import segment

    labels = np.load(io.BytesIO(npz))["labels"]
    sp = meta["superpixels"]["slic"]
    index = sp["frame_index"]
    assert labels.dtype == np.uint16 and labels.shape == (len(index), *frames.shape[1:3])
    assert index == list(range(0, meta["num_frames"], SP_STRIDE[meta["dataset"]]))
    for lab in labels:
        assert set(np.unique(lab)) == set(range(int(lab.max()) + 1))
    if source is not None:
        np.testing.assert_array_equal(labels, segment(source[index], "slic", **sp["params"]))


SP_STRIDE = {"kinetics": 4, "takes": 4, "filelist": 100}


def test_kinetics_shards_schema(kinetics_shards, synthetic_root):
    classes = None
    for split in ("train", "val"):
        manifest, samples = _samples(kinetics_shards / split)
        assert manifest["packed"] == 9 and manifest["failed"] == [] and len(manifest["shards"]) == 3
        classes = classes or manifest["classes"]
        assert manifest["classes"] == classes == sorted({s["json"] and json.loads(s["json"])["label"] for s in samples})
        for s in samples:
            meta = json.loads(s["json"])
            assert set(s) >= {"mp4", "json", "sp.slic.npz"}
            assert Path(meta["source"]).parts[:2] == (split, meta["label"])  # the class folder it came from
            assert classes[meta["label_idx"]] == meta["label"] and meta["views"] == 1
            frames = decode_bytes(s["mp4"])
            assert frames.shape == (meta["num_frames"], meta["height"], meta["width"], 3) == (32, 128, 128, 3)
            _check_superpixels(frames, s["sp.slic.npz"], meta, _raw(synthetic_root / "kinetics" / meta["source"])
                               if s is samples[0] else None)


def _independent_labels(ann: dict, start: int, n: int, ratio: float = 0.15) -> list[str]:
    out = []
    for t in range(start, start + n):
        name = "background"
        for seg in ann["segments"]:
            edge = math.floor(ratio * (seg["end"] - seg["start"]) + 0.5)
            if seg["start"] + edge <= t < seg["end"] - edge:
                name = seg["label"]
        out.append(name)
    return out


def test_takes_shards_schema_labels_and_sync(takes_shards, synthetic_root):
    takes_root = synthetic_root / "takes"
    seen = []
    for split, count in (("train", 4), ("val", 1), ("test", 1)):
        manifest, samples = _samples(takes_shards / split)
        assert manifest["packed"] == count and manifest["classes"][0] == "background"
        for s in samples:
            meta = json.loads(s["json"])
            seen.append(meta["source"])
            ann = json.loads((takes_root / meta["source"] / "annotation.json").read_text())
            assert meta["views"] == 3 and meta["cameras"] == ["cam0", "cam1", "cam2"]
            assert meta["frame_labels"] == _independent_labels(ann, meta["timeline_start"], meta["num_frames"])
            assert [manifest["classes"][i] for i in meta["frame_label_idx"]] == meta["frame_labels"]
            assert meta["label"] == ann["segments"][0]["label"]
            for v, cam in enumerate(meta["cameras"]):
                frames = decode_bytes(s[f"view{v}.mp4"])
                assert frames.shape == (meta["num_frames"], meta["height"], meta["width"], 3)
                # synchronised: view frame i is the camera's own frame i + offset (decoded independently)
                raw = _raw(takes_root / meta["source"] / f"{cam}.mp4")
                first = meta["timeline_start"] + ann["sync_offsets"][cam]
                _check_superpixels(frames, s[f"view{v}.sp.slic.npz"], meta, raw[first:first + meta["num_frames"]])
                raw = raw.astype(float)
                n = min(meta["num_frames"], len(raw) - first - 1)  # compare frames 1..n-1 under shifts -1, 0, +1
                err = {d: np.abs(raw[first + 1 + d:first + n + d] - frames[1:n]).mean() for d in (-1, 0, 1)}
                assert err[0] < 0.9 * min(err[-1], err[1])
    assert sorted(seen) == sorted(p.name for p in takes_root.iterdir() if p.is_dir())  # each take once, views whole


def test_frame_labels_background_rule():
    segs = [{"start": 10, "end": 30, "label": "throw"}]
    labels = frame_labels(segs, 0, 40, 25.0, 25.0, 0.15)
    assert [i for i, x in enumerate(labels) if x == "throw"] == list(range(13, 27))  # 15% of 20 = 3 each side
    assert frame_labels(segs, 5, 10, 25.0, 25.0, 0.0) == ["background"] * 5 + ["throw"] * 5
    # output at 50 fps over an annotation at 25 fps: every annotation frame covers two output frames
    assert frame_labels(segs, 0, 80, 50.0, 25.0, 0.15) == [x for x in labels for _ in range(2)]


def test_stratified_split_by_class():
    items = [Item(f"t{c}{i}", "", f"c{c}", [], "") for c in range(3) for i in range(10)]
    parts = stratified_split(items, [0.7, 0.2, 0.1], seed=0)
    for c in range(3):
        assert [sum(x.label == f"c{c}" for x in p) for p in parts] == [7, 2, 1]
    assert sorted(x.key for p in parts for x in p) == sorted(x.key for x in items)
    assert [[x.key for x in p] for p in parts] == [[x.key for x in p] for p in stratified_split(items, [7, 2, 1], 0)]


def _cfg(out: Path, **kw) -> PackConfig:
    return PackConfig(output=str(out), short_side=kw.pop("short_side", 64), fps=25.0, **kw)


def test_real_videos(shared_videos, tmp_path):
    import av

    names = ["corrupted.mp4", "demo.mp4", "flipping_a_pancake.mkv", "h265_video.mp4", "rotated_90.mov", "test.avi"]
    (tmp_path / "list.txt").write_text("".join(f"{n}\n" for n in names))
    sp = {"algos": {"slic": {"n_segments": 16, "start_label": 0, "frame_stride": 100}}, "frame_stride": 1}
    cfg = _cfg(tmp_path / "out", kind="filelist", input=str(shared_videos), annotations=str(tmp_path / "list.txt"),
               short_side=128, max_frames=0, workers=2)
    packing.pack(cfg, SuperpixelConfig(**sp), progress=False)
    manifest, samples = _samples(tmp_path / "out" / "train")
    assert manifest["inputs"] == 6 and manifest["packed"] == 5
    assert [f["input"] for f in manifest["failed"]] == ["corrupted.mp4"]
    assert "decoding failed" in manifest["failed"][0]["reason"]
    for s in samples:
        meta = json.loads(s["json"])
        with av.open(str(shared_videos / meta["source"])) as c:
            rate = float(c.streams.video[0].average_rate)
            n_src = sum(1 for _ in c.decode(video=0))
        frames = decode_bytes(s["mp4"])
        assert frames.shape[0] == meta["num_frames"] == math.floor(n_src * 25 / rate + 0.5)
        assert min(frames.shape[1:3]) == 128
        if meta["source"] == "rotated_90.mov":
            assert frames.shape[1:3] == (228, 128)  # portrait: 320x568 turned upright, short side 128
        np.load(io.BytesIO(s["sp.slic.npz"]))  # every sample carries its maps
        assert meta["superpixels"]["slic"]["frame_index"] == list(range(0, meta["num_frames"], 100))


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("shard-*.tar"))}


def test_killed_run_resumes_to_identical_shards(synthetic_root, tmp_path):
    kin = synthetic_root / "kinetics"
    sp = SuperpixelConfig(**SP)

    def cfg(out):
        return _cfg(out, kind="kinetics", input=str(kin), annotations=str(kin / "train.csv"), shard_size=3)

    packing.pack(cfg(tmp_path / "full"), sp, progress=False)
    full = _hashes(tmp_path / "full" / "train")
    assert len(full) == 3

    def kill(split, index):
        raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        packing.pack(cfg(tmp_path / "resumed"), sp, progress=False, after_shard=kill)
    assert list(_hashes(tmp_path / "resumed" / "train")) == ["shard-000000.tar"]
    assert not (tmp_path / "resumed" / "train" / "manifest.json").exists()
    written = []
    packing.pack(cfg(tmp_path / "resumed"), sp, progress=False, after_shard=lambda s, i: written.append(i))
    assert written == [1, 2]  # the finished shard was verified, not redone
    assert _hashes(tmp_path / "resumed" / "train") == full
    # a damaged shard fails verification and is packed again, identically
    shard = tmp_path / "resumed" / "train" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:-1024])
    written.clear()
    manifest = packing.pack(cfg(tmp_path / "resumed"), sp, progress=False, after_shard=lambda s, i: written.append(i))
    assert written == [1] and _hashes(tmp_path / "resumed" / "train") == full
    assert {s["name"]: s["sha256"] for s in manifest["train"]["shards"]} == full


def _copy_takes(src: Path, dst: Path, names: list[str]) -> Path:
    for n in names:
        shutil.copytree(src / n, dst / n)
    return dst


def test_bad_takes_are_listed_and_the_run_goes_on(synthetic_root, tmp_path):
    root = _copy_takes(synthetic_root / "takes", tmp_path / "takes", ["take-000", "take-001", "take-002"])
    (root / "take-001" / "annotation.json").write_text('{"fps": 25, "segments": [{"start": 5}]')
    ann = json.loads((root / "take-002" / "annotation.json").read_text())
    ann["sync_offsets"]["cam1"] = 500  # past the end of cam1: no common frame
    (root / "take-002" / "annotation.json").write_text(json.dumps(ann))
    cfg = _cfg(tmp_path / "out", kind="takes", input=str(root), shard_size=2, split_ratios=[1.0])
    summary = packing.pack(cfg, SuperpixelConfig(**SP), progress=False)["train"]
    reasons = {f["input"]: f["reason"] for f in summary["failed"]}
    assert summary["packed"] == 1 and summary["inputs"] == 3
    assert reasons["take-001"].startswith("malformed annotation") and "\n" not in reasons["take-001"]
    assert "views cannot be aligned" in reasons["take-002"]


def test_cli_errors_and_exit_codes(shared_videos, tmp_path, capsys):
    assert cli.main(["pack.input=/nonexistent/root", f"pack.output={tmp_path}/o", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: input root not found: /nonexistent/root"
    (tmp_path / "bad.csv").write_text("label,ytid\nx,y\n")
    (tmp_path / "root").mkdir()
    assert cli.main([f"pack.input={tmp_path}/root", f"pack.annotations={tmp_path}/bad.csv", "--no-progress"]) == 2
    assert "missing column(s) time_end, time_start, youtube_id" in capsys.readouterr().err
    base = [f"pack.input={shared_videos}", "pack.kind=filelist", "pack.short_side=32", "pack.max_frames=0",
            "--no-progress", "superpixels.frame_stride=4"]
    (tmp_path / "one_bad.txt").write_text("corrupted.mp4\n")
    (tmp_path / "mixed.txt").write_text("corrupted.mp4\nh265_video.mp4\n")
    assert cli.main(base + [f"pack.annotations={tmp_path}/one_bad.txt", f"pack.output={tmp_path}/a"]) == 2
    assert "error: nothing could be packed for split train" in capsys.readouterr().err
    assert not (tmp_path / "a" / "train" / "manifest.json").exists()  # a zero-shard manifest would crash training
    assert cli.main(base + [f"pack.annotations={tmp_path}/mixed.txt", f"pack.output={tmp_path}/b"]) == 0
    out = capsys.readouterr().out
    assert "train: 1 packed, 1 failed of 2 inputs" in out
    assert cli.main(base + [f"pack.annotations={tmp_path}/mixed.txt", f"pack.output={tmp_path}/b", "--strict"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: 1 inputs failed (--strict)"


def test_missing_root_raises_pack_error(tmp_path):
    with pytest.raises(PackError, match="input root not found"):
        packing.pack(_cfg(tmp_path / "o", kind="takes", input=str(tmp_path / "nope")), SuperpixelConfig(**SP))


def test_npz_bytes_deterministic_and_loadable():
    labels = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    data = packing.npz_bytes(labels)
    assert data == packing.npz_bytes(labels.copy())
    np.testing.assert_array_equal(np.load(io.BytesIO(data))["labels"], labels)


def test_kinetics_tree_without_csv_and_csv_rows_without_file(synthetic_root, tmp_path):
    kin = synthetic_root / "kinetics"
    sp = SuperpixelConfig(**SP)
    tree = packing.pack(_cfg(tmp_path / "tree", kind="kinetics", input=str(kin), max_frames=8), sp, progress=False)
    assert sorted(tree) == ["train", "val"] and all(m["packed"] == 9 for m in tree.values())
    _, samples = _samples(tmp_path / "tree" / "val")
    for s in samples:
        meta = json.loads(s["json"])
        assert meta["num_frames"] == 8 and Path(meta["source"]).parts[1] == meta["label"]
    rows = (kin / "val.csv").read_text().splitlines()
    (tmp_path / "val.csv").write_text("\n".join(rows + ["circle,NOSUCHVIDEO,1,11,val"]) + "\n")
    listed = packing.pack(_cfg(tmp_path / "csv", kind="kinetics", input=str(kin), annotations=str(tmp_path / "val.csv"),
                               max_frames=8), sp, progress=False)
    assert list(listed) == ["val"]
    assert listed["val"]["packed"] == 9 and listed["val"]["inputs"] == 10
    assert listed["val"]["failed"][0]["input"] == "val/circle/NOSUCHVIDEO_000001_000011"


def test_cli_killed_with_sigkill_resumes_to_identical_shards(synthetic_root, tmp_path):
    """The real thing: make_shards.py with 2 workers, SIGKILLed once a shard exists, then rerun."""
    import os
    import signal
    import subprocess
    import sys
    import time

    kin = synthetic_root / "kinetics"
    args = [sys.executable, str(Path(__file__).resolve().parents[2] / "tools" / "make_shards.py"), "pack.kind=kinetics",
            f"pack.input={kin}", f"pack.annotations={kin / 'train.csv'}", "pack.short_side=64", "pack.shard_size=2",
            "superpixels.frame_stride=8", "--workers", "2", "--no-progress"]
    packing.pack(_cfg(tmp_path / "full", kind="kinetics", input=str(kin), annotations=str(kin / "train.csv"),
                      shard_size=2), SuperpixelConfig(algos=SuperpixelConfig().algos, frame_stride=8), progress=False)
    proc = subprocess.Popen(args + [f"pack.output={tmp_path / 'killed'}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    first = tmp_path / "killed" / "train" / "shard-000000.tar"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the packer and its workers, as a cluster job being pre-empted
    proc.wait()
    assert first.exists() and not (tmp_path / "killed" / "train" / "manifest.json").exists()
    assert subprocess.run(args + [f"pack.output={tmp_path / 'killed'}"], capture_output=True).returncode == 0
    assert _hashes(tmp_path / "killed" / "train") == _hashes(tmp_path / "full" / "train")


def test_superpixel_plan_null_drops_an_algorithm_and_strides_override():
    from ssl_video.config import load_config
    from ssl_video.packing.shards import PackError, sp_plan

    cfg = load_config(["superpixels.algos.slic=null", "superpixels.algos.slic_fast.n_segments=32",
                       "superpixels.algos.slic_fast.frame_stride=2"])
    plan = sp_plan(cfg.superpixels)
    assert plan == {"slic_fast": (2, {"n_segments": 32})}
    default = sp_plan(load_config([]).superpixels)
    assert set(default) == {"slic"} and default["slic"][0] == 1
    with pytest.raises(PackError, match="frame_stride for slic must be >= 1"):
        sp_plan({"algos": {"slic": {"frame_stride": 0}}})
