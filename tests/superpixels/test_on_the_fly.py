"""The on-the-fly walk benchmark: rows for walk_patch and the SLIC presets, superpixels made inside the step."""

from __future__ import annotations

import pytest
import torch


def test_superpixel_batch_is_contiguous_and_counted():
    from benchmarks.walk_superpixels_on_the_fly import rendered_clips, superpixel_batch

    clips = rendered_clips(2, 3, 64)
    batch = superpixel_batch(clips, 10)
    labels, counts = batch["superpixels"], batch["num_superpixels"]
    assert labels.shape == (2, 3, 64, 64) and counts.shape == (2, 3)
    for b in range(2):
        for t in range(3):
            assert torch.equal(torch.unique(labels[b, t]), torch.arange(int(counts[b, t])))


@pytest.mark.slow
def test_on_the_fly_rows_time_every_preset_against_patches():
    from benchmarks.walk_superpixels_on_the_fly import SLIC_PRESETS, on_the_fly_rows

    torch.set_num_threads(1)
    rows = on_the_fly_rows("cpu", batch=1, size=64, steps=1, frames=2)
    assert [r["row"] for r in rows] == ["walk_patch"] + [f"walk_superpixel SLIC-{n}" for n in SLIC_PRESETS]
    assert rows[0]["vs_patch"] == 1.0 and rows[0]["slic_s"] < rows[1]["slic_s"] + 1.0
    assert all(r["step_s"] > 0 and r["clips_per_s"] > 0 for r in rows)
    assert all(r["slic_s"] > 0 for r in rows[1:])  # superpixels were made inside the timed step
    nodes = [r["nodes_per_frame"] for r in rows[1:]]
    assert nodes[0] < nodes[1] < nodes[2]  # SLIC-10 < 30 < 50 nodes
