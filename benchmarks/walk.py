"""Benchmark one training step of walk_patch vs walk_superpixel at the same clip size.

    python benchmarks/walk.py                          # CPU: 2 clips of 4 frames at 128², 3 timed steps
    python benchmarks/walk.py --size 256 --batch 8 --budget-gb 70    # on a GPU: bf16 autocast, FLOP/s utilisation

Prints per method: FLOPs of one step (``torch.utils.flop_counter``: convolutions and matmuls), step time (forward +
backward + SGD step, median of ``--steps``), clips/s, peak memory, the largest batch that fits ``--budget-gb``, and on
CUDA the achieved FLOP/s and its fraction of the device's bf16 peak (``ssl_video.speed.PEAKS``). The one-shot report
of every method on a GPU is ``tools/gpu_report.py``; this script is the walk-only, CPU-friendly view.
Patches default to ``size/4`` at stride ``size/8`` (7×7 = 49 nodes, videowalk's 64 at 32 on 256²); superpixels are
SLIC with ``--superpixels`` segments on rendered moving shapes, so both graphs have about the same node count.

On CPU the step is also given in process CPU seconds (all threads); other load inflates that less than wall time but
still does (measured: superpixel/patch CPU ratio 0.34 idle, 0.46 busy): compare figures from a quiet machine.

Peak memory: CUDA ``max_memory_allocated``; CPU the growth of the process's peak RSS (``resource.getrusage``) over
the steps, each measurement in a fresh subprocess so one does not hide the next. Largest batch: on CUDA found by
doubling then bisecting until out-of-memory; on CPU extrapolated linearly from the peaks at ``batch`` and
``2*batch`` (labelled "est.").
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ssl_video.config import ConfigError, load_config
from ssl_video.device import resolve_device
from ssl_video.methods import build_method
from ssl_video.speed import largest_batch, walk_batch
from ssl_video.speed import peak_tflops as device_peak


def build(method: str, args) -> torch.nn.Module:
    patch = args.patch_size or args.size // 4
    stride = args.patch_stride or args.size // 8
    cfg = load_config([f"method={method}", f"data.clip_len={args.frames}", f"data.crop_size={args.size}",
                       f"method.patch_size={patch}", f"method.patch_stride={stride}"])
    return build_method(cfg)


def run_steps(method: str, batch_size: int, args, device: str, count_flops: bool = False) -> dict:
    """Time ``args.steps`` optimiser steps after ``args.warmup``; peak memory and FLOPs of one step."""
    torch.manual_seed(0)
    model = build(method, args).to(device).train()
    if device == "cuda" and args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batch = walk_batch(batch_size, args.frames, args.size, args.superpixels, device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda" and not args.fp32)

    def step():
        with amp:
            out = model(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        return out

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = step()
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:  # ru_maxrss is in KiB on Linux; the warm-up already allocated parameters, grads and momentum
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024
    flops = None
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops()
    # CPU: process CPU seconds (all threads) per step as well, less disturbed by other load than wall time
    result = {"method": method, "batch": batch_size, "step_s": statistics.median(times), "step_s_all": times,
              "cpu_s": statistics.median(cpu_times),
              "peak_bytes": peak, "walk_acc": float(out["walk_acc"]), "nodes": float(out["nodes_per_frame"]),
              "flops": flops}
    if device != "cuda":
        result["peak_growth_bytes"] = peak_growth
    return result


def cpu_measure(method: str, batch_size: int, args) -> dict:
    """One measurement in a fresh process, so that peak RSS belongs to it alone."""
    cmd = [sys.executable, __file__, "--worker", method, "--worker-batch", str(batch_size)] + args.passthrough
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} batch {batch_size} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cuda_largest_batch(method: str, args, budget: int) -> int:
    """Largest batch whose step peak stays within ``budget`` bytes: doubling, then bisection."""

    def fits(b: int) -> bool:
        try:
            ok = run_steps(method, b, argparse.Namespace(**{**vars(args), "steps": 1, "warmup": 1}), "cuda")
            return ok["peak_bytes"] <= budget
        except torch.OutOfMemoryError:
            return False
        finally:
            torch.cuda.empty_cache()

    return largest_batch(fits, start=1, limit=4096, tolerance=0.0)[0]


def peak_tflops(args) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    return device_peak(torch.cuda.get_device_name())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["walk_patch", "walk_superpixel"])
    parser.add_argument("--size", type=int, default=128, help="square crop side")
    parser.add_argument("--frames", type=int, default=4, help="clip length T")
    parser.add_argument("--batch", type=int, default=2, help="clips per step")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (oneDNN/cuDNN pick kernels)")
    parser.add_argument("--patch-size", type=int, default=0, help="0: size/4")
    parser.add_argument("--patch-stride", type=int, default=0, help="0: size/8")
    parser.add_argument("--superpixels", type=int, default=64, help="SLIC n_segments")
    parser.add_argument("--budget-gb", type=float, default=4.0, help="memory budget for the largest-batch search")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--fp32", action="store_true", help="CUDA: no bf16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device bf16 peak; 0: by device name")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--worker-batch", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def measure_row(method: str, args, device: str, budget: int) -> dict:
    """One method's step at ``args.batch`` and its largest batch in ``budget`` bytes: measured on CUDA; on CPU
    estimated from the peak memory at the batch and twice it (linear in the batch)."""
    if device == "cuda":
        row = run_steps(method, args.batch, args, "cuda", count_flops=True)
        row["largest_batch"], row["largest_batch_kind"] = cuda_largest_batch(method, args, budget), "measured"
        return row
    row = cpu_measure(method, args.batch, args)
    double = cpu_measure(method, 2 * args.batch, args)
    per_clip = (double["peak_bytes"] - row["peak_bytes"]) / args.batch
    if per_clip < 2**16:  # the peak did not grow with the batch (tiny clips, allocator reuse): no estimate
        row["largest_batch"], row["largest_batch_kind"] = "?", "est."
        return row
    fixed = row["peak_bytes"] - per_clip * args.batch
    row["largest_batch"], row["largest_batch_kind"] = max(int((budget - fixed) // per_clip), 0), "est."
    return row


def print_table(rows: list[dict], args, device: str) -> None:
    peak = peak_tflops(args) if device == "cuda" else None
    dtype = "bf16 autocast" if device == "cuda" and not args.fp32 else "fp32"
    where = torch.cuda.get_device_name() if device == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {device} ({where}"
          f", {dtype}); clips {args.batch}x{args.frames}x{args.size}²; budget {args.budget_gb:g} GiB")
    print(f"{'method':<17}{'nodes':>6}{'GFLOP':>8}{'step s':>9}{'clips/s':>9}{'peak MiB':>10}{'max batch':>14}"
          + (f"{'TFLOP/s':>9}{'of peak':>9}" if device == "cuda" else f"{'CPU s':>9}"))
    for r in rows:
        gflop = f"{r['flops'] / 1e9:>8.1f}" if r["flops"] else f"{'?':>8}"
        line = (f"{r['method']:<17}{r['nodes']:>6.1f}{gflop}{r['step_s']:>9.3f}{r['batch'] / r['step_s']:>9.2f}"
                f"{r['peak_bytes'] / 2**20:>10.0f}{str(r['largest_batch']) + ' ' + r['largest_batch_kind']:>14}")
        if device == "cuda":
            tflops = r["flops"] / r["step_s"] / 1e12
            line += f"{tflops:>9.1f}" + (f"{100 * tflops / peak:>8.1f}%" if peak else f"{'?':>9}")
        else:
            line += f"{r['cpu_s']:>9.3f}"
        print(line)
    by = {r["method"]: r for r in rows}
    if {"walk_patch", "walk_superpixel"} <= set(by):
        ratio = by["walk_superpixel"]["step_s"] / by["walk_patch"]["step_s"]
        print(f"walk_superpixel / walk_patch step time: {ratio:.2f} (goal <= 0.5)")
        if device != "cuda":
            cpu_ratio = by["walk_superpixel"]["cpu_s"] / by["walk_patch"]["cpu_s"]
            print(f"walk_superpixel / walk_patch CPU time per step: {cpu_ratio:.2f} (less load-sensitive)")
        if by["walk_patch"]["flops"] and by["walk_superpixel"]["flops"]:
            flop_ratio = by["walk_superpixel"]["flops"] / by["walk_patch"]["flops"]
            print(f"walk_superpixel / walk_patch FLOPs per step: {flop_ratio:.2f} (timing-noise free)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    try:
        device = resolve_device(args.device).type
    except ConfigError as exc:
        print(f"error: --device: {exc}", file=sys.stderr)
        return 2
    try:
        if args.worker:
            print(json.dumps(run_steps(args.worker, args.worker_batch, args, "cpu", count_flops=True)))
            return 0
        skip = {"--worker", "--worker-batch", "--json"}
        args.passthrough = [a for i, a in enumerate(argv) if a not in skip and (i == 0 or argv[i - 1] not in skip)]
        args.passthrough += ["--device", "cpu"]
        budget = int(args.budget_gb * 2**30)
        rows = [measure_row(method, args, device, budget)
                for method in tqdm(args.methods, desc="bench_walk", unit="method")]
    except (ConfigError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_table(rows, args, device)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
