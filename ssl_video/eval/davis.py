"""DAVIS-2017 label propagation: ``python -m ssl_video.eval.davis --davis <root> --checkpoint <ckpt> [key=value ...]``.

The videowalk protocol (Jabri et al. 2020, ``code/test.py``), every number an ``eval.davis.*`` config value:

- features: the stride-8 map after ``layer3`` of ``resnet18_s8`` on full-resolution frames (ImageNet-normalised),
  L2-normalised per location;
- context of target frame t: the first frame (its ground truth; any distance) plus frames t-20 … t-1 (indices below 0
  are the first frame again: videowalk pads the video with copies of it, restricted like the other recent frames);
- affinity = cosine similarity / temperature (0.05); recent context locations farther than ``radius`` (12) feature
  cells from the target location (Euclidean, strict) are excluded; the top 10 over the whole context are softmaxed and
  their soft labels averaged; the soft prediction is fed forward as that frame's label;
- labels: one-hot of the first frame's ids, bilinearly resized to the feature map; predictions bilinearly upsampled to
  the frame and arg-maxed back to ids.

BatchNorm statistics (``eval.davis.recompute_bn``, CLI ``--recompute-bn``; off by default, as in videowalk): when on,
every BN's running mean and variance is replaced by its average over all frames of the evaluated sequences (full
resolution, batches of 5, up to ``stage``) before propagation. It uses no labels but is transductive (the statistics
come from the target frames). Briefly trained encoders (a few hundred steps on small crops) can have running
statistics that collapse eval-mode features; a random encoder's are the identity (mean 0, variance 1). Compare
encoders with the same setting. Measured on the synthetic set (``python -m ssl_video.experiments.davis_training``):
random
``resnet18_s8`` layer3 J&F 0.491 without, 0.539 with.

Writes palette PNGs ``<out>/<split>/<seq>/<frame>.png`` (the layout davis2017-evaluation reads), the official tables
``global_results-<split>.csv`` / ``per-sequence_results-<split>.csv``, overlays and scores to TensorBoard
(``<out>/tb``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ssl_video.eval import jf
from ssl_video.eval.common import recompute_bn_stats

FeatureFn = Callable[[np.ndarray], torch.Tensor]  # (T, H, W, 3) uint8 -> (T, C, h, w) float


# ------------------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------------------
def sequence_names(root: str | Path, split: str = "val") -> list[str]:
    listing = Path(root) / "ImageSets" / "2017" / f"{split}.txt"
    if not listing.is_file():
        raise ValueError(f"not a DAVIS-2017 folder: {listing} not found")
    return [n.strip() for n in listing.read_text().splitlines() if n.strip()]


def read_sequence(root: str | Path, name: str, resolution: str = "480p") -> tuple[list[str], np.ndarray, np.ndarray,
                                                                                   list[int] | None]:
    """``(frame ids, frames (T,H,W,3) uint8, masks (T,H,W) uint8, palette)``; masks missing after frame 0 are 0."""
    from PIL import Image

    root = Path(root)
    jpgs = sorted((root / "JPEGImages" / resolution / name).glob("*.jpg"))
    if not jpgs:
        raise ValueError(f"sequence {name}: no frames under {root / 'JPEGImages' / resolution / name}")
    ann = root / "Annotations" / resolution / name
    first = ann / f"{jpgs[0].stem}.png"
    if not first.is_file():
        raise ValueError(f"sequence {name}: first-frame annotation {first} not found")
    palette = Image.open(first).getpalette()
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in jpgs])
    masks = np.zeros(frames.shape[:3], np.uint8)
    for t, p in enumerate(jpgs):
        png = ann / f"{p.stem}.png"
        if png.is_file():
            masks[t] = np.asarray(Image.open(png))
    return [p.stem for p in jpgs], frames, masks, palette


# ------------------------------------------------------------------------------------------------------------------
# Features and propagation
# ------------------------------------------------------------------------------------------------------------------
def _normalised_batches(videos: Iterable[np.ndarray], batch: int, device) -> Iterator[torch.Tensor]:
    """``(T, H, W, 3)`` uint8 arrays -> ImageNet-normalised ``(≤batch, 3, H, W)`` float batches on ``device``."""
    from ssl_video.normalise import normalise

    for video in videos:
        for i in range(0, len(video), batch):
            yield normalise(torch.from_numpy(np.ascontiguousarray(video[i : i + batch])).to(device).permute(0, 3, 1, 2))


def encoder_features(backbone: torch.nn.Module, stage: str = "layer3", device: torch.device | str = "cpu",
                     batch: int = 5) -> FeatureFn:
    """Feature function: ImageNet-normalised frames through ``backbone.forward_until(x, stage)``, on ``device``."""
    if not hasattr(backbone, "forward_until"):
        raise ValueError(f"backbone {type(backbone).__name__} has no forward_until (use resnet18_s8)")
    backbone = backbone.to(device).eval()

    @torch.no_grad()
    def fn(frames: np.ndarray) -> torch.Tensor:
        batches = _normalised_batches([frames], batch, device)
        return torch.cat([backbone.forward_until(x, stage).float() for x in batches])

    return fn


def recompute_bn(backbone: torch.nn.Module, frames: Iterator[np.ndarray] | Sequence[np.ndarray], stage: str = "layer3",
                 device: torch.device | str = "cpu", batch: int = 5) -> int:
    """Replace every BatchNorm's running statistics by their average over ``frames`` (then eval mode).

    ``frames``: ``(T, H, W, 3)`` uint8 arrays (e.g. every sequence of the evaluation), fed ImageNet-normalised through
    ``backbone.forward_until(x, stage)`` in batches of ``batch`` frames; each batch's statistics count equally
    (:func:`ssl_video.eval.common.recompute_bn_stats`). BNs after ``stage`` keep their statistics. Returns the number
    of frames seen.
    """
    if not hasattr(backbone, "forward_until"):
        raise ValueError(f"backbone {type(backbone).__name__} has no forward_until (use resnet18_s8)")
    backbone = backbone.to(device)
    return recompute_bn_stats(backbone, _normalised_batches(frames, batch, device),
                              lambda x: backbone.forward_until(x, stage))


def context_indices(t: int, context: int) -> list[int]:
    """Frames whose labels predict frame ``t``: the first frame, then t-context … t-1 with negatives mapped to 0."""
    return [0] + [max(0, t - context + i) for i in range(context)]


def _far_mask(h: int, w: int, query: slice, radius: float, device) -> torch.Tensor:
    """``(h*w, len(query))`` True where a key cell is at least ``radius`` cells from the query cell."""
    yy, xx = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).float()
    return torch.cdist(pos, pos[query]) >= radius


@torch.no_grad()
def propagate(feats: torch.Tensor, first_labels: torch.Tensor, *, context: int = 20, radius: float = 12.0,
              topk: int = 10, temperature: float = 0.05, query_chunk: int = 1024,
              progress: Callable[[], object] | None = None) -> torch.Tensor:
    """Propagate soft labels through a video.

    Args:
        feats: ``(T, C, h, w)`` L2-normalised features.
        first_labels: ``(K, h, w)`` soft labels of frame 0 (one-hot resized).
        progress: called once per propagated frame.

    Returns:
        ``(T, K, h, w)`` soft labels; frame 0 is ``first_labels``.
    """
    t_len, _, h, w = feats.shape
    k = first_labels.shape[0]
    hw = h * w
    keys_all = feats.flatten(2).transpose(1, 2)  # (T, hw, C)
    labels = torch.zeros(t_len, k, hw, dtype=feats.dtype, device=feats.device)
    labels[0] = first_labels.reshape(k, hw).to(feats)
    chunks = [slice(s, min(s + query_chunk, hw)) for s in range(0, hw, query_chunk)]
    far = [_far_mask(h, w, q, radius, feats.device) for q in chunks]
    for t in range(1, t_len):
        idx = context_indices(t, context)
        keys = keys_all[idx].reshape(-1, keys_all.shape[-1])  # (n_ctx * hw, C)
        ctx_labels = labels[idx].transpose(0, 1).reshape(k, -1)  # (K, n_ctx * hw)
        for q, far_q in zip(chunks, far):
            aff = keys @ keys_all[t, q].T  # (n_ctx * hw, q)
            aff = aff.view(len(idx), hw, -1)
            aff[1:].masked_fill_(far_q.unsqueeze(0), -1e10)  # the first frame (index 0) stays unrestricted
            aff = aff.view(-1, aff.shape[-1]) / temperature
            weights, ids = torch.topk(aff, min(topk, aff.shape[0]), dim=0)
            weights = torch.softmax(weights, dim=0)  # (topk, q)
            labels[t, :, q] = (ctx_labels[:, ids] * weights.unsqueeze(0)).sum(1)
        if progress is not None:
            progress()
    return labels.view(t_len, k, h, w)


def label_set(first_mask: np.ndarray) -> np.ndarray:
    """Ids present in the first frame (sorted; void 255 excluded), the classes of the propagation."""
    ids = np.unique(first_mask)
    return ids[ids != jf.VOID_LABEL]


def segment_sequence(frames: np.ndarray, first_mask: np.ndarray, feature_fn: FeatureFn, *, context: int = 20,
                     radius: float = 12.0, topk: int = 10, temperature: float = 0.05, query_chunk: int = 1024,
                     progress: Callable[[], object] | None = None) -> np.ndarray:
    """Predicted ``(T, H, W)`` id maps of a sequence from its frames and first-frame mask (frame 0 = ground truth)."""
    feats = F.normalize(feature_fn(frames), dim=1)
    h, w = feats.shape[-2:]
    ids = label_set(first_mask)
    onehot = torch.from_numpy(first_mask[None] == ids[:, None, None]).float().to(feats.device)
    small = F.interpolate(onehot[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    soft = propagate(feats, small, context=context, radius=radius, topk=topk, temperature=temperature,
                     query_chunk=query_chunk, progress=progress)
    big = F.interpolate(soft, size=frames.shape[1:3], mode="bilinear", align_corners=False)
    pred = ids[big.argmax(1).cpu().numpy()].astype(np.uint8)
    pred[0] = first_mask
    return pred


# ------------------------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------------------------
def save_pngs(folder: Path, frame_ids: Sequence[str], pred: np.ndarray, palette: list[int] | None) -> None:
    from PIL import Image

    if palette is None:
        from ssl_video.synthetic.generate import davis_palette

        palette = davis_palette()
    folder.mkdir(parents=True, exist_ok=True)
    for fid, p in zip(frame_ids, pred):
        img = Image.fromarray(p)
        img.putpalette(palette)
        img.save(folder / f"{fid}.png")


def overlay(frames: np.ndarray, masks: np.ndarray, palette: list[int] | None, n: int = 4) -> np.ndarray:
    """``(3, H, n*W)`` uint8 strip: ``n`` evenly spaced frames blended with their id maps."""
    if palette is None:
        from ssl_video.synthetic.generate import davis_palette

        palette = davis_palette()
    pal = np.asarray(palette[: 256 * 3], np.float32).reshape(-1, 3)
    picks = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    tiles = [np.where(masks[i, ..., None] > 0, 0.5 * frames[i] + 0.5 * pal[masks[i]], frames[i]) for i in picks]
    return np.concatenate(tiles, axis=1).astype(np.uint8).transpose(2, 0, 1)


def iter_sequences(root: str | Path, split: str, resolution: str, max_sequences: int = 0) -> Iterator[tuple]:
    for name in sequence_names(root, split)[: max_sequences or None]:
        yield (name, *read_sequence(root, name, resolution))


def evaluate(root: str | Path, feature_fn: FeatureFn, cfg, out_dir: str | Path | None = None, writer=None,
             step: int = 0, show_progress: bool = True) -> tuple[dict[str, float], list[dict]]:
    """Propagate and score every sequence of ``root``; ``cfg`` is an ``eval.davis`` node / DavisEvalConfig.

    Returns ``(global row, per-object rows)``; PNGs go under ``out_dir/<split>/<seq>/`` when ``cfg.save_png``.
    """
    from tqdm import tqdm

    _check(cfg)
    names = sequence_names(root, cfg.split)[: cfg.max_sequences or None]
    per_seq, rows = {}, []
    bar = tqdm(total=len(names), desc="davis", unit="seq", disable=not show_progress)
    for i, name in enumerate(names):
        frame_ids, frames, masks, palette = read_sequence(root, name, cfg.resolution)
        with tqdm(total=len(frames) - 1, desc=name, unit="frame", leave=False, disable=not show_progress) as inner:
            pred = segment_sequence(frames, masks[0], feature_fn, context=cfg.context, radius=cfg.radius,
                                    topk=cfg.topk, temperature=cfg.temperature, query_chunk=cfg.query_chunk,
                                    progress=inner.update)
        if out_dir is not None and cfg.save_png:
            save_pngs(Path(out_dir) / cfg.split / name, frame_ids, pred, palette)
        per_seq[name] = jf.evaluate_sequence(masks, pred, cfg.bound_th)
        rows += [{"Sequence": f"{name}_{obj}", "J-Mean": s["J-Mean"], "F-Mean": s["F-Mean"]}
                 for obj, s in per_seq[name].items()]
        if writer is not None and i < cfg.vis_sequences:
            writer.add_image(f"davis/{name}/ground_truth", overlay(frames, masks, palette), step)
            writer.add_image(f"davis/{name}/prediction", overlay(frames, pred, palette), step)
        bar.update(1)
    bar.close()
    table = jf.summarize(per_seq)
    if writer is not None:
        for key, value in table.items():
            writer.add_scalar(f"davis/{key}", value, step)
    return table, rows


def _check(cfg) -> None:
    if cfg.context < 0 or cfg.topk < 1 or cfg.query_chunk < 1:
        raise ValueError(f"eval.davis needs context >= 0, topk >= 1, query_chunk >= 1 (got {cfg.context}, "
                         f"{cfg.topk}, {cfg.query_chunk})")
    if not (cfg.temperature > 0 and cfg.radius > 0 and math.isfinite(cfg.radius)):
        raise ValueError(f"eval.davis needs temperature > 0 and a finite radius > 0 (got {cfg.temperature}, "
                         f"{cfg.radius})")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    from ssl_video import cli

    def flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--davis", required=True, help="DAVIS-2017 root (JPEGImages/, Annotations/, ImageSets/)")
        parser.add_argument("--checkpoint", required=True, help="training checkpoint, exported backbone, or 'random'")
        parser.add_argument("--out", help="output folder (default: derived from the checkpoint, e.g. "
                                          "<run>/eval/davis/step_N/; never one another evaluation wrote)")
        parser.add_argument("--recompute-bn", action="store_true",
                            help="re-estimate BatchNorm statistics on the evaluated frames first (transductive, no "
                                 "labels; = eval.davis.recompute_bn=true)")

    args = cli.parse_args(argv, command="eval-davis", add_arguments=flags)
    cfg = cli.load(args)
    from ssl_video.config import ConfigError
    from ssl_video.device import resolve_device
    from ssl_video.eval.common import fail, format_table, load_backbone, summary_writer, write_csv
    from ssl_video.eval.outputs import output_dir

    try:
        dcfg = cfg.eval.davis
        _check(dcfg)
        device = resolve_device(cfg.eval.device)
        backbone, info = load_backbone(args.checkpoint, "resnet18_s8", seed=cfg.train.seed, stem=cfg.backbone.stem)
        names = sequence_names(args.davis, dcfg.split)[: dcfg.max_sequences or None]
        if args.recompute_bn or dcfg.recompute_bn:
            n = recompute_bn(backbone, (read_sequence(args.davis, s, dcfg.resolution)[1] for s in names), dcfg.stage,
                             device)
            print(f"BatchNorm statistics re-estimated on {n} frames of {len(names)} sequences")
        feature_fn = encoder_features(backbone, dcfg.stage, device)
    except (ConfigError, ValueError) as exc:
        return fail(str(exc))
    out = output_dir(args.checkpoint, "davis", cfg.eval.out_dir, args.out)
    writer = summary_writer(out)
    try:
        table, rows = evaluate(args.davis, feature_fn, dcfg, out, writer)
    except ValueError as exc:
        return fail(str(exc))
    finally:
        writer.close()
    write_csv(out / f"global_results-{dcfg.split}.csv", [table], jf.MEASURES)
    write_csv(out / f"per-sequence_results-{dcfg.split}.csv", rows, ["Sequence", "J-Mean", "F-Mean"])
    print(f"backbone: {info['backbone']} from {info['source']}")
    print(format_table([table], jf.MEASURES))
    print(format_table(rows, ["Sequence", "J-Mean", "F-Mean"]))
    print(f"wrote {out}/{dcfg.split}/<seq>/*.png, {out}/global_results-{dcfg.split}.csv, TensorBoard {out}/tb")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
