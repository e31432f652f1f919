"""Speed-measurement helpers shared by ``benchmarks/`` and ``tools/gpu_report.py``.

One training step is forward (bf16 autocast on CUDA, as the trainer runs it), backward, optimiser step and the
method's ``on_train_step_end``. FLOPs are counted by ``torch.utils.flop_counter`` (convolutions and matrix products,
forward and backward); the device's dense bf16 tensor-core peak comes from :data:`PEAKS` by device name.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device-name fragment, from the vendors' data sheets
PEAKS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a device by name (longest matching fragment first), or None when unknown."""
    for key in sorted(PEAKS, key=len, reverse=True):
        if key in device_name:
            return PEAKS[key]
    return None


def walk_batch(batch: int, frames: int, size: int, superpixels: int, device: str) -> dict[str, torch.Tensor]:
    """A batch in the loader's schema: rendered moving shapes, normalised, with SLIC maps (for the walk methods)."""
    from ssl_video.normalise import normalise
    from ssl_video.superpixels.segment import segment
    from ssl_video.synthetic.generate import render_sequence

    clips, sps = [], []
    for seed in range(min(batch, 4)):  # a few distinct clips, repeated: rendering is not what is measured
        rgb, _ = render_sequence(seed, num_frames=frames, size=(size, size), num_objects=3)
        sps.append(torch.from_numpy(segment(rgb, "slic", n_segments=superpixels, compactness=10.0,
                                            start_label=0).astype(np.int64)))
        clips.append(normalise(torch.from_numpy(rgb).permute(0, 3, 1, 2)))
    idx = [i % len(clips) for i in range(batch)]
    sp = torch.stack([sps[i] for i in idx])
    return {
        "clips": torch.stack([clips[i] for i in idx])[:, None].to(device),
        "superpixels": sp.to(device),
        "num_superpixels": (sp.amax(dim=(-2, -1)) + 1).to(device),
    }


def two_view_batch(batch: int, frames: int, size: int, device: str) -> dict[str, torch.Tensor]:
    """Random normalised two-view clips ``(B, 2, T, 3, size, size)`` and camera ids (speed only, not learning)."""
    gen = torch.Generator().manual_seed(0)
    clips = torch.randn(batch, 2, frames, 3, size, size, generator=gen)
    return {"clips": clips.to(device), "camera": torch.zeros(batch, 2, dtype=torch.long, device=device)}


def make_step(model: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer, amp: bool,
              step_end: bool = True) -> Callable[[], dict]:
    """A closure running one training step on ``batch``; bf16 autocast when ``amp`` (CUDA)."""
    device_type = next(model.parameters()).device.type
    counter = [0]

    def step() -> dict:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            out = model(batch)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        counter[0] += 1
        if step_end and hasattr(model, "on_train_step_end"):
            model.on_train_step_end(counter[0])
        return out

    return step


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_steps(step: Callable[[], dict], device: str, steps: int = 3, warmup: int = 1,
               deadline: float | None = None) -> dict:
    """Median wall and CPU seconds of ``steps`` timed calls after ``warmup`` (fewer if ``deadline`` passes), and
    the peak memory of the timed steps (CUDA ``max_memory_allocated``; None on CPU)."""
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        step()
    sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if deadline is not None and time.monotonic() > deadline:
            break
    return {"step_s": statistics.median(times), "step_s_all": times, "cpu_s": statistics.median(cpu),
            "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None}


def count_flops(step: Callable[[], dict]) -> int:
    """FLOPs of one call of ``step`` (forward + backward convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def free_memory() -> None:
    """Release what a failed or finished probe left (after its frames are gone), so the next one starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def largest_batch(fits: Callable[[int], bool], start: int = 1, limit: int = 4096, deadline: float | None = None,
                  tolerance: float = 0.05) -> tuple[int, str]:
    """Largest ``b <= limit`` with ``fits(b)``: doubling from ``start``, then bisection to within ``tolerance``.

    Returns ``(batch, how)``: how is ``"bisected"``, ``"limit"`` (``limit`` fits), ``"time"`` (``deadline`` passed:
    the largest batch seen to fit so far) or ``"none"`` (not even 1 fits).
    """
    lo, hi = 0, max(1, start)
    while hi <= limit and fits(hi):  # doubling: lo fits, hi does not (or is past the limit)
        lo, hi = hi, hi * 2
        if deadline is not None and time.monotonic() > deadline:
            return lo, "time"
    if lo == 0 and hi > 1:  # the start itself did not fit: bisect below it
        hi_fail = hi
        while hi_fail > 1 and lo == 0:
            hi_fail //= 2
            if fits(hi_fail):
                lo, hi = hi_fail, hi_fail * 2
            elif deadline is not None and time.monotonic() > deadline:
                return 0, "time"
    if lo == 0:
        return 0, "none"
    hi = min(hi, limit + 1)  # lo fits; hi does not, or is past the limit
    while hi - lo > max(1, int(lo * tolerance)):
        if deadline is not None and time.monotonic() > deadline:
            return lo, "time"
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo, "limit" if lo == limit else "bisected"
