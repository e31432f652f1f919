"""The label-trained reference encoder: cell labels and loss against naive computations, bad input, and the check it
exists for: on the synthetic DAVIS set a trained encoder scores clearly above a randomly initialised one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl_video.config import BackboneConfig
from ssl_video.eval import davis
from ssl_video.experiments.supervised_correspondence import cell_labels, dense_supcon_loss, train_reference
from ssl_video.models.backbones import build_backbone
from ssl_video.synthetic.generate import child_seed, render_sequence
from tests.helpers import write_checkpoint


def test_cell_labels_are_the_majority_of_each_block_smaller_id_on_ties():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 4, (3, 20, 21))
    masks[0, :8, :8] = 0
    masks[0, :8, :4] = 2  # an exact tie 32/32 between 0 and 2 in the first cell: 0 wins
    got = cell_labels(torch.from_numpy(masks), stride=8).numpy()
    assert got.shape == (3, 3, 3)  # ceil(20/8), ceil(21/8): partial blocks are cells too
    for n in range(3):
        for i in range(3):
            for j in range(3):
                block = masks[n, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8].ravel()
                assert got[n, i, j] == np.argmax(np.bincount(block)), (n, i, j)
    assert got[0, 0, 0] == 0


def test_dense_supcon_loss_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    fa = F.normalize(torch.randn(2, 5, 3, 4, generator=g), dim=1)
    fb = F.normalize(torch.randn(2, 5, 3, 4, generator=g), dim=1)
    ya, yb = torch.randint(0, 3, (2, 3, 4), generator=g), torch.randint(0, 3, (2, 3, 4), generator=g)
    ya[0, 0, 0] = 7  # a label absent from b: that cell is skipped
    tau = 0.2
    per_pair = []
    for n in range(2):
        qa, qb = fa[n].reshape(5, -1).T.double(), fb[n].reshape(5, -1).T.double()
        la, lb = ya[n].ravel().tolist(), yb[n].ravel().tolist()
        cells = []
        for i in range(len(la)):
            logits = [float(qa[i] @ qb[j]) / tau for j in range(len(lb))]
            log_z = np.log(sum(np.exp(v) for v in logits))
            pos = [logits[j] - log_z for j in range(len(lb)) if lb[j] == la[i]]
            if pos:
                cells.append(-sum(pos) / len(pos))
        per_pair.append(sum(cells) / len(cells))
    expected = sum(per_pair) / 2
    assert dense_supcon_loss(fa, fb, ya, yb, tau).item() == pytest.approx(expected, rel=1e-5)


def test_bad_arguments_and_a_backbone_of_the_wrong_stride_are_one_line_errors():
    seq = render_sequence(1, 4, (64, 64), num_objects=2)
    with pytest.raises(ValueError, match="steps"):
        train_reference(build_backbone(BackboneConfig(name="resnet18_s8")), [seq], -1, show_progress=False)
    with pytest.raises(ValueError, match="resnet18_s8"):
        train_reference(build_backbone(BackboneConfig(name="resnet18")), [seq], 1, show_progress=False)


def _jf_of(root, checkpoint, out) -> float:
    assert davis.main(["--davis", str(root), "--checkpoint", str(checkpoint), "--out", str(out),
                       "eval.davis.save_png=false"]) == 0
    header, values = (out / "global_results-val.csv").read_text().splitlines()[:2]
    return float(values.split(",")[header.split(",").index("J&F-Mean")])


@pytest.mark.slow
def test_trained_encoder_scores_clearly_above_random_init(synthetic_root, tmp_path):
    # Training sequences come from other seeds than the evaluated set (make_all seed 0): nothing evaluated is trained
    # on. The trained weights go through a training checkpoint and the CLI, as a researcher's would.
    torch.manual_seed(0)
    sequences = [render_sequence(child_seed(1, 7, i), 24, (128, 128), num_objects=2 + i % 3) for i in range(6)]
    backbone = build_backbone(BackboneConfig(name="resnet18_s8"))
    losses = train_reference(backbone, sequences, steps=80, seed=0, show_progress=False)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    ckpt = tmp_path / "reference.pt"
    write_checkpoint(ckpt, backbone.state_dict())
    root = synthetic_root / "davis"
    trained = _jf_of(root, ckpt, tmp_path / "trained")
    random_init = _jf_of(root, "random", tmp_path / "random")
    assert trained > 0.65
    assert trained > random_init + 0.15, (trained, random_init)
