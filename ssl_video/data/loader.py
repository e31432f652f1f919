"""Shards -> augmented batches (the batch schema of docs/design.md), a webdataset 1.0 pipeline per worker.

``build_loader(data_cfg, batch_size=, rank=, world_size=, seed=, epoch=)`` returns exactly ``data_cfg.epoch_length``
batches on every rank, whatever the number or size of the shards, so DDP never hangs on a rank that ran out:

    ResampledShards (this rank/worker's share of the manifest's shards, drawn with replacement: shard shuffle)
    -> tarfile_to_samples -> shuffle(data.shuffle_buffer) -> decode + sample + augment -> batched(partial=False)
    -> with_epoch(this worker's share of epoch_length)

Shards are split over the (rank, worker) pairs when there are at least as many shards as pairs, otherwise every pair
resamples all of them. All randomness comes from seeds made of (seed, epoch, rank, worker), so the batches are a pure
function of the arguments (resume = rebuild the epoch, skip the batches done). A bad tar member, a truncated shard or an
undecodable sample is skipped with a warning and counted in ``batch["skipped"]``; ``data.skip_limit`` bad samples in a
row stop the run with an error instead (that is a configuration problem, and looping on it would hang).
"""

from __future__ import annotations

import json
import logging
import random
import signal
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import torch
import webdataset as wds
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ssl_video.config import ConfigError
from ssl_video.data import sampling
from ssl_video.data.augment import PRESETS, augment_clip
from ssl_video.data.decode import DECODERS, decode_frames, resolve_decoder
from ssl_video.data.label_maps import read_rows
from ssl_video.data.malloc import keep_freed_memory

log = logging.getLogger(__name__)


def shard_list(root: str | Path, allow_pipe: bool = False) -> list[str]:
    """Shard paths of a shard set, from its manifest.json (shards of zero samples are never listed).

    A ``root`` with a URL scheme (``pipe:``, ``http:``, ``gs:``, ...) would be opened by webdataset through a shell
    or a subprocess (``pipe:`` runs its text as a shell command): :class:`ConfigError` unless ``allow_pipe``; then the
    manifest and shards are read through webdataset (``<root>/manifest.json``, ``<root>/<shard>``).
    A shard set that lists no shards is a :class:`ConfigError` too (one line for the trainer, exit 2).
    """
    text = str(root)
    remote = bool(urlparse(text).scheme) and not text.startswith("file:")
    if remote and not allow_pipe:
        raise ConfigError(f"data.root '{text}' is a URL or a pipe: command, not a shard-set folder; webdataset would "
                          "run it through a shell or a subprocess. Give a local folder, or set data.allow_pipe=true")
    if remote:
        with wds.gopen(f"{text.rstrip('/')}/manifest.json") as f:
            listed = json.loads(f.read())["shards"]
        shards = [f"{text.rstrip('/')}/{s['name']}" for s in listed if s.get("samples", 1) > 0]
    else:
        root = Path(text.removeprefix("file:"))
        manifest = root / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"no manifest.json in shard set {root} (make it with tools/make_shards.py)")
        shards = [str(root / s["name"]) for s in json.loads(manifest.read_text())["shards"] if s.get("samples", 1) > 0]
    if not shards:
        raise ConfigError(f"shard set {text} lists no shards (nothing was packed into it): repack it with "
                          "tools/make_shards.py or point data.root at another")
    return shards


