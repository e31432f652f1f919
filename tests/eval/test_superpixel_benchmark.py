"""The superpixel benchmark command on a tiny synthetic DAVIS set."""

from __future__ import annotations

import csv

import pytest

from ssl_video.eval.superpixel_benchmark import main
from ssl_video.synthetic.generate import write_davis


@pytest.fixture(scope="module")
def tiny_davis(tmp_path_factory):
    return write_davis(tmp_path_factory.mktemp("davis") / "davis", seed=0, num_sequences=2, num_frames=3,
                       size=(64, 64))


def test_benchmark_prints_all_algorithms_and_writes_csv(tiny_davis, tmp_path, capsys):
    out = tmp_path / "sp.csv"
    rc = main(["--davis", str(tiny_davis), "--out", str(out),
               "eval.params.runs.slic_fast.n_segments=16", "eval.params.runs.slic.n_segments=16"])
    assert rc == 0
    table = capsys.readouterr().out
    for name in ("slic_fast", "slic", "felzenszwalb", "quickshift"):
        assert any(line.split()[:1] == [name] for line in table.splitlines()), name
    rows = list(csv.DictReader(out.open()))
    assert [r["run"] for r in rows] == ["slic_fast", "slic", "felzenszwalb", "quickshift"]
    for r in rows:
        assert r["frames"] == "6"
        assert 0.0 <= float(r["br"]) <= 1.0 and 0.5 <= float(r["asa"]) <= 1.0 and float(r["ue"]) >= 0.0
        assert 0.0 <= float(r["J_mean"]) <= 1.0 and 0.0 <= float(r["F_mean"]) <= 1.0 and float(r["fps"]) > 0
    assert float(rows[0]["segments"]) <= 20  # the override reached slic_fast


def test_benchmark_errors_are_one_line(tiny_davis, tmp_path, capsys):
    assert main(["--davis", str(tmp_path / "missing")]) == 2
    assert main(["--davis", str(tiny_davis), "--algos", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
