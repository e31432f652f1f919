"""Packing split into contiguous shard ranges (what ``--slurm`` array tasks run) and merged: the same shards and
manifests as one local run, resumable per task, the merge refusing to write a manifest while a range is missing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ssl_video.config import PackConfig, SuperpixelConfig
from ssl_video.packing import shards as packing
from ssl_video.packing.inputs import PackError
from ssl_video.packing.sample import plain
from ssl_video.packing.slurm import MergeJob, PackTask, submit_jobs

SP = SuperpixelConfig(algos={"slic": {"n_segments": 16, "start_label": 0}}, frame_stride=8)


@pytest.mark.parametrize("sizes, tasks", [([3, 3, 3, 2], 2), ([2] * 10, 3), ([5], 4), ([1, 1], 2), ([], 2)])
def test_task_ranges_cover_every_shard_once_in_order_and_balance_inputs(sizes, tasks):
    ranges = packing.task_ranges(sizes, tasks)
    assert len(ranges) == tasks
    assert [i for r in ranges for i in r] == list(range(len(sizes)))  # contiguous, in order, each shard once
    total = sum(sizes)
    for r in ranges:  # a task's inputs differ from its fair share by less than one shard
        assert abs(sum(sizes[i] for i in r) - total / tasks) <= max(sizes, default=0)
    if total >= tasks and len(sizes) >= tasks and len(set(sizes)) == 1:
        assert all(len(r) for r in ranges)


def _cfg(kin: Path, out: Path) -> PackConfig:
    return PackConfig(output=str(out), kind="kinetics", input=str(kin), annotations=f"{kin / 'train.csv'},"
                      f"{kin / 'val.csv'}", short_side=64, max_frames=16, shard_size=2)


def _shards(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.tar"))}


def _manifests(out: Path) -> dict[str, dict]:
    return {split: json.loads((out / split / "manifest.json").read_text()) for split in ("train", "val")}


def test_tasks_then_merge_equal_one_local_run(synthetic_root, tmp_path):
    kin = synthetic_root / "kinetics"
    local = packing.pack(_cfg(kin, tmp_path / "local"), SP, progress=False)
    assert sum(len(m["shards"]) for m in local.values()) == 10
    cfg = plain(_cfg(kin, tmp_path / "tasks"))
    results = [PackTask(cfg, plain(SP), k, 3)() for k in range(3)]  # what each array task runs
    done = [(split, name) for r in results for split, m in r.items() for name in m["shards"]]
    assert len(done) == len(set(done)) == 10  # every shard packed by exactly one task
    assert [sorted(r) for r in results] == [["train"], ["train", "val"], ["val"]]  # a range may cross splits
    assert not list((tmp_path / "tasks").rglob("manifest.json"))  # tasks write no manifest
    merged = MergeJob(cfg, plain(SP))()
    assert merged == {s: {"packed": 9, "failed": 0, "truncated": 0, "shards": 5} for s in ("train", "val")}
    assert _shards(tmp_path / "tasks") == _shards(tmp_path / "local")  # byte-identical shards
    a, b = _manifests(tmp_path / "tasks"), _manifests(tmp_path / "local")
    for m in (a, b):
        for split in m:
            m[split]["config"]["pack"].pop("output")
    assert a == b


def test_merge_waits_for_every_range_and_tasks_resume(synthetic_root, tmp_path):
    kin = synthetic_root / "kinetics"
    cfg = _cfg(kin, tmp_path / "out")
    packing.pack(cfg, SP, progress=False, task=(0, 2))
    with pytest.raises(PackError, match=r"5 shard\(s\) not packed yet \(first: val/shard-000000\)"):
        packing.merge(cfg, SP)
    assert not list((tmp_path / "out").rglob("manifest.json"))
    written = []
    packing.pack(cfg, SP, progress=False, task=(0, 2), after_shard=lambda s, i: written.append((s, i)))
    assert written == []  # a requeued task verifies its finished shards and packs nothing again
    packing.pack(cfg, SP, progress=False, task=(1, 2), after_shard=lambda s, i: written.append((s, i)))
    assert written == [("val", i) for i in range(5)]
    assert {s: m["packed"] for s, m in packing.merge(cfg, SP).items()} == {"train": 9, "val": 9}


def test_submitit_array_runs_the_tasks(synthetic_root, tmp_path):
    """The submission path itself (array of pickled PackTasks) on submitit's in-process debug executor."""
    kin = synthetic_root / "kinetics"
    cfg = plain(_cfg(kin, tmp_path / "out"))
    jobs, merge_job = submit_jobs(cfg, plain(SP), 2, tmp_path / "logs", {"timeout_min": 5}, cluster="debug")
    assert merge_job is None and len(jobs) == 2
    assert [sorted(j.result()) for j in jobs] == [["train"], ["val"]]
    assert {s: m["packed"] for s, m in packing.merge(cfg, plain(SP)).items()} == {"train": 9, "val": 9}


def test_cli_task_ranges_by_hand_then_merge(shared_videos, tmp_path, capsys):
    from ssl_video.packing import cli

    (tmp_path / "list.txt").write_text("h265_video.mp4\nrotated_90.mov\n")
    args = ["pack.kind=filelist", f"pack.input={shared_videos}", f"pack.annotations={tmp_path / 'list.txt'}",
            f"pack.output={tmp_path / 'out'}", "pack.short_side=32", "superpixels.frame_stride=1000",
            "--shard-size", "1", "--no-progress"]
    assert cli.main(args + ["--merge"]) == 2  # nothing packed yet: no manifest
    assert "error: 2 shard(s) not packed yet (first: train/shard-000000)" in capsys.readouterr().err
    assert cli.main(args + ["--task", "1/2"]) == 0 and cli.main(args + ["--task", "0/2"]) == 0
    assert not (tmp_path / "out" / "train" / "manifest.json").exists()
    assert cli.main(args + ["--merge"]) == 0
    assert "train: 2 packed, 0 failed of 2 inputs, 2 shards" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "train" / "manifest.json").read_text())["packed"] == 2
