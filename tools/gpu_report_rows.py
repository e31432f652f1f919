"""One measured row of ``tools/gpu_report.py``: the run's sizes (:class:`Profile`), the step builders of the walk,
the two-view methods and videowalk's reference, and :func:`measure` (largest batch, FLOPs, timed steps).

A helper module of that command (beside it, on its ``sys.path``), not a command itself; the sections that use it are
in ``gpu_report_sections.py``.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field

import torch

from ssl_video import speed

TWO_VIEW_METHODS = ("moco", "simclr", "byol", "simsiam")
BACKBONES = ("resnet18", "resnet18_gru", "x3d_xs")


@dataclass
class Profile:
    """Sizes of one run: the GPU one, or the dry (CPU, tiny) one."""

    walk_size: int = 256
    walk_frames: int = 4
    patch: tuple[int, int] = (64, 32)
    superpixels: int = 64
    two_view: dict = field(default_factory=lambda: {"resnet18": (4, 224), "resnet18_gru": (8, 224),
                                                    "x3d_xs": (4, 182)})
    two_view_combos: tuple = tuple((m, b) for b in BACKBONES for m in TWO_VIEW_METHODS)
    search_start: int = 8
    search_limit: int = 4096
    fake_memory_cap: int = 0  # dry run: "fits" means batch <= this (there is no device memory to fill)
    ref_batch: int = 32
    steps: int = 3
    slic_batch: int = 256
    slic_size: int = 256
    loader: dict = field(default_factory=lambda: {"size": 256, "frames": 32, "batch": 16, "batches": 24, "clips": 8})
    davis: dict = field(default_factory=lambda: {"sequences": 2, "frames": 20, "size": 256})


DRY = Profile(walk_size=32, walk_frames=3, patch=(16, 8), superpixels=16,
              two_view={"resnet18": (2, 32), "resnet18_gru": (2, 32), "x3d_xs": (2, 32)},
              two_view_combos=(("moco", "resnet18"), ("simclr", "resnet18_gru"), ("byol", "x3d_xs"),
                               ("simsiam", "resnet18")),  # every method and every backbone once
              search_start=2, search_limit=64, fake_memory_cap=2, ref_batch=2, steps=1, slic_batch=4, slic_size=64,
              loader={"size": 64, "frames": 16, "batch": 2, "batches": 4, "clips": 2},
              davis={"sequences": 1, "frames": 4, "size": 64})


class SectionTimeout(Exception):
    """Raised by the alarm when a section passes its deadline."""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


# ------------------------------------------------------------------------------------------------ one measured row
def _fits(report, build, batch: int) -> bool:
    """Does a training step at ``batch`` run with its peak under 90% of the device memory?"""
    cap = report.profile.fake_memory_cap
    if cap and batch > cap:
        return False
    step, ok = None, False
    try:
        if report.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step = build(batch)
        step()
        step()
        if report.device == "cuda":
            ok = torch.cuda.max_memory_allocated() <= 0.9 * torch.cuda.get_device_properties(0).total_memory
        else:
            ok = True
    except torch.OutOfMemoryError:
        ok = False
    step = None  # noqa: F841 (drop the model before freeing)
    speed.free_memory()
    return ok


def measure(report, build, deadline: float, batch: int | None = None, start: int | None = None,
            search_share: float = 0.6, flops: bool = True) -> dict:
    """Largest batch (unless ``batch`` is given), then FLOPs and timed steps there. ``build(b)`` -> step closure."""
    row: dict = {}
    if batch is None:
        search_deadline = time.monotonic() + search_share * (deadline - time.monotonic())
        batch, how = speed.largest_batch(lambda b: _fits(report, build, b), start or report.profile.search_start,
                                         report.profile.search_limit, search_deadline)
        row.update(largest_batch=batch, largest_batch_how=how)
        if batch == 0:
            return {**row, "status": "error", "reason": "not even a batch of 1 fits"}
    count, timing = None, None
    # walk_mixed draws patches or superpixels per clip, so memory varies by step: one retry at 80 %, outside the
    # handler (the exception's frames hold the model until it is gone)
    with contextlib.suppress(torch.OutOfMemoryError):
        count, timing = _timed(report, build, batch, deadline, flops)
    if timing is None:
        speed.free_memory()
        batch = max(1, int(batch * 0.8))
        count, timing = _timed(report, build, batch, deadline, flops)
    row.update(batch=batch, flops=count, step_s=round(timing["step_s"], 5),
               clips_per_s=round(batch / timing["step_s"], 2), step_s_all=[round(t, 5) for t in timing["step_s_all"]])
    if report.device == "cuda":
        row["peak_gib"] = round(timing["peak_bytes"] / 2**30, 2)
    else:
        row["cpu_s"] = round(timing["cpu_s"], 4)
    return add_utilisation(report, row)


def _timed(report, build, batch: int, deadline: float, flops: bool) -> tuple[int | None, dict]:
    step = build(batch)
    count = speed.count_flops(step) if flops else None  # also the first warm-up step
    warmup = 0 if report.dry and flops else 1  # counting FLOPs ran one step already
    return count, speed.time_steps(step, report.device, steps=report.profile.steps, warmup=warmup, deadline=deadline)


def add_utilisation(report, row: dict) -> dict:
    """Achieved TFLOP/s and the fraction of the device's bf16 peak (CUDA rows with FLOPs)."""
    peak = report.data["device"].get("peak_bf16_tflops")
    if report.device == "cuda" and row.get("flops") and row.get("step_s"):
        tflops = row["flops"] / row["step_s"] / 1e12
        row.update(tflops=round(tflops, 1), fraction_of_peak=round(tflops / peak, 3) if peak else None)
    return row


