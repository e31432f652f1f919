"""Cross-camera retrieval: ``python -m ssl_video.eval.retrieval --shards <set> --checkpoint <c> [key=value ...]``.

The view invariance that hard-positive mining aims for. Every view of every take in a shard set (``pack.kind=takes``;
views are synchronised: frame i of every view is the same instant) is cut into the online-action test windows
(``chunk_len`` frames, overlap 3 for 8-frame / 2 for 4-frame chunks). A chunk's embedding is the L2-normalised clip
vector of a clip backbone, or the mean of its frames' (pooled) features for a frame backbone. For every ordered pair
of views (a, b), a != b: each chunk of view a queries all chunks of view b in all takes of the set (cosine
similarity); top-k is correct when the same take's window of the same instant (within ``tolerance`` windows) is among
the k nearest. Reports top-1 / top-5 (and chance: k / gallery size) per view pair and overall.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_video.eval.take_clips import Clip, load_clips, resolve_overlap, window_starts
from ssl_video.models.backbones import pooled_features as pooled
from ssl_video.normalise import normalise

TOPK = (1, 5)


def chunk_embedder(backbone: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(N, T, 3, H, W)`` uint8 chunks -> ``(N, D)`` features (clip backbones directly, frame backbones averaged)."""
    backbone = backbone.to(device).eval()

    @torch.no_grad()
    def fn(x: torch.Tensor) -> torch.Tensor:
        x = normalise(x.to(device))
        if getattr(backbone, "input_kind", "frames") == "clip":
            return backbone(x).float()
        n, t = x.shape[:2]
        return pooled(backbone, x.flatten(0, 1)).view(n, t, -1).mean(1).float()

    return fn


def embed_clips(clips: Sequence[Clip], embed: Callable[[torch.Tensor], torch.Tensor], chunk_len: int, overlap: int,
                batch: int = 32, show_progress: bool = True) -> dict[tuple[str, int], torch.Tensor]:
    """``{(take, view): (n_windows, D)}`` L2-normalised chunk embeddings."""
    from tqdm import tqdm

    out = {}
    for clip in tqdm(clips, desc="retrieval", unit="clip", disable=not show_progress):
        starts = window_starts(len(clip.frames), chunk_len, overlap)
        chunks = [clip.frames[s : s + chunk_len] for s in starts]
        feats = [embed(torch.stack(chunks[j : j + batch])) for j in range(0, len(chunks), batch)]
        out[(clip.take, clip.view)] = F.normalize(torch.cat(feats).cpu(), dim=1) if feats else torch.zeros(0, 1)
    return out


def retrieval_scores(emb: dict[tuple[str, int], torch.Tensor], topk: Sequence[int] = TOPK,
                     tolerance: int = 0) -> list[dict]:
    """Rows ``{"query_view", "gallery_view", "queries", "gallery", "top1", "top5", "chance1", "chance5"}`` per ordered
    view pair, then an ``"all"`` row averaging over every query."""
    takes = sorted({t for t, _ in emb})
    views = sorted({v for _, v in emb})
    rows, hits_all, chance_all = [], {k: [] for k in topk}, {k: [] for k in topk}
    for a in views:
        for b in views:
            if a == b:
                continue
            pairs = [t for t in takes if (t, a) in emb and (t, b) in emb]
            if not pairs:
                continue
            gallery = torch.cat([emb[(t, b)] for t in pairs])
            g_take = np.concatenate([[i] * len(emb[(t, b)]) for i, t in enumerate(pairs)])
            g_idx = np.concatenate([np.arange(len(emb[(t, b)])) for t in pairs])
            row = {"query_view": a, "gallery_view": b, "queries": 0, "gallery": len(gallery)}
            hits = {k: [] for k in topk}
            for i, t in enumerate(pairs):
                q = emb[(t, a)][: len(emb[(t, b)])]  # synchronised views: window j is the same instant in both
                order = (q @ gallery.T).argsort(dim=1, descending=True).numpy()
                for j, ranked in enumerate(order):
                    ok = (g_take[ranked] == i) & (np.abs(g_idx[ranked] - j) <= tolerance)
                    for k in topk:
                        hits[k].append(bool(ok[:k].any()))
                row["queries"] += len(q)
            for k in topk:
                row[f"top{k}"] = float(np.mean(hits[k]))
                row[f"chance{k}"] = min(1.0, k * (2 * tolerance + 1) / len(gallery))
                hits_all[k] += hits[k]
                chance_all[k] += [row[f"chance{k}"]] * len(hits[k])
            rows.append(row)
    if not rows:
        raise ValueError("retrieval needs takes with at least two views")
    total = {"query_view": "all", "gallery_view": "all", "queries": sum(r["queries"] for r in rows),
             "gallery": max(r["gallery"] for r in rows)}
    total |= {f"top{k}": float(np.mean(hits_all[k])) for k in topk}
    total |= {f"chance{k}": float(np.mean(chance_all[k])) for k in topk}
    return rows + [total]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    from ssl_video import cli

    def flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--shards", required=True, help="folder with shard sets (<split>/) or one shard set")
        parser.add_argument("--checkpoint", required=True, help="training checkpoint, exported backbone, or 'random'")
        parser.add_argument("--out", help="output folder (default: derived from the checkpoint, e.g. "
                                          "<run>/eval/retrieval/step_N/; never one another evaluation wrote)")

    args = cli.parse_args(argv, command="eval-retrieval", add_arguments=flags)
    cfg = cli.load(args)
    from ssl_video.config import ConfigError
    from ssl_video.device import resolve_device
    from ssl_video.eval.common import fail, format_table, load_backbone, summary_writer, write_csv
    from ssl_video.eval.outputs import output_dir

    try:
        rcfg = cfg.eval.retrieval
        overlap = resolve_overlap(rcfg.chunk_len, rcfg.overlap)
        device = resolve_device(cfg.eval.device)
        folder = Path(args.shards)
        folder = folder if (folder / "manifest.json").is_file() else folder / rcfg.split
        clips, _ = load_clips(folder, rcfg.crop_size)
        backbone, info = load_backbone(args.checkpoint, rcfg.backbone, seed=cfg.train.seed, stem=cfg.backbone.stem)
        emb = embed_clips(clips, chunk_embedder(backbone, device), rcfg.chunk_len, overlap, rcfg.batch_size)
        rows = retrieval_scores(emb, TOPK, rcfg.tolerance)
    except (ConfigError, ValueError) as exc:
        return fail(str(exc))
    out = output_dir(args.checkpoint, "retrieval", cfg.eval.out_dir, args.out)
    columns = ["query_view", "gallery_view", "queries", "gallery", "top1", "top5", "chance1", "chance5"]
    write_csv(out / "retrieval.csv", rows, columns)
    writer = summary_writer(out)
    for k in TOPK:
        writer.add_scalar(f"retrieval/top{k}", rows[-1][f"top{k}"], 0)
    writer.close()
    print(f"backbone: {info['backbone']} from {info['source']}; {len(clips)} clips of {folder}")
    print(format_table(rows, columns))
    print(f"wrote {out}/retrieval.csv, TensorBoard {out}/tb")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
