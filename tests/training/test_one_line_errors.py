"""``python -m ssl_video.train`` (its ``main``): every foreseeable user / data / environment error is one ``error:``
line on stderr, exit status 2, no traceback, and it comes before the config dump."""

from __future__ import annotations

import json

import pytest

from ssl_video.train import main
from tests.helpers import tiny_train_args


def _fails(args, capsys) -> tuple[str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    assert info.value.code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and err.count("error: ") == 1
    assert "optim:" not in out  # the config dump comes after setup and the first batch
    return last, out


def test_shard_set_with_zero_shards(kinetics_shards, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({"shards": []}))
    args = tiny_train_args(kinetics_shards, tmp_path / "run", 2)
    args = [a if not a.startswith("data.root=") else f"data.root={empty}" for a in args]
    last, _ = _fails(args, capsys)
    assert "lists no shards" in last and str(empty) in last


def test_too_many_bad_samples_in_a_loader_worker(kinetics_shards, tmp_path, capsys):
    # maps of an algorithm the shards were not packed with: every sample is bad; the worker's error comes back once
    args = tiny_train_args(kinetics_shards, tmp_path / "run", 2, "data.superpixels=felzenszwalb", "data.skip_limit=2",
                           "data.num_workers=1")  # fmt: skip
    last, _ = _fails(args, capsys)
    assert "2 bad samples in a row" in last


def test_overflowing_learning_rate(kinetics_shards, tmp_path, capsys):
    last, _ = _fails(tiny_train_args(kinetics_shards, tmp_path / "run", 4, "optim.lr=1e39"), capsys)
    assert "optim.lr=1e+39" in last and "float32" in last


def test_checkpoint_of_another_method(kinetics_shards, tmp_path, capsys):
    main(tiny_train_args(kinetics_shards, tmp_path / "run", 1))
    capsys.readouterr()
    last, _ = _fails(tiny_train_args(kinetics_shards, tmp_path / "run", 1, "method=walk_patch"), capsys)
    assert "method.name walk_superpixel -> walk_patch" in last


def test_unknown_config_key(kinetics_shards, tmp_path, capsys):
    last, _ = _fails(tiny_train_args(kinetics_shards, tmp_path / "run", 1, "train.stpes=3"), capsys)
    assert "train.stpes" in last
