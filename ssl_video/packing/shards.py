"""Pack videos into WebDataset shard sets (docs/design.md "Shard sets"; usage in docs/packing.md).

Inputs (``pack.kind``): ``kinetics`` (``<root>/<split>/<class>/<ytid>_<start>_<end>.<ext>``, optionally with the
Kinetics CSV(s) in ``pack.annotations``), ``filelist`` (CSV with a ``path`` column [``label``, ``split``] or one
``path[,label[,split]]`` per line), ``takes`` (``<root>/<take>/<camera>.<ext>`` + ``annotation.json``).
Each input becomes one sample; each split one shard set ``<output>/<split>/`` with ``manifest.json``.

Shard ``i`` of a split holds the ``i``-th chunk of ``pack.shard_size`` inputs of a seeded permutation, whatever the
worker count, and its bytes depend only on those inputs and the config (fixed tar headers, deterministic x264), so a
rerun verifies the shards a previous run completed (sha256 in ``.pack/shard-*.json``) and packs only the rest.
The same holds across machines: :func:`pack` with ``task=(k, n)`` packs the ``k``-th of ``n`` contiguous ranges of
shards (a SLURM array task) and :func:`merge` writes the manifests once every range is done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
import tarfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ssl_video.packing.inputs import Item, PackError, discover
from ssl_video.packing.sample import check_settings, make_sample, npz_bytes, plain, sp_plan, work

__all__ = ["TOOL_VERSION", "PackError", "make_sample", "merge", "npz_bytes", "pack", "sp_plan", "task_ranges",
           "write_tar"]
TOOL_VERSION = "1.1"  # 1.1: sample json gains truncated / declared_frames, manifests a truncated list
_UNHASHED = ("output", "workers", "strict")  # settings that do not change shard bytes
_plain = plain  # older name (benchmarks)


@dataclasses.dataclass
class SplitPlan:
    """One split's shards: ``shards[i]`` is the inputs of shard ``i``; ``states[i]`` its resume state once done."""

    folder: Path
    shards: list[list[Item]]
    fingerprints: list[str]
    pre_failed: list[dict]
    states: list[dict | None]


# ---------------------------------------------------------------------------------------------------------------
# Shard files and their resume state
# ---------------------------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: Path, write: Callable[[object], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave a partial shard behind
        raise


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


def _shard_done(folder: Path, index: int, fingerprint: str, verify: bool = True) -> dict | None:
    """The state of shard ``index`` if a previous run completed it with this config and its file checks out:
    sha256 with ``verify``, else the size only (merging trusts the task that wrote and hashed it)."""
    state_path = folder / ".pack" / f"shard-{index:06d}.json"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != fingerprint:
        return None
    if state["samples"]:
        path = folder / state["name"]
        if not path.is_file() or path.stat().st_size != state.get("bytes"):
            return None
        if verify and sha256_file(path) != state["sha256"]:
            return None
    return state


