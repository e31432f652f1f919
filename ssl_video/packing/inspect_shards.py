"""Inspect a shard set: ``ssl-video-inspect-shards shards/out/train [--sample 0] [--png sample.png]``.

Prints the manifest (shards, sample counts, failed inputs), verifies every shard's sha256, decodes one sample and
writes a PNG: one row per view, a few frames that have superpixel maps, boundaries drawn in yellow.
Exit status 1 if a checksum does not match or a shard is missing, 2 for an unusable shard set.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

from ssl_video.packing.shards import sha256_file
from ssl_video.packing.video import decode_bytes


def _sample(folder: Path, manifest: dict, index: int) -> dict | None:
    import webdataset as wds

    urls = [str(folder / s["name"]) for s in manifest["shards"]]
    for i, sample in enumerate(wds.WebDataset(urls, shardshuffle=False, empty_check=False)):
        if i == index:
            return sample
    return None


def _picture(sample: dict, meta: dict, algo: str | None, num_frames: int) -> np.ndarray:
    from skimage.segmentation import mark_boundaries

    views = [""] if meta["views"] == 1 else [f"view{v}." for v in range(meta["views"])]
    rows = []
    for prefix in views:
        frames = decode_bytes(sample[f"{prefix}mp4"])
        if algo is not None:
            labels = np.load(io.BytesIO(sample[f"{prefix}sp.{algo}.npz"]))["labels"]
            index = meta["superpixels"][algo]["frame_index"]
        else:
            labels, index = None, list(range(len(frames)))
        pick = np.linspace(0, len(index) - 1, min(num_frames, len(index))).round().astype(int)
        tiles = []
        for j in pick:
            img = frames[index[j]]
            if labels is not None:
                img = (mark_boundaries(img, labels[j], color=(1, 1, 0)) * 255).astype(np.uint8)
            tiles.append(img)
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def print_shards(folder: Path, manifest: dict, verify: bool) -> int:
    """One line per shard (checksum checked unless ``verify`` is false), truncated and failed inputs; returns how
    many shards are missing or fail their checksum."""
    bad = 0
    for shard in manifest["shards"]:
        path = folder / shard["name"]
        if not verify:
            status = "present" if path.is_file() else "MISSING"
        else:
            status = "MISSING" if not path.is_file() else ("ok" if sha256_file(path) == shard["sha256"] else "BAD")
        bad += status in ("MISSING", "BAD")
        print(f"  {shard['name']}  {shard['samples']:5d} samples  sha256 {shard['sha256'][:12]}…  {status}")
    for t in manifest.get("truncated", []):  # tool_version >= 1.1
        print(f"  truncated: {t['input']}: {t['frames']} of {t['declared_frames']} declared frames")
    for failed in manifest["failed"]:
        print(f"  failed: {failed['input']}: {failed['reason']}")
    return bad


def print_sample(index: int, key: str, meta: dict) -> None:
    """A sample's metadata, its superpixel maps and its frame labels as runs ``name [start, end)``."""
    shown = {k: v for k, v in meta.items() if k not in ("frame_labels", "frame_label_idx", "superpixels")}
    print(f"sample {index}: key {key}: {json.dumps(shown, sort_keys=True)}")
    for algo, sp in meta["superpixels"].items():
        print(f"  superpixels {algo}: {len(sp['frame_index'])} frames (stride "
              f"{sp['frame_index'][1] - sp['frame_index'][0] if len(sp['frame_index']) > 1 else '-'}), {sp['params']}")
    if "frame_labels" in meta:
        runs, prev = [], None
        for i, name in enumerate(meta["frame_labels"] + [None]):
            if name != prev:
                runs.append([name, i])
                prev = name
        print("  frame labels: " + ", ".join(f"{a[0]} [{a[1]}, {b[1]})" for a, b in zip(runs, runs[1:])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List, verify and visualise a shard set.")
    parser.add_argument("shard_set", help="folder with manifest.json and shard-*.tar")
    parser.add_argument("--sample", type=int, default=0, help="which sample to decode (order in the shards)")
    parser.add_argument("--png", default="", help="PNG to write (default: <shard_set>/inspect.png)")
    parser.add_argument("--frames", type=int, default=6, help="frames per view in the PNG")
    parser.add_argument("--algo", default="", help="superpixel algorithm to draw (default: the first)")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 checks")
    args = parser.parse_args(argv)
    folder = Path(args.shard_set)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {folder / 'manifest.json'}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"{folder}: dataset={manifest.get('dataset')} split={manifest.get('split')} "
          f"tool_version={manifest.get('tool_version')} classes={len(manifest.get('classes', []))}")
    truncated = manifest.get("truncated", [])  # tool_version >= 1.1
    print(f"inputs {manifest['inputs']}, packed {manifest['packed']} ({len(truncated)} truncated), "
          f"failed {len(manifest['failed'])}, shards {len(manifest['shards'])}")
    bad = print_shards(folder, manifest, verify=not args.no_verify)
    if bad:
        print(f"error: {bad} shard(s) missing or failing their checksum", file=sys.stderr)
        return 1
    sample = _sample(folder, manifest, args.sample) if manifest["shards"] else None
    if sample is None:
        print(f"no sample {args.sample} to decode")
        return 0
    meta = json.loads(sample["json"])
    print_sample(args.sample, sample["__key__"], meta)
    algo = args.algo or next(iter(meta["superpixels"]), None)
    if algo is not None and algo not in meta["superpixels"]:
        print(f"error: sample has no '{algo}' superpixels (has: {', '.join(meta['superpixels'])})", file=sys.stderr)
        return 2
    from PIL import Image

    png = Path(args.png) if args.png else folder / "inspect.png"
    Image.fromarray(_picture(sample, meta, algo, args.frames)).save(png)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