def shards_for(shards: list[str], rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """This (rank, worker)'s share of the shards: a disjoint split when every pair can get one, else all of them."""
    pairs, index = world_size * num_workers, rank * num_workers + worker
    return shards[index::pairs] if len(shards) >= pairs else list(shards)


def plain_config(cfg):
    """The ``data`` config as plain attributes for the per-sample path (omegaconf lookups: ~2 ms of a 19 ms sample)."""
    return SimpleNamespace(**OmegaConf.to_container(cfg, resolve=True)) if isinstance(cfg, DictConfig) else cfg


def make_example(sample: dict, cfg, rng: random.Random, *, ctx: str = "cpu") -> dict[str, torch.Tensor]:
    """Decode, sample and augment one tar sample into per-sample tensors of the batch schema.

    The views are augmented straight into one preallocated ``(V, T, 3, S, S)`` tensor (no per-view tensors to stack)."""
    meta = json.loads(sample["json"])
    prefixes = sampling.view_prefixes(sample)
    cameras = sampling.choose_cameras(len(prefixes), cfg, rng)
    algo = sampling.choose_superpixels(cfg, rng)
    indices = sampling.choose_frames(meta, cfg, rng, superpixels=algo)
    per_frame = cfg.sampling == "frames"
    clips = torch.empty((len(cameras), len(indices), 3, cfg.crop_size, cfg.crop_size), dtype=torch.float32)
    decoded: dict[int, torch.Tensor] = {}  # same_clip views share one decode
    maps = None
    for v, cam in enumerate(cameras):
        if cam not in decoded:
            frames = decode_frames(sample[f"{prefixes[cam]}mp4"], indices, ctx=ctx)
            decoded[cam] = torch.from_numpy(frames).permute(0, 3, 1, 2)
        frames = decoded[cam]
        labels = None
        if algo and v == 0:
            labels = _superpixels(sample, meta, prefixes[cam], algo, indices)
            if labels.shape[-2:] != frames.shape[-2:]:
                raise ValueError(f"superpixel maps {tuple(labels.shape[-2:])} != frames {tuple(frames.shape[-2:])}")
        _, labels = augment_clip(
            frames, labels, cfg, rng, per_frame=per_frame, photometric=not cfg.gpu_augment, out=clips[v]
        )
        if v == 0:
            maps = labels
    out = {
        "clips": clips,
        "label": torch.tensor(sampling.sample_label(meta)),
        "frame_labels": torch.tensor(sampling.frame_labels(meta, indices)),
        "frame_index": torch.tensor(indices),
        "camera": torch.tensor(cameras),
    }
    if maps is not None:
        out["superpixels"] = maps
        out["num_superpixels"] = maps.flatten(1).amax(1) + 1
    return out


def _superpixels(sample: dict, meta: dict, prefix: str, algo: str, indices: list[int]) -> torch.Tensor:
    rows = sampling.superpixel_rows(meta, algo, indices)
    key = f"{prefix}sp.{algo}.npz"
    if key not in sample:
        raise ValueError(f"sample has no {key}")
    return torch.from_numpy(read_rows(sample[key], rows))


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack per-sample tensors (webdataset's ``__key__`` strings are dropped: batches hold tensors only)."""
    return {k: torch.stack([ex[k] for ex in examples]) for k, v in examples[0].items() if isinstance(v, torch.Tensor)}


class SkipCounter:
    """webdataset exception handler that warns, counts, and gives up after ``limit`` failures in a row."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count, self.in_a_row, self.shards_without_sample = limit, 0, 0, 0

    def __call__(self, exn: Exception) -> bool:
        self.count += 1
        self.in_a_row += 1
        message = str(exn.args[0]) if exn.args else type(exn).__name__
        log.warning("skipping bad sample: %s: %s", type(exn).__name__, message.splitlines()[0] if message else "")
        if self.in_a_row >= self.limit:
            raise RuntimeError(
                f"{self.in_a_row} bad samples in a row (last: {message.splitlines()[0] if message else exn!r}); "
                "check data.root and the sampling settings against the shards"
            )
        return True  # continue with the next sample

    def watch_shards(self, urls):
        """Pass shard urls on; a run of ``limit`` shards that gave no sample at all (empty tars) is an error too."""
        for url in urls:
            self.shards_without_sample += 1
            if self.shards_without_sample > self.limit:
                raise RuntimeError(f"{self.limit} shards in a row held no sample (last: {url['url']})")
            yield url

    def watch_samples(self, samples):
        for sample in samples:
            self.shards_without_sample = 0
            yield sample

    def ok(self, example):
        self.in_a_row = 0
        return example

    def attach_all(self, batches):
        for batch in batches:
            yield self.attach(batch)

    def attach(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch["skipped"]``: the skips since the previous batch, in the first entry (their sum is the total)."""
        size = len(next(iter(batch.values())))
        batch["skipped"] = torch.zeros(size, dtype=torch.long)
        batch["skipped"][0], self.count = self.count, 0
        return batch


def _seed(*parts: int) -> int:
    # random.Random seeds from a str through sha512: stable across processes (hash() of a str is not)
    return random.Random("/".join(str(int(p)) for p in parts)).randrange(2**31)


class ShardStream(IterableDataset):
    """This rank's batches: each DataLoader worker runs its own webdataset pipeline for its share of the epoch."""

    def __init__(
        self, cfg, *, batch_size: int, rank: int, world_size: int, seed: int, epoch: int, ctx: str = "cpu"
    ) -> None:
        if cfg.epoch_length < 1 or batch_size < 1:
            raise ValueError(f"data.epoch_length ({cfg.epoch_length}) and batch_size ({batch_size}) must be >= 1")
        self.cfg, self.batch_size, self.ctx = plain_config(cfg), batch_size, ctx
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, epoch
        self.shards = shard_list(cfg.root, allow_pipe=getattr(self.cfg, "allow_pipe", False))

    def __len__(self) -> int:
        return self.cfg.epoch_length

    def batches_for(self, worker: int, num_workers: int) -> int:
        total = self.cfg.epoch_length
        return total // num_workers + (1 if worker < total % num_workers else 0)

    def pipeline(self, worker: int, num_workers: int) -> wds.DataPipeline:
        cfg = self.cfg
        seed = _seed(self.seed, self.epoch, self.rank, worker)
        rng = random.Random(seed)  # sampling + augmentation draws, in stream order
        counter = SkipCounter(cfg.skip_limit)
        urls = shards_for(self.shards, self.rank, self.world_size, worker, num_workers)
        return wds.DataPipeline(
            wds.ResampledShards(urls, seed=seed, worker_seed=lambda: 0, deterministic=True),
            counter.watch_shards,
            wds.tarfile_to_samples(handler=counter),
            counter.watch_samples,
            wds.shuffle(cfg.shuffle_buffer, initial=cfg.shuffle_buffer, rng=random.Random(seed + 1)),
            wds.map(lambda sample: counter.ok(self._example(sample, rng)), handler=counter),
            wds.batched(self.batch_size, collation_fn=collate, partial=False),
            counter.attach_all,  # a plain stage: wds.map would add a __key__ entry to the batch
        ).with_epoch(self.batches_for(worker, num_workers))

    def _example(self, sample: dict, rng: random.Random) -> dict[str, torch.Tensor]:
        try:
            return make_example(sample, self.cfg, rng, ctx=self.ctx)
        except Exception as exc:  # name the sample in the warning: one line, key and shard
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"{sample.get('__key__', '?')} in {sample.get('__url__', '?')}: {first}") from None

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:  # a worker process, the loader's own: keep its per-sample buffers mapped (malloc.py)
            keep_freed_memory()
        # no torch.manual_seed here: with num_workers=0 this runs in the trainer's process, whose RNG (dropout,
        # resume) the loader must never touch; all draws come from the pipeline's own random.Random
        yield from self.pipeline(worker, num_workers)


def check_data_config(cfg) -> None:
    """One-line ValueError for a data setting no sample could satisfy (before any worker starts)."""
    choices = {"sampling": sampling.SAMPLINGS, "positive": sampling.POSITIVES, "augment": tuple(PRESETS),
               "decoder": DECODERS}  # fmt: skip
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            raise ValueError(f"unknown data.{key} '{cfg[key]}'; choose from {', '.join(allowed)}")
    for key in ("clip_len", "frame_stride", "num_frames", "num_views", "crop_size", "max_superpixels", "skip_limit"):
        if cfg[key] < 1:
            raise ValueError(f"data.{key} must be >= 1, got {cfg[key]}")
    algos = cfg.superpixels
    if algos is not None and not isinstance(algos, str):
        algos = list(algos) if isinstance(algos, (list, tuple, ListConfig)) else None
        if not algos or not all(isinstance(a, str) and a for a in algos):
            raise ValueError(
                f"data.superpixels must be null, an algorithm name or a non-empty list of them, got {cfg.superpixels}"
            )


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker_init_fn: workers ignore SIGTERM/SIGINT, which SLURM (preemption, scancel, time limit) and a
    terminal's Ctrl-C send to the whole process group; the trainer alone reacts (checkpoint, exit) and then shuts its
    workers down itself. A worker still exits when the trainer dies (torch's watchdog) or on SIGKILL. The signals were
    blocked since the fork (:class:`StopSafeLoader`): one that arrived meanwhile is dropped here, not fatal."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class StopSafeLoader(DataLoader):
    """A DataLoader whose workers are born with SIGTERM/SIGINT blocked (the mask survives fork and exec), so a signal
    to the process group between a worker's start and its worker_init_fn cannot kill it (torch's worker handler
    would: every epoch starts new workers, and a preemption at that moment crashed the run). The trainer gets such a
    signal once its workers are started."""

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().__iter__()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def build_loader(data_cfg, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, epoch: int = 0):
    """Exactly ``data_cfg.epoch_length`` batches for this rank, deterministic in the arguments."""
    check_data_config(data_cfg)
    ctx = resolve_decoder(data_cfg.decoder)
    stream = ShardStream(
        data_cfg, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed, epoch=epoch, ctx=ctx
    )
    workers = min(data_cfg.num_workers, data_cfg.epoch_length)
    return StopSafeLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        # DataLoader draws its workers' base seed from this generator, not from the global RNG (kept for the model)
        generator=torch.Generator().manual_seed(_seed(seed, epoch, rank)),
        worker_init_fn=ignore_stop_signals,
        # a CUDA context does not survive fork: GPU-decoding workers are spawned
        multiprocessing_context="spawn" if ctx in ("gpu", "torchcodec-cuda") and workers > 0 else None,
    )