def _fingerprint(pc: dict, sp_cfg: dict, classes: list[str], items: list[Item]) -> str:
    settings = {k: v for k, v in pc.items() if k not in _UNHASHED}
    blob = json.dumps([TOOL_VERSION, settings, sp_cfg, classes, [dataclasses.asdict(i) for i in items]],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Planning: which inputs go to which shard, and which shards a task packs
# ---------------------------------------------------------------------------------------------------------------
def _plan(pc: dict, spc: dict) -> tuple[dict[str, SplitPlan], list[str]]:
    splits, classes = discover(pc)
    plans = {}
    for split, (items, pre_failed) in splits.items():
        order = np.random.default_rng(pc["seed"]).permutation(len(items))
        items = [items[i] for i in order]
        shards = [items[i:i + pc["shard_size"]] for i in range(0, len(items), pc["shard_size"])]
        plans[split] = SplitPlan(Path(pc["output"]) / split, shards,
                                 [_fingerprint(pc, spc, classes, chunk) for chunk in shards], pre_failed,
                                 [None] * len(shards))
    return plans, classes


def task_ranges(sizes: list[int], num_tasks: int) -> list[range]:
    """Cut shards of ``sizes`` inputs into ``num_tasks`` contiguous ranges of about equal input counts.

    Shard ``i`` goes to the task whose share ``[k T/n, (k+1) T/n)`` of the ``T`` inputs holds its first input; whole
    shards, so each task writes the very shards a single run would."""
    total, bounds, start = sum(sizes), [0] * (num_tasks + 1), 0
    owner = []
    for size in sizes:
        owner.append(min(num_tasks - 1, start * num_tasks // total) if total else 0)
        start += size
    for k in range(num_tasks):
        bounds[k + 1] = bounds[k] + owner.count(k)
    return [range(bounds[k], bounds[k + 1]) for k in range(num_tasks)]


def _selected(plans: dict[str, SplitPlan], task: tuple[int, int] | None) -> list[tuple[str, int]]:
    """(split, shard index) pairs to pack: all, or task ``k`` of ``n``'s contiguous range over the splits in order."""
    pairs = [(split, i) for split, plan in plans.items() for i in range(len(plan.shards))]
    if task is None:
        return pairs
    k, n = task
    if not (n >= 1 and 0 <= k < n):
        raise PackError(f"task {k} of {n}: need 0 <= task < tasks")
    sizes = [len(plans[split].shards[i]) for split, i in pairs]
    return [pairs[j] for j in task_ranges(sizes, n)[k]]


# ---------------------------------------------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------------------------------------------
def pack(pack_cfg, sp_cfg, progress: bool = True, after_shard: Callable[[str, int], None] | None = None,
         task: tuple[int, int] | None = None) -> dict:
    """Pack according to ``pack_cfg`` (PackConfig) and ``sp_cfg`` (SuperpixelConfig); returns per-split summaries.

    ``task=(k, n)``: pack only the ``k``-th of ``n`` contiguous shard ranges and write no manifest (:func:`merge`
    does, once all ranges are done); the summaries then cover that range. ``after_shard(split, index)`` runs after
    each shard is written (tests use it to simulate a killed run). Raises :class:`PackError` (one line) for bad
    settings, a missing input root, a malformed annotation file or no inputs at all.
    """
    pc, spc = plain(pack_cfg), plain(sp_cfg)
    sp = sp_plan(spc)
    check_settings(pc, sp)
    plans, classes = _plan(pc, spc)
    selected = _selected(plans, task)
    for split in {s for s, _ in selected}:
        (plans[split].folder / ".pack").mkdir(parents=True, exist_ok=True)
    work_list = []
    for split, index in selected:
        plan = plans[split]
        plan.states[index] = _shard_done(plan.folder, index, plan.fingerprints[index])
        if plan.states[index] is None:
            work_list.append((split, index))
    _pack_shards(plans, pc, sp, classes, work_list, sum(len(plans[s].shards[i]) for s, i in selected), progress,
                 after_shard)
    if task is None:
        return {split: _write_manifest(plan, pc, spc, classes, split) for split, plan in plans.items()}
    return {split: _summary(plans[split], [i for s, i in selected if s == split], pre_failed=task[0] == 0)
            for split in dict.fromkeys(s for s, _ in selected)}


def _pack_shards(plans: dict[str, SplitPlan], pc: dict, sp: dict, classes: list[str],
                 work_list: list[tuple[str, int]], total: int, progress: bool,
                 after_shard: Callable[[str, int], None] | None) -> None:
    tasks = [(item, pc, sp, classes) for split, index in work_list for item in plans[split].shards[index]]
    from tqdm import tqdm

    bar = tqdm(total=total, initial=total - len(tasks), unit="clip", desc="make_shards", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    executor = None
    if pc["workers"] > 1 and tasks:
        executor = ProcessPoolExecutor(pc["workers"], mp_context=_spawn(), initializer=_watch_parent,
                                       initargs=(os.getpid(),))
    try:
        results = executor.map(work, tasks, chunksize=1) if executor else map(work, tasks)
        for split, index in work_list:
            plan = plans[split]
            members, failed, truncated, keys = [], [], [], []
            for item in plan.shards[index]:
                status, value = next(results)
                bar.update(1)
                if status == "ok":
                    members += value[0]
                    keys.append(item.key)
                    truncated += [value[1]] if value[1] else []
                else:
                    failed.append({"input": item.source, "reason": value})
                    bar.write(f"failed: {item.source}: {value}", file=sys.stderr)
            state = {"fingerprint": plan.fingerprints[index], "name": f"shard-{index:06d}.tar", "samples": len(keys),
                     "keys": keys, "failed": failed, "truncated": truncated, "sha256": None, "bytes": 0}
            if keys:
                path = plan.folder / state["name"]
                write_tar(path, members)
                state["sha256"], state["bytes"] = sha256_file(path), path.stat().st_size
            _write_json(plan.folder / ".pack" / f"shard-{index:06d}.json", state)
            plan.states[index] = state
            if after_shard is not None:
                after_shard(split, index)
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _watch_parent(parent: int) -> None:
    """Worker initializer: exit when the packer is gone (a killed packer would otherwise leave workers blocked)."""
    import signal
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the packer reports it once; workers just stop with it

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _spawn():
    import multiprocessing

    return multiprocessing.get_context("spawn")  # fork is unsafe with the threads PyAV/numpy may hold


# ---------------------------------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------------------------------
def _summary(plan: SplitPlan, indices: list[int], pre_failed: bool = True) -> dict:
    states = [plan.states[i] for i in indices]
    failed = (list(plan.pre_failed) if pre_failed else []) + [f for s in states for f in s["failed"]]
    packed = sum(s["samples"] for s in states)
    return {"shards": [{"name": s["name"], "samples": s["samples"], "sha256": s["sha256"]} for s in states
                       if s["samples"]],
            "failed": failed, "truncated": [t for s in states for t in s.get("truncated", [])],
            "inputs": packed + len(failed), "packed": packed}


def _write_manifest(plan: SplitPlan, pc: dict, spc: dict, classes: list[str], split: str) -> dict:
    """Write ``manifest.json`` (the loader's entry point) and return it; a split with no sample packed gets none
    (a zero-shard manifest would only fail later, in training): its failures go to ``.pack/failed.json``."""
    manifest = {"tool_version": TOOL_VERSION, "dataset": pc["kind"], "split": split, "classes": classes,
                "config": {"pack": pc, "superpixels": spc}, **_summary(plan, list(range(len(plan.shards))))}
    if manifest["packed"]:
        _write_json(plan.folder / "manifest.json", manifest)
    else:
        (plan.folder / "manifest.json").unlink(missing_ok=True)  # a stale one from an earlier run would mislead
        (plan.folder / ".pack").mkdir(parents=True, exist_ok=True)
        _write_json(plan.folder / ".pack" / "failed.json", manifest)
    return manifest


def merge(pack_cfg, sp_cfg) -> dict:
    """Write every split's manifest from the shards packed by all tasks (after ``pack(..., task=(k, n))`` for every
    ``k``); :class:`PackError` naming the missing shards when a range is not done (rerun the packing: it resumes)."""
    pc, spc = plain(pack_cfg), plain(sp_cfg)
    plans, classes = _plan(pc, spc)
    missing = []
    for split, plan in plans.items():
        for index in range(len(plan.shards)):
            plan.states[index] = _shard_done(plan.folder, index, plan.fingerprints[index], verify=False)
            if plan.states[index] is None:
                missing.append(f"{split}/shard-{index:06d}")
    if missing:
        raise PackError(f"{len(missing)} shard(s) not packed yet (first: {missing[0]}); rerun the same command to "
                        "pack them (finished shards are kept)")
    return {split: _write_manifest(plan, pc, spc, classes, split) for split, plan in plans.items()}
