"""Cross-camera retrieval: perfect with an oracle of the instant, near chance with random features, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_video.eval import retrieval


def _embeddings(kind: str, takes=4, views=3, windows=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = {}
    for t in range(takes):
        for v in range(views):
            if kind == "oracle":  # one-hot of (take, window): the instant itself
                e = torch.zeros(windows, takes * windows)
                e[torch.arange(windows), t * windows + torch.arange(windows)] = 1
            else:
                e = torch.randn(windows, 16, generator=g)
            emb[(f"take-{t}", v)] = torch.nn.functional.normalize(e, dim=1)
    return emb


def test_oracle_of_the_instant_is_perfect():
    rows = retrieval.retrieval_scores(_embeddings("oracle"))
    assert len(rows) == 3 * 2 + 1 and rows[-1]["query_view"] == "all"
    assert all(r["top1"] == 1.0 and r["top5"] == 1.0 for r in rows)
    assert rows[-1]["queries"] == 6 * 4 * 9 and rows[-1]["gallery"] == 36


def test_random_features_are_near_chance():
    top1, top5 = [], []
    for seed in range(5):
        total = retrieval.retrieval_scores(_embeddings("random", seed=seed))[-1]
        top1.append(total["top1"])
        top5.append(total["top5"])
    assert total["chance1"] == pytest.approx(1 / 36) and total["chance5"] == pytest.approx(5 / 36)
    assert np.mean(top1) < 0.08 and np.mean(top5) < 0.25


def test_tolerance_accepts_neighbouring_windows():
    emb = _embeddings("oracle")
    shifted = {k: (torch.roll(v, 1, 0) if k[1] == 1 else v) for k, v in emb.items()}  # view 1 one window late
    strict = retrieval.retrieval_scores(shifted)[-1]["top1"]
    loose = retrieval.retrieval_scores(shifted, tolerance=1)[-1]["top1"]
    assert strict < 0.8 and loose > strict


def test_needs_two_views():
    with pytest.raises(ValueError, match="two views"):
        retrieval.retrieval_scores({("t", 0): torch.eye(3)})


def test_cli_on_synthetic_takes(takes_shards, tmp_path, capsys):
    out = tmp_path / "ret"
    rc = retrieval.main(["--shards", str(takes_shards), "--checkpoint", "random", "--out", str(out),
                         "eval.retrieval.split=val", "eval.retrieval.crop_size=32"])
    assert rc == 0
    assert "top1" in capsys.readouterr().out
    lines = (out / "retrieval.csv").read_text().splitlines()
    assert lines[0].startswith("query_view,gallery_view") and lines[-1].startswith("all,all")
