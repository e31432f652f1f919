"""Pack videos into WebDataset shard sets (docs/design.md "Shard sets"): ``python tools/make_shards.py key=value ...``.

Inputs (``pack.kind``): ``kinetics`` (``<root>/<split>/<class>/<ytid>_<start>_<end>.<ext>``, optionally with the
Kinetics CSV(s) in ``pack.annotations``), ``filelist`` (CSV with a ``path`` column [``label``, ``split``] or one
``path[,label[,split]]`` per line), ``takes`` (``<root>/<take>/<camera>.<ext>`` + ``annotation.json``).
Each input becomes one sample; each split one shard set ``<output>/<split>/`` with ``manifest.json``.

Shard ``i`` of a split holds the ``i``-th chunk of ``pack.shard_size`` inputs of a seeded permutation, whatever the
worker count, and its bytes depend only on those inputs and the config (fixed tar headers, deterministic x264), so a
rerun verifies the shards a previous run completed (sha256 in ``.pack/shard-*.json``) and packs only the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ssl_video.packing.inputs import Item, PackError, discover, frame_labels
from ssl_video.packing.video import H264Writer, VideoError, count_frames, iter_frames

TOOL_VERSION = "1.0"
_UNHASHED = ("output", "workers", "strict")  # settings that do not change shard bytes


def _plain(node) -> dict:
    if dataclasses.is_dataclass(node):
        return dataclasses.asdict(node)
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(node, resolve=True)
    except ValueError:
        return dict(node)


def sp_plan(sp_cfg: dict) -> dict[str, tuple[int, dict]]:
    """``{algo: (frame_stride, skimage params)}``; a ``frame_stride`` in an algorithm's params overrides the global.

    An algorithm set to null (``superpixels.algos.slic=null``) is not packed: how to pack only ``slic_fast``."""
    plan = {}
    for algo, params in (sp_cfg.get("algos") or {}).items():
        if params is None:
            continue
        params = dict(params)
        stride = int(params.pop("frame_stride", sp_cfg.get("frame_stride", 1)))
        if stride < 1:
            raise PackError(f"superpixels frame_stride for {algo} must be >= 1, got {stride}")
        plan[algo] = (stride, params)
    return plan


# ---------------------------------------------------------------------------------------------------------------
# One sample (runs in a worker process)
# ---------------------------------------------------------------------------------------------------------------
def npz_bytes(labels: np.ndarray) -> bytes:
    """``np.savez_compressed(labels=...)`` with a fixed zip timestamp (numpy stamps the current time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("labels.npy", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(labels), allow_pickle=False)
    return buffer.getvalue()


def _encode_view(frames: Iterable[np.ndarray], pc: dict, sp: dict[str, tuple[int, dict]]):
    """Encode one view; returns (mp4 bytes, frame count, (w, h), {algo: (labels, frame_index)})."""
    from ssl_video.superpixels.segment import segment

    writer, picked = None, {algo: [] for algo in sp}
    for i, rgb in enumerate(frames):
        if writer is None:
            writer = H264Writer(rgb.shape[1], rgb.shape[0], pc["fps"], pc["gop"], pc["crf"], pc["preset"])
        writer.write(rgb)
        for algo, (stride, _) in sp.items():
            if i % stride == 0:
                picked[algo].append(rgb)
    if writer is None:
        raise VideoError("no frames decoded")
    maps = {}
    for algo, (stride, params) in sp.items():
        maps[algo] = (segment(np.stack(picked[algo]), algo, **params), list(range(0, writer.frames, stride)))
    return writer.close(), writer.frames, (writer.width, writer.height), maps


def _take_range(item: Item, pc: dict) -> tuple[list[int], int, int]:
    """Per-view start frames and (timeline start, length) at the output rate; VideoError if views cannot align."""
    ann_fps = float(item.annotation.get("fps") or pc["fps"])
    offsets = [int(round(item.offsets.get(cam, 0) * pc["fps"] / ann_fps)) for cam in item.cameras]
    counts = [count_frames(path, pc["fps"]) for path in item.paths]
    lo = max(0, *(-o for o in offsets))
    hi = min(n - o for n, o in zip(counts, offsets))
    if pc["max_frames"] > 0:
        hi = min(hi, lo + pc["max_frames"])
    if hi - lo < 1:
        detail = ", ".join(f"{c}: {n} frames offset {o}" for c, n, o in zip(item.cameras, counts, offsets))
        raise VideoError(f"views cannot be aligned (no common frame): {detail}")
    return [lo + o for o in offsets], lo, hi - lo


def make_sample(item: Item, pc: dict, sp: dict[str, tuple[int, dict]], classes: list[str]) -> list[tuple[str, bytes]]:
    """Transcode + superpixels for one input -> tar members ``[(name, bytes)]``; raises VideoError."""
    meta = {"source": item.source, "dataset": pc["kind"], "label": item.label,
            "label_idx": classes.index(item.label) if item.label in classes else -1, "fps": pc["fps"],
            "codec": "h264", "gop": pc["gop"], "split": item.split}
    members, sp_meta = [], {}
    if item.cameras is None:
        count = pc["max_frames"] or None
        mp4, n, (w, h), maps = _encode_view(iter_frames(item.paths[0], pc["fps"], pc["short_side"], 0, count), pc, sp)
        members.append((f"{item.key}.mp4", mp4))
        for algo, (labels, index) in maps.items():
            members.append((f"{item.key}.sp.{algo}.npz", npz_bytes(labels)))
            sp_meta[algo] = {"params": sp[algo][1], "frame_index": index}
        meta.update(num_frames=n, width=w, height=h, views=1)
    else:
        starts, lo, n = _take_range(item, pc)
        size = None
        for v, (path, start) in enumerate(zip(item.paths, starts)):
            frames = iter_frames(path, pc["fps"], pc["short_side"], start, n, size)
            try:
                mp4, got, size, maps = _encode_view(frames, pc, sp)
            except VideoError as exc:
                raise VideoError(f"{item.cameras[v]}: {exc}") from None
            if got != n:
                raise VideoError(f"{item.cameras[v]}: decoded {got} of the {n} frames its packets promise")
            members.append((f"{item.key}.view{v}.mp4", mp4))
            for algo, (labels, index) in maps.items():
                members.append((f"{item.key}.view{v}.sp.{algo}.npz", npz_bytes(labels)))
                sp_meta[algo] = {"params": sp[algo][1], "frame_index": index}
        meta.update(num_frames=n, width=size[0], height=size[1], views=len(item.paths), cameras=item.cameras,
                    timeline_start=lo)
        if item.annotation.get("segments") is not None:
            ann_fps = float(item.annotation.get("fps") or pc["fps"])
            names = frame_labels(item.annotation["segments"], lo, n, pc["fps"], ann_fps, pc["background_ratio"])
            meta.update(frame_labels=names, frame_label_idx=[classes.index(x) for x in names])
    meta["superpixels"] = sp_meta
    members.insert(len(item.paths), (f"{item.key}.json", json.dumps(meta, sort_keys=True).encode()))
    return members


def _work(task: tuple) -> tuple[str, object]:
    """Worker entry: ``("ok", members)`` or ``("failed", reason)``; never raises for a bad input."""
    item, pc, sp, classes = task
    try:
        return "ok", make_sample(item, pc, sp, classes)
    except (VideoError, PackError) as exc:
        return "failed", str(exc)
    except Exception as exc:  # one bad file must not stop a multi-hour run; the reason is kept in the manifest
        return "failed", f"internal error {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


# ---------------------------------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: Path, write: Callable[[object], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A tar whose bytes depend only on ``members`` (mtime 0, uid/gid 0, no user names), written atomically."""

    def write(f) -> None:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = (
                    len(data), 0, 0o644, 0, 0, "", "")
                tar.addfile(info, io.BytesIO(data))

    _atomic_write(path, write)


def _write_json(path: Path, obj: dict) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()))


