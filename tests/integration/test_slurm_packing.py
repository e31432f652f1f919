"""``tools/make_shards.py --slurm --nodes 2`` on a real two-node SLURM cluster: a two-task array on two nodes, a merge
job, shards byte-identical to a local run, and a rerun that repacks only a lost shard."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssl_video.config import load_config
from ssl_video.packing.shards import pack
from tests.integration.slurm_cluster import SlurmCluster, available

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SETTINGS = ["pack.kind=kinetics", "pack.short_side=64", "pack.max_frames=16", "pack.shard_size=2",
            "superpixels.algos.slic.n_segments=16", "superpixels.frame_stride=8"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = available()
    if reason:
        pytest.skip(f"no SLURM cluster: {reason}")
    c = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield c
    c.stop()


def _hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.tar"))}


def _inputs(kin: Path) -> list[str]:
    return [*SETTINGS, f"pack.input={kin}", f"pack.annotations={kin / 'train.csv'},{kin / 'val.csv'}"]


def _submit(cluster, kin: Path, out: Path, submitted: list[str]) -> tuple[str, str]:
    args = [sys.executable, "tools/make_shards.py", *_inputs(kin), f"pack.output={out}", "--slurm", "--nodes", "2",
            "--cpus-per-task", "1", "--mem-gb", "1", "--time", "10"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=cluster.env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    array, merge = re.search(r"array (\d+) \(2 tasks.*merge job (\d+)", proc.stdout).groups()
    submitted += [array, merge]
    return array, merge


def _wait_gone(cluster, job_ids: list[str], timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(cluster.job_state(j) for j in job_ids):
            return
        time.sleep(2)
    raise AssertionError(f"jobs {job_ids} still queued: {[cluster.job_state(j) for j in job_ids]}")


def _logs(out: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((out / ".slurm").rglob("*_log.*")))


def test_two_node_array_packs_the_same_shards_as_a_local_run_and_resumes(cluster, synthetic_root, tmp_path):
    kin = synthetic_root / "kinetics"
    local = load_config([*_inputs(kin), f"pack.output={tmp_path / 'local'}"])
    pack(local.pack, local.superpixels, progress=False)
    out, submitted = tmp_path / "slurm", []
    try:
        array, merge = _submit(cluster, kin, out, submitted)
        _wait_gone(cluster, [array, merge])
        logs = _logs(out)
        assert "make_shards task 0/2 on node n1" in logs and "make_shards task 1/2 on node n2" in logs, logs[-3000:]
        for split in ("train", "val"):
            manifest = json.loads((out / split / "manifest.json").read_text())
            local = json.loads((tmp_path / "local" / split / "manifest.json").read_text())
            assert manifest["shards"] == local["shards"] and manifest["packed"] == 9
        assert _hashes(out) == _hashes(tmp_path / "local")

        lost = out / "val" / "shard-000003.tar"
        lost.unlink()
        (out / "val" / "manifest.json").unlink()
        kept = {p: p.stat().st_mtime_ns for p in out.rglob("*.tar")}
        array, merge = _submit(cluster, kin, out, submitted)
        _wait_gone(cluster, [array, merge])
        assert _hashes(out) == _hashes(tmp_path / "local")  # the lost shard is back, identical
        assert {p: p.stat().st_mtime_ns for p in kept} == kept  # and nothing else was rewritten
        assert json.loads((out / "val" / "manifest.json").read_text())["packed"] == 9
    finally:
        for job in submitted:  # pass or fail, leave nothing queued or running
            cluster.run("scancel", job)
