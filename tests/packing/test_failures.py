"""make_shards on bad input: truncated files are packed and flagged, nothing-packed splits leave no manifest, and every
foreseeable user/input/environment error is one ``error:`` line with exit status 2."""

from __future__ import annotations

import errno
import json
import math
import shutil
from pathlib import Path

import pytest
import webdataset as wds

from ssl_video.packing import cli
from ssl_video.packing import shards as packing

FAST = ["pack.kind=filelist", "pack.short_side=32", "pack.max_frames=0", "superpixels.frame_stride=1000",
        "--no-progress"]


def _av_facts(path: Path) -> tuple[int, float, float]:
    """(frames that decode, stream rate, container duration in s), read with PyAV directly."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        n = 0
        try:
            for _ in c.decode(stream):
                n += 1
        except av.error.FFmpegError:
            pass
        return n, float(stream.average_rate), c.duration / 1e6


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_truncated_file_is_packed_flagged_and_counted(shared_videos, tmp_path, capsys):
    src = shared_videos / "flipping_a_pancake.mkv"
    (tmp_path / "in").mkdir()
    shutil.copy(src, tmp_path / "in" / "whole.mkv")
    (tmp_path / "in" / "cut.mkv").write_bytes(src.read_bytes()[:200_000])  # a partial download: header intact
    (tmp_path / "list.txt").write_text("whole.mkv\ncut.mkv\n")
    args = FAST + [f"pack.input={tmp_path / 'in'}", f"pack.annotations={tmp_path / 'list.txt'}",
                   f"pack.output={tmp_path / 'out'}"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "train: 2 packed (1 truncated), 0 failed of 2 inputs" in out

    manifest = json.loads((tmp_path / "out" / "train" / "manifest.json").read_text())
    metas = {}
    for s in wds.WebDataset([str(tmp_path / "out" / "train" / x["name"]) for x in manifest["shards"]],
                            shardshuffle=False):
        meta = json.loads(s["json"])
        metas[meta["source"]] = meta
    for name, meta in metas.items():
        decoded, rate, seconds = _av_facts(tmp_path / "in" / name)
        assert meta["num_frames"] == math.floor(decoded * 25 / rate + 0.5)
        assert meta["declared_frames"] == math.floor(seconds * 25 + 0.5)
    assert metas["whole.mkv"]["truncated"] is False  # 258 of 260 declared: within the tolerance
    cut = metas["cut.mkv"]
    assert cut["truncated"] is True and cut["num_frames"] < cut["declared_frames"] / 2
    assert manifest["truncated"] == [{"input": "cut.mkv", "key": "cut", "frames": cut["num_frames"],
                                      "declared_frames": cut["declared_frames"]}]
    assert f"truncated: cut.mkv: {cut['num_frames']} of {cut['declared_frames']} declared frames" in out


def test_truncation_tolerance():
    from ssl_video.packing.video import is_truncated

    assert not is_truncated(258, 260) and is_truncated(117, 260) and not is_truncated(5, None)
    assert not is_truncated(100, 260, cap=100)  # a cap below the declared length: nothing is missing
    assert is_truncated(90, 260, cap=100)


def test_folder_without_videos_is_one_error_line(tmp_path, capsys):
    (tmp_path / "in" / "train" / "cls").mkdir(parents=True)
    (tmp_path / "in" / "train" / "cls" / "notes.txt").write_text("not a video")
    code = cli.main([f"pack.input={tmp_path / 'in'}", f"pack.output={tmp_path / 'out'}", "--no-progress"])
    assert code == 2
    assert _one_error_line(capsys.readouterr().err).startswith("error: no inputs found for pack.kind=kinetics")
    assert not list(tmp_path.rglob("manifest.json"))


def test_split_where_every_input_fails_leaves_no_manifest(shared_videos, tmp_path, capsys):
    (tmp_path / "list.txt").write_text("corrupted.mp4\n")
    out = tmp_path / "out" / "train"
    out.mkdir(parents=True)
    (out / "manifest.json").write_text("{}")  # stale, from an earlier run: must not survive
    args = FAST + [f"pack.input={shared_videos}", f"pack.annotations={tmp_path / 'list.txt'}",
                   f"pack.output={tmp_path / 'out'}"]
    assert cli.main(args) == 2
    line = _one_error_line(capsys.readouterr().err.replace("failed: corrupted.mp4", "", 1).split("\n", 1)[1])
    assert "nothing could be packed for split train (1 inputs failed)" in line
    assert not (out / "manifest.json").exists()
    failed = json.loads((out / ".pack" / "failed.json").read_text())
    assert [f["input"] for f in failed["failed"]] == ["corrupted.mp4"] and failed["shards"] == []


@pytest.mark.parametrize("extra, message", [
    (["pack.preset=warpspeed"], "x264 rejects pack.preset=warpspeed"),
    (["superpixels.algos.slic_fast.n_segmentz=3"], "superpixels.algos.slic_fast: "),
    (["superpixels.algos.watershed={}"], "superpixels.algos.watershed: ValueError: unknown superpixel algorithm"),
    (["pack.fps=0"], "pack.fps must be > 0, got 0.0"),
    (["pack.shard_size=0"], "pack.shard_size must be >= 1, got 0"),
    (["pack.kind=youtube"], "config key 'pack.kind' got 'youtube'"),
    (["pack.nosuchkey=1"], "nosuchkey"),
    (["--task", "2/2"], "--task 2/2: need 0 <= K < N"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--slurm", "--nodes", "0"], "--nodes, --cpus-per-task, --mem-gb and --time must be >= 1"),
])
def test_settings_errors_are_one_line_exit_2(shared_videos, tmp_path, capsys, extra, message):
    (tmp_path / "list.txt").write_text("h265_video.mp4\n")
    args = FAST + [f"pack.input={shared_videos}", f"pack.annotations={tmp_path / 'list.txt'}",
                   f"pack.output={tmp_path / 'out'}"]
    assert _exit_code(args + extra) == 2
    assert message in _one_error_line(capsys.readouterr().err)
    assert not list((tmp_path).rglob("*.tar"))


def _exit_code(args: list[str]) -> int:
    try:
        return cli.main(args)
    except SystemExit as exc:  # argparse's errors exit from inside main
        return exc.code


def test_output_that_is_a_file_is_one_line(shared_videos, tmp_path, capsys):
    (tmp_path / "list.txt").write_text("h265_video.mp4\n")
    (tmp_path / "out").write_text("a file, not a folder")
    args = FAST + [f"pack.input={shared_videos}", f"pack.annotations={tmp_path / 'list.txt'}",
                   f"pack.output={tmp_path / 'out'}"]
    assert cli.main(args) == 2
    assert str(tmp_path / "out") in _one_error_line(capsys.readouterr().err)


def test_full_disk_is_one_line_and_leaves_no_partial_shard(shared_videos, tmp_path, capsys, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(packing.os, "fsync", no_space)
    (tmp_path / "list.txt").write_text("h265_video.mp4\n")
    args = FAST + [f"pack.input={shared_videos}", f"pack.annotations={tmp_path / 'list.txt'}",
                   f"pack.output={tmp_path / 'out'}"]
    assert cli.main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"error: No space left on device (packing into {tmp_path / 'out'})"
    assert [p.name for p in (tmp_path / "out" / "train").rglob("*") if p.is_file()] == []


def test_ctrl_c_is_one_line_and_keeps_finished_shards(shared_videos, tmp_path, capsys, monkeypatch):
    calls = []
    real = packing.work

    def interrupted(task):
        calls.append(task)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(packing, "work", interrupted)
    (tmp_path / "list.txt").write_text("h265_video.mp4\nrotated_90.mov\n")
    args = FAST + [f"pack.input={shared_videos}", f"pack.annotations={tmp_path / 'list.txt'}",
                   f"pack.output={tmp_path / 'out'}", "--shard-size", "1"]
    assert cli.main(args) == 130
    err = capsys.readouterr().err.strip()
    assert err == "interrupted: finished shards are kept; rerun the same command to resume"
    assert len(list((tmp_path / "out" / "train").glob("shard-*.tar"))) == 1
    monkeypatch.setattr(packing, "work", real)
    assert cli.main(args) == 0
    assert json.loads((tmp_path / "out" / "train" / "manifest.json").read_text())["packed"] == 2


def _remux_mkv(src: Path, dst: Path) -> None:
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="matroska") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)


def test_truncated_view_of_a_take_is_flagged_per_view(synthetic_root, tmp_path):
    from ssl_video.config import PackConfig, SuperpixelConfig

    take = tmp_path / "takes" / "take-000"
    shutil.copytree(synthetic_root / "takes" / "take-000", take)
    _remux_mkv(take / "cam1.mp4", tmp_path / "cam1.mkv")
    (take / "cam1.mp4").unlink()
    data = (tmp_path / "cam1.mkv").read_bytes()
    (take / "cam1.mkv").write_bytes(data[: len(data) // 2])  # header (with its duration) kept, second half lost
    cfg = PackConfig(kind="takes", input=str(tmp_path / "takes"), output=str(tmp_path / "out"), short_side=64,
                     split_ratios=[1.0], max_frames=0)
    summary = packing.pack(cfg, SuperpixelConfig(algos={}), progress=False)["train"]
    assert summary["packed"] == 1
    (entry,) = summary["truncated"]
    whole, cut = entry["frames"][0], entry["frames"][1]
    assert entry["declared_frames"][1] == entry["declared_frames"][0] == whole  # the header still promises all
    assert cut < whole * 0.75 and entry["input"] == "take-000"
    shard = next((tmp_path / "out" / "train").glob("shard-*.tar"))
    meta = json.loads(next(iter(wds.WebDataset(str(shard), shardshuffle=False)))["json"])
    assert meta["truncated"] is True and meta["view_frames"] == entry["frames"]


def test_slurm_without_sbatch_is_one_line(shared_videos, tmp_path, capsys, monkeypatch):
    import ssl_video.packing.slurm as slurm

    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    (tmp_path / "list.txt").write_text("h265_video.mp4\n")
    args = FAST + [f"pack.input={shared_videos}", f"pack.annotations={tmp_path / 'list.txt'}",
                   f"pack.output={tmp_path / 'out'}", "--slurm", "--nodes", "2"]
    assert cli.main(args) == 2
    assert "--slurm needs SLURM's sbatch on PATH" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # spawns worker processes twice (imports torch in each)
def test_worker_killed_by_the_kernel_is_one_line(shared_videos, tmp_path, capsys, monkeypatch):
    """A worker SIGKILLed (what the OOM killer does) mid-run: one line, exit 2, and the rerun completes."""
    monkeypatch.setattr(packing, "work", _suicide)
    (tmp_path / "list.txt").write_text("h265_video.mp4\nrotated_90.mov\n")
    args = FAST + [f"pack.input={shared_videos}", f"pack.annotations={tmp_path / 'list.txt'}",
                   f"pack.output={tmp_path / 'out'}", "--workers", "2"]
    assert cli.main(args) == 2
    assert "a packing worker was killed (out of memory?)" in _one_error_line(capsys.readouterr().err)
    monkeypatch.undo()
    assert cli.main(args) == 0


def _suicide(task):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
