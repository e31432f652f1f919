"""tools/gpu_report.py in its dry (CPU) mode: every section runs, the JSON and the markdown hold what they should,
missing packages and an exhausted budget skip with a reason, bad arguments give one error line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tools" / "gpu_report.py"
SECTIONS = ("walk", "walk_equal_batch", "reference", "two_view", "slic", "loader", "davis", "gpu_tests")


def _run(tmp_path: Path, *args: str, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (pythonpath, str(REPO)) if p),
           "CUDA_VISIBLE_DEVICES": ""}  # the dry run, even on a machine with a GPU
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), *args], capture_output=True,
                          text=True, env=env, timeout=1200)


@pytest.mark.slow
def test_dry_run_measures_every_section_and_writes_json_and_markdown(tmp_path):
    # a budget no machine load can exhaust: the test checks the structure, not the speed of the machine
    proc = _run(tmp_path, "--dry", "--budget-s", "3000", "--compile", "off")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "gpu_report.json").read_text())
    assert data["dry"] is True and data["device"]["kind"] == "cpu" and data["device"]["torch"]
    sections = data["sections"]
    assert list(sections) == [*SECTIONS, "compile"]
    for name in SECTIONS:
        assert sections[name]["status"] == "ok", (name, sections[name])
    assert sections["compile"] == {"status": "skipped", "reason": "--compile off"}

    walk = {r["method"]: r for r in sections["walk"]["rows"]}
    assert set(walk) == {"walk_patch", "walk_superpixel", "walk_mixed"}
    for row in walk.values():
        # the dry run's stand-in for device memory: batches up to 2 "fit", so the search must land on 2
        assert row["largest_batch"] == 2 and row["batch"] == 2 and row["largest_batch_how"] == "bisected"
        assert row["flops"] > 0 and row["step_s"] > 0
        # clips_per_s is rounded to 2 decimals: under load (steps of seconds) that is more than 1 %
        assert row["clips_per_s"] == pytest.approx(row["batch"] / row["step_s"], abs=0.006)
    assert walk["walk_superpixel"]["flops"] < walk["walk_patch"]["flops"]  # one pass per frame vs one per patch

    equal = sections["walk_equal_batch"]
    steps = {r["method"]: r["step_s"] for r in equal["rows"]}
    assert equal["ratio_superpixel_over_patch"] == pytest.approx(steps["walk_superpixel"] / steps["walk_patch"],
                                                                 abs=1e-3)
    ref = sections["reference"]
    assert ref["speedup_ours_over_reference"] == pytest.approx(ref["reference"]["step_s"] / ref["ours"]["step_s"],
                                                               abs=0.01)
    # same encoder, patches and batch: the same arithmetic, up to the walk's few small products
    assert ref["reference"]["flops"] == pytest.approx(ref["ours"]["flops"], rel=0.02)
    pairs = {(r["method"], r["backbone"]) for r in sections["two_view"]["rows"]}
    assert {m for m, _ in pairs} == {"moco", "simclr", "byol", "simsiam"}
    assert {b for _, b in pairs} == {"resnet18", "resnet18_gru", "x3d_xs"}
    assert sections["slic"]["frames_per_s"] > 0 and sections["slic"]["mean_segments"] > 1
    assert 0 <= sections["loader"]["data_wait_fraction"] <= 1 and sections["loader"]["clips_per_s"] > 0
    assert sections["davis"]["frames_per_s"] > 0 and 0 <= sections["davis"]["J&F-Mean"] <= 1
    assert sections["gpu_tests"]["exit_code"] == 0 and "skipped" in sections["gpu_tests"]["summary"]
    assert all(g["met"] is None for g in data["goals"]) and data["goals"]  # goals are judged on a GPU only

    md = (tmp_path / "gpu_report.md").read_text()
    assert md.startswith("# GPU report (dry run")
    for name in SECTIONS:
        assert f"## {name}: ok" in md
    assert "| walk_patch | 2 | 2 |" in md and "| moco | resnet18 |" in md
    assert md in proc.stdout  # the table is printed too


def test_missing_package_and_exhausted_budget_skip_with_a_reason(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "webdataset.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'webdataset'\", name='webdataset')\n")
    proc = _run(tmp_path / "a", "--dry", "--sections", "loader", "--budget-s", "600", "--compile", "off",
                pythonpath=str(blocker))
    assert proc.returncode == 0, proc.stderr[-2000:]
    loader = json.loads((tmp_path / "a" / "gpu_report.json").read_text())["sections"]["loader"]
    assert loader["status"] == "skipped" and loader["reason"] == "missing package: webdataset"

    proc = _run(tmp_path / "b", "--dry", "--sections", "slic,davis", "--budget-s", "0.01")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "b" / "gpu_report.json").read_text())
    for name in ("slic", "davis", "compile"):
        assert data["sections"][name]["status"] == "skipped" and data["sections"][name]["reason"]
    assert "out of time" in data["sections"]["slic"]["reason"]
    assert "## slic: skipped" in (tmp_path / "b" / "gpu_report.md").read_text()


def test_bad_arguments_end_with_one_error_line(tmp_path):
    proc = _run(tmp_path, "--sections", "walk,nope")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: unknown section 'nope'; choose from walk, walk_equal_batch, reference, two_view, slic, loader, davis, "
        "gpu_tests")
    assert not (tmp_path / "gpu_report.json").exists()