def _shard_done(folder: Path, index: int, fingerprint: str) -> dict | None:
    """The state of shard ``index`` if a previous run completed it with this config and its bytes verify."""
    state_path = folder / ".pack" / f"shard-{index:06d}.json"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != fingerprint:
        return None
    if state["samples"] and not (
        (folder / state["name"]).is_file() and sha256_file(folder / state["name"]) == state["sha256"]
    ):
        return None
    return state


def _fingerprint(pc: dict, sp_cfg: dict, classes: list[str], items: list[Item]) -> str:
    settings = {k: v for k, v in pc.items() if k not in _UNHASHED}
    blob = json.dumps([TOOL_VERSION, settings, sp_cfg, classes, [dataclasses.asdict(i) for i in items]],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def pack(pack_cfg, sp_cfg, progress: bool = True, after_shard: Callable[[str, int], None] | None = None) -> dict:
    """Pack according to ``pack_cfg`` (PackConfig) and ``sp_cfg`` (SuperpixelConfig); returns per-split summaries.

    ``after_shard(split, index)`` runs after each shard is written (tests use it to simulate a killed run).
    Raises :class:`PackError` (one line) for a missing input root or malformed annotation file.
    """
    pc, spc = _plain(pack_cfg), _plain(sp_cfg)
    if pc["shard_size"] < 1 or pc["workers"] < 1:
        raise PackError(f"pack.shard_size and pack.workers must be >= 1, got {pc['shard_size']}, {pc['workers']}")
    sp = sp_plan(spc)
    splits, classes = discover(pc)
    out = Path(pc["output"])
    plans, work = {}, []
    for split, (items, pre_failed) in splits.items():
        order = np.random.default_rng(pc["seed"]).permutation(len(items))
        items = [items[i] for i in order]
        shards = [items[i:i + pc["shard_size"]] for i in range(0, len(items), pc["shard_size"])]
        folder = out / split
        (folder / ".pack").mkdir(parents=True, exist_ok=True)
        states = []
        for index, chunk in enumerate(shards):
            fingerprint = _fingerprint(pc, spc, classes, chunk)
            state = _shard_done(folder, index, fingerprint)
            states.append(state)
            if state is None:
                work.append((split, index, fingerprint, chunk))
        plans[split] = {"folder": folder, "shards": shards, "states": states, "pre_failed": pre_failed}
    total = sum(len(s[0]) for s in splits.values())
    tasks = [(item, pc, sp, classes) for *_, chunk in work for item in chunk]

    from tqdm import tqdm

    bar = tqdm(total=total, initial=total - len(tasks), unit="clip", desc="make_shards", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    executor = None
    if pc["workers"] > 1 and tasks:
        executor = ProcessPoolExecutor(pc["workers"], mp_context=_spawn(), initializer=_watch_parent,
                                       initargs=(os.getpid(),))
    try:
        results = executor.map(_work, tasks, chunksize=1) if executor else map(_work, tasks)
        for split, index, fingerprint, chunk in work:
            members, failed, keys = [], [], []
            for item in chunk:
                status, value = next(results)
                bar.update(1)
                if status == "ok":
                    members += value
                    keys.append(item.key)
                else:
                    failed.append({"input": item.source, "reason": value})
                    bar.write(f"failed: {item.source}: {value}", file=sys.stderr)
            folder = plans[split]["folder"]
            state = {"fingerprint": fingerprint, "name": f"shard-{index:06d}.tar", "samples": len(keys),
                     "keys": keys, "failed": failed, "sha256": None}
            if keys:
                write_tar(folder / state["name"], members)
                state["sha256"] = sha256_file(folder / state["name"])
            _write_json(folder / ".pack" / f"shard-{index:06d}.json", state)
            plans[split]["states"][index] = state
            if after_shard is not None:
                after_shard(split, index)
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    return {split: _write_manifest(plan, pc, spc, classes, split) for split, plan in plans.items()}


def _watch_parent(parent: int) -> None:
    """Worker initializer: exit when the packer is gone (a killed packer would otherwise leave workers blocked)."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _spawn():
    import multiprocessing

    return multiprocessing.get_context("spawn")  # fork is unsafe with the threads PyAV/numpy may hold


def _write_manifest(plan: dict, pc: dict, spc: dict, classes: list[str], split: str) -> dict:
    states = plan["states"]
    failed = list(plan["pre_failed"]) + [f for s in states for f in s["failed"]]
    packed = sum(s["samples"] for s in states)
    manifest = {
        "tool_version": TOOL_VERSION, "dataset": pc["kind"], "split": split, "classes": classes,
        "config": {"pack": pc, "superpixels": spc},
        "shards": [{"name": s["name"], "samples": s["samples"], "sha256": s["sha256"]} for s in states if s["samples"]],
        "failed": failed, "inputs": packed + len(failed), "packed": packed,
    }
    _write_json(plan["folder"] / "manifest.json", manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """CLI: ``make_shards.py pack.kind=kinetics pack.input=ROOT pack.output=OUT [--workers N] [--strict]``."""
    parser = argparse.ArgumentParser(
        prog="make_shards.py", description="Pack videos into WebDataset shard sets (config keys as key=value).")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. pack.input=data/k400 pack.kind=kinetics")
    parser.add_argument("--workers", type=int, help="parallel processes (pack.workers)")
    parser.add_argument("--shard-size", type=int, help="inputs per shard (pack.shard_size)")
    parser.add_argument("--strict", action="store_true", help="exit non-zero if any input failed (pack.strict)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_intermixed_args(argv)
    from ssl_video.config import ConfigError, load_config

    overrides = list(args.overrides)
    overrides += [f"pack.workers={args.workers}"] if args.workers else []
    overrides += [f"pack.shard_size={args.shard_size}"] if args.shard_size else []
    overrides += ["pack.strict=true"] if args.strict else []
    try:
        cfg = load_config(overrides)
        summary = pack(cfg.pack, cfg.superpixels, progress=not args.no_progress)
    except (ConfigError, PackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    packed = sum(m["packed"] for m in summary.values())
    failed = sum(len(m["failed"]) for m in summary.values())
    for split, m in summary.items():
        print(f"{split}: {m['packed']} packed, {len(m['failed'])} failed of {m['inputs']} inputs, "
              f"{len(m['shards'])} shards -> {Path(cfg.pack.output) / split}")
        for f in m["failed"]:
            print(f"  failed: {f['input']}: {f['reason']}")
    if packed == 0:
        print("error: nothing could be packed", file=sys.stderr)
        return 1
    if failed and cfg.pack.strict:
        print(f"error: {failed} inputs failed (--strict)", file=sys.stderr)
        return 1
    return 0