def guarded(fn, *args, **kwargs) -> dict:
    """One row: its failure is recorded in the row, not raised (the other rows still run)."""
    try:
        return fn(*args, **kwargs)
    except torch.OutOfMemoryError:
        return {"status": "error", "reason": "out of memory"}
    except SectionTimeout:
        raise
    except Exception as exc:
        return {"status": "error", "reason": one_line(exc)}
    finally:
        speed.free_memory()


# ------------------------------------------------------------------------------------------------ builders
@functools.lru_cache(maxsize=2)
def _walk_clips(frames: int, size: int, superpixels: int) -> dict:
    """4 distinct rendered clips with SLIC maps on the CPU (repeated to any batch): rendered once per report."""
    return speed.walk_batch(4, frames, size, superpixels, "cpu")


def walk_builder(report, method: str, channels_last: bool = True, compile_backend: str | None = None):
    """``build(batch)`` -> step closure of a walk method on rendered clips (bf16 autocast on CUDA, SGD)."""
    from ssl_video.config import load_config
    from ssl_video.methods import build_method

    p = report.profile
    cfg = load_config([f"method={method}", f"data.clip_len={p.walk_frames}", f"data.crop_size={p.walk_size}",
                       f"method.patch_size={p.patch[0]}", f"method.patch_stride={p.patch[1]}"])
    base = _walk_clips(p.walk_frames, p.walk_size, p.superpixels)

    def build(batch: int):
        torch.manual_seed(0)
        model = build_method(cfg).to(report.device).train()
        if report.device == "cuda" and channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        if compile_backend:
            model = torch.compile(model, backend=compile_backend)
        batch_dict = {k: v[[i % 4 for i in range(batch)]].to(report.device) for k, v in base.items()}
        return speed.make_step(model, batch_dict, opt, amp=report.device == "cuda")

    return build


def two_view_builder(report, method: str, backbone: str):
    """``build(batch)`` -> step closure of a two-view method (its own config per batch: MoCo's queue and split-BN
    depend on the keys per step)."""
    from ssl_video.config import load_config
    from ssl_video.methods import build_method

    frames, size = report.profile.two_view[backbone]

    def build(batch: int):
        keys = batch * (frames if backbone == "resnet18" else 1)
        over = [f"method={method}", f"backbone={backbone}", f"train.batch_size={batch}",
                f"train.device={report.device}"]
        over += (["data.sampling=frames", f"data.num_frames={frames}"] if backbone == "resnet18"
                 else ["data.sampling=clip", f"data.clip_len={frames}"])
        if method == "moco":  # K ~ 65536 (the study's), a multiple of the keys per step
            split = next((s for s in (8, 4, 2) if keys % s == 0 and keys // s >= 4), 1)  # BN needs > 1 per split
            over += [f"method.queue_size={keys * max(1, round(65536 / keys))}", f"method.split_bn={split}"]
        torch.manual_seed(0)
        model = build_method(load_config(over)).to(report.device).train()
        opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=1e-3, momentum=0.9)
        batch_dict = speed.two_view_batch(batch, frames, size, report.device)
        return speed.make_step(model, batch_dict, opt, amp=report.device == "cuda")

    return build


def reference_builder(report):
    """``build(batch)`` -> videowalk's CRW step: fp32, Adam lr 1e-4, on the grid patches of the same clips."""
    from ssl_video.experiments.videowalk_crw import VideowalkCRW, grid_patches

    p = report.profile
    base = _walk_clips(p.walk_frames, p.walk_size, p.superpixels)["clips"][:, 0]

    def build(batch: int):
        torch.manual_seed(0)
        model = VideowalkCRW(temperature=0.05, edge_dropout=0.1).to(report.device).train()
        x = grid_patches(base[[i % 4 for i in range(batch)]], *p.patch).to(report.device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        return speed.make_step(model, x, opt, amp=False, step_end=False)

    return build
