"""DAVIS label propagation: the videowalk rules against a naive implementation, exact recovery with position codes,
an untrained encoder clearly below a correspondence oracle, the CLI's outputs, backbone loading, and BatchNorm
re-estimation (``--recompute-bn``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from ssl_video.config import DavisEvalConfig
from ssl_video.eval import davis, jf
from ssl_video.eval.common import load_backbone
from tests.helpers import write_checkpoint


def test_context_indices_pad_with_the_first_frame():
    assert davis.context_indices(3, 5) == [0, 0, 0, 0, 1, 2]
    assert davis.context_indices(30, 20) == [0, *range(10, 30)]
    assert davis.context_indices(1, 0) == [0]


def _naive_propagate(feats, first, context, radius, topk, temperature):
    """Per target location, list every context (frame, cell) candidate explicitly."""
    t_len, _, h, w = feats.shape
    labels = [first.reshape(first.shape[0], -1)]
    cells = [(y, x) for y in range(h) for x in range(w)]
    for t in range(1, t_len):
        ctx = [0] + [max(0, t - context + i) for i in range(context)]
        pred = torch.zeros_like(labels[0])
        for qi, (qy, qx) in enumerate(cells):
            cands = []
            for slot, frame in enumerate(ctx):
                for ki, (ky, kx) in enumerate(cells):
                    far = ((ky - qy) ** 2 + (kx - qx) ** 2) ** 0.5 >= radius
                    if slot > 0 and far:
                        continue
                    sim = float(feats[frame, :, ky, kx] @ feats[t, :, qy, qx])
                    cands.append((sim / temperature, labels[frame][:, ki]))
            cands.sort(key=lambda c: -c[0])
            top = cands[:topk]
            weights = torch.softmax(torch.tensor([c[0] for c in top], dtype=torch.float64), 0)
            pred[:, qi] = sum(wt * lab for wt, (_, lab) in zip(weights, top))
        labels.append(pred)
    return torch.stack(labels).view(t_len, -1, h, w)


def test_propagate_matches_naive_implementation():
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(6, 8, 4, 5, generator=g, dtype=torch.float64), dim=1)
    first = torch.softmax(torch.randn(3, 4, 5, generator=g, dtype=torch.float64) * 3, 0)
    kw = {"context": 3, "radius": 2.0, "topk": 4, "temperature": 0.1}
    fast = davis.propagate(feats, first, query_chunk=7, **kw)  # chunks that do not divide h*w
    np.testing.assert_allclose(fast.numpy(), _naive_propagate(feats, first, **kw).numpy(), atol=1e-10)


def _rolling_video(t_len=10, cells=16, cell=8):
    """A torus scene that shifts one cell right and down per frame; position codes = one-hot of the scene cell.

    Returns frames (unused pixels), pixel masks, cell masks and the codes ``(T, cells², cells, cells)``.
    """
    mask0 = np.zeros((cells, cells), np.uint8)
    mask0[2:6, 3:9] = 1
    mask0[9:14, 8:12] = 2
    mask0[7:9, 0:3] = 3
    code0 = np.arange(cells * cells).reshape(cells, cells)
    cell_masks = np.stack([np.roll(mask0, (t, t), (0, 1)) for t in range(t_len)])
    codes = np.stack([np.roll(code0, (t, t), (0, 1)) for t in range(t_len)])
    masks = cell_masks.repeat(cell, 1).repeat(cell, 2)
    feats = F.one_hot(torch.from_numpy(codes), cells * cells).permute(0, 3, 1, 2).float()
    frames = np.zeros((*masks.shape, 3), np.uint8)  # pixels unused: the injected features carry the motion
    return frames, masks, cell_masks, feats


def test_exact_position_codes_recover_ground_truth():
    frames, masks, cell_masks, feats = _rolling_video()
    first = F.one_hot(torch.from_numpy(cell_masks[0]).long(), 4).permute(2, 0, 1).float()
    soft = davis.propagate(feats, first)
    expected = F.one_hot(torch.from_numpy(cell_masks).long(), 4).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(soft, expected, atol=1e-6, rtol=0)  # every frame, every cell, exactly
    pred = davis.segment_sequence(frames, masks[0], lambda _: feats)
    # pixels: bilinear upsampling + argmax (the protocol's) only rounds off the objects' convex corners
    assert (pred == masks).mean() > 0.99
    table = jf.summarize({"roll": jf.evaluate_sequence(masks, pred)})
    assert table["J-Mean"] > 0.95 and table["F-Mean"] > 0.95
    copy = jf.summarize({"roll": jf.evaluate_sequence(masks, np.repeat(masks[:1], len(masks), 0))})
    assert copy["J&F-Mean"] < 0.5  # the motion matters: copying the first frame is far from the truth


def _colour_oracle(sigma=0.1, dim=256, seed=0):
    """Documented oracle, not a learned model: random Fourier features of each cell's mean colour, whose cosine
    similarity approximates a Gaussian kernel on colour. The synthetic objects have distinctive colours, so this
    feature carries correspondence by construction; an encoder that has learnt correspondence should match it."""
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(dim, 3, generator=g), torch.rand(dim, 1, 1, generator=g) * 2 * np.pi

    def fn(frames):
        x = F.avg_pool2d(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255, 8, ceil_mode=True)
        return torch.cos(torch.einsum("dc,tchw->tdhw", w, x / sigma) + b)

    return fn


@pytest.mark.slow
def test_random_encoder_clearly_below_correspondence_oracle(synthetic_root):
    torch.manual_seed(0)
    cfg = OmegaConf.structured(DavisEvalConfig(save_png=False))
    root = synthetic_root / "davis"
    oracle, _ = davis.evaluate(root, _colour_oracle(), cfg, show_progress=False)
    backbone, _ = load_backbone("random", "resnet18_s8")
    random_enc, rows = davis.evaluate(root, davis.encoder_features(backbone), cfg, show_progress=False)
    assert len(rows) >= 3
    assert oracle["J&F-Mean"] > 0.7
    assert oracle["J&F-Mean"] > random_enc["J&F-Mean"] + 0.15


def test_cli_writes_official_layout_and_tables(synthetic_root, tmp_path, capsys):
    from PIL import Image

    torch.manual_seed(1)
    net, _ = load_backbone("random", "resnet18_s8")
    ckpt = tmp_path / "step_00000007.pt"
    write_checkpoint(ckpt, net.state_dict())
    out = tmp_path / "out"
    rc = davis.main(["--davis", str(synthetic_root / "davis"), "--checkpoint", str(ckpt), "--out", str(out),
                     "eval.davis.max_sequences=1", "eval.davis.vis_sequences=1"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "J&F-Mean" in stdout and "synth-000_1" in stdout
    gt_dir = synthetic_root / "davis" / "Annotations" / "480p" / "synth-000"
    pngs = sorted((out / "val" / "synth-000").glob("*.png"))
    assert [p.name for p in pngs] == sorted(p.name for p in gt_dir.glob("*.png"))
    first = Image.open(pngs[0])
    assert first.mode == "P"
    np.testing.assert_array_equal(np.asarray(first), np.asarray(Image.open(gt_dir / pngs[0].name)))
    header = (out / "global_results-val.csv").read_text().splitlines()[0]
    assert header.split(",") == list(jf.MEASURES)
    assert (out / "per-sequence_results-val.csv").read_text().startswith("Sequence,J-Mean,F-Mean")
    assert any((out / "tb").iterdir())


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    rc = davis.main(["--davis", str(tmp_path), "--checkpoint", "random"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and err.startswith("error:") and "ImageSets" in err and "\n" not in err
    rc = davis.main(["--davis", str(tmp_path), "--checkpoint", "random", "eval.davis.topk=0"])
    assert rc != 0 and "topk" in capsys.readouterr().err


def test_load_backbone_from_checkpoint_export_and_gru(tmp_path):
    import torchvision

    from ssl_video.config import BackboneConfig
    from ssl_video.models import build_backbone

    torch.manual_seed(2)
    src = build_backbone(BackboneConfig(name="resnet18_s8"))
    ckpt = tmp_path / "ckpt.pt"
    write_checkpoint(ckpt, src.state_dict())
    net, info = load_backbone(ckpt)
    assert info["backbone"] == "resnet18_s8" and net.stride8  # the checkpoint's own backbone by default
    torch.testing.assert_close(net.layer3[0].conv1.weight, src.layer3[0].conv1.weight)

    export = tmp_path / "export.pt"
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), export)  # torchvision names, fc included (ignored)
    net, info = load_backbone(export, "resnet18_s8")
    torch.testing.assert_close(net.conv1.weight, tv.conv1.weight)

    gru = build_backbone(BackboneConfig(name="resnet18_gru"))
    gru_ckpt = tmp_path / "gru.pt"
    write_checkpoint(gru_ckpt, gru.state_dict(), "resnet18_gru")
    net, _ = load_backbone(gru_ckpt, "resnet18")  # the per-frame trunk of a GRU checkpoint
    torch.testing.assert_close(net.layer1[0].conv1.weight, gru.frame_encoder.layer1[0].conv1.weight)

    with pytest.raises(ValueError, match="not found"):
        load_backbone(tmp_path / "missing.pt")
    torch.save({"something": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not fit backbone"):
        load_backbone(tmp_path / "other.pt", "resnet18")


def _imagenet(frames):
    from ssl_video.normalise import IMAGENET_MEAN, IMAGENET_STD

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def test_recompute_bn_averages_the_frames_statistics_and_forgets_the_old_ones():
    torch.manual_seed(3)
    net, _ = load_backbone("random", "resnet18_s8")
    spoilt, _ = load_backbone("random", "resnet18_s8")
    spoilt.load_state_dict(net.state_dict())
    for m in spoilt.modules():  # what a few steps on tiny batches can leave behind
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.add_(5.0), m.running_var.mul_(1e-3), m.num_batches_tracked.fill_(40)
    layer4_before = spoilt.layer4[1].bn2.running_var.clone()
    videos = list(np.random.default_rng(0).integers(0, 256, (2, 3, 24, 32, 3), dtype=np.uint8))
    assert davis.recompute_bn(net, videos, "layer3", batch=3) == 6
    assert davis.recompute_bn(spoilt, iter(videos), "layer3", batch=3) == 6
    assert not net.training and net.bn1.momentum == 0.1  # eval mode, momentum restored
    with torch.no_grad():  # the first BN: the mean over batches (one video each) of each batch's statistics
        y = [net.conv1(_imagenet(v)) for v in videos]
    torch.testing.assert_close(net.bn1.running_mean, torch.stack([b.mean((0, 2, 3)) for b in y]).mean(0))
    torch.testing.assert_close(net.bn1.running_var, torch.stack([b.var((0, 2, 3)) for b in y]).mean(0))
    for name, value in net.state_dict().items():  # the old statistics leave no trace up to layer3
        if not name.startswith("layer4"):
            torch.testing.assert_close(spoilt.state_dict()[name], value, msg=name)
    torch.testing.assert_close(spoilt.layer4[1].bn2.running_var, layer4_before)  # after the stage: untouched


def test_cli_recompute_bn(synthetic_root, tmp_path, capsys):
    rc = davis.main(["--davis", str(synthetic_root / "davis"), "--checkpoint", "random", "--out", str(tmp_path),
                     "--recompute-bn", "eval.davis.max_sequences=1", "eval.davis.save_png=false"])
    assert rc == 0
    frames = len(list((synthetic_root / "davis" / "JPEGImages" / "480p" / "synth-000").glob("*.jpg")))
    assert f"re-estimated on {frames} frames of 1 sequences" in capsys.readouterr().out
