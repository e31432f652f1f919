"""Step time and peak memory of each two-view method x backbone at a stated batch size.

    python benchmarks/methods.py                                   # CPU, 4 clips x 2 views x 4 frames at 64 px
    python benchmarks/methods.py --device cuda --batch-size 32 --size 160     # bf16 autocast on CUDA

One training step = the trainer's own ``train_step`` (forward, backward, SGD step, ``on_train_step_end``). Each
configuration runs in its own process so its peak memory is its own: CPU peak = the process's max RSS (torch import
included, the baseline is printed); CUDA peak = ``torch.cuda.max_memory_allocated``. Frames backbones see batch x frames
images per view; clip backbones see batch clips of ``--frames`` frames.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time

METHODS = ("moco", "simclr", "byol", "simsiam")
BACKBONES = ("resnet18", "resnet18_gru", "x3d_xs")


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(method: str, backbone: str, args: argparse.Namespace, out: mp.Queue) -> None:
    import torch

    from ssl_video.config import load_config
    from ssl_video.methods.registry import build_method
    from ssl_video.training.step import train_step

    torch.manual_seed(0)
    base_mb = _max_rss_mb()
    device = torch.device(args.device)
    keys = args.batch_size * (args.frames if backbone == "resnet18" else 1)
    overrides = [f"method={method}", f"backbone={backbone}", f"train.batch_size={args.batch_size}",
                 f"data.num_frames={args.frames}", f"data.clip_len={args.frames}", f"train.device={args.device}"]
    if method == "moco":
        overrides += [f"method.queue_size={keys * 64}", f"method.split_bn={2 if keys % 2 == 0 else 1}"]
    cfg = load_config(overrides)
    net = build_method(cfg).to(device)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    clips = torch.randn(args.batch_size, 2, args.frames, 3, args.size, args.size, device=device)
    batch = {"clips": clips, "camera": torch.zeros(args.batch_size, 2, dtype=torch.long, device=device)}
    amp = device.type == "cuda"
    times, cpu_times = [], []
    for step in range(args.warmup + args.steps):
        if amp and step == args.warmup:
            torch.cuda.reset_peak_memory_stats()
        start, cpu_start = time.perf_counter(), time.process_time()
        train_step(net, net, batch, opt, step=step, amp=amp)
        if amp:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if amp else _max_rss_mb()
    step_s = sorted(times[args.warmup :])[len(times[args.warmup :]) // 2]
    cpu_s = sorted(cpu_times[args.warmup :])[len(cpu_times[args.warmup :]) // 2]
    out.put((method, backbone, step_s, cpu_s, peak, base_mb))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--backbones", default=",".join(BACKBONES))
    p.add_argument("--batch-size", type=int, default=4, help="clips per step (per rank)")
    p.add_argument("--frames", type=int, default=4, help="frames per view (images or clip length)")
    p.add_argument("--size", type=int, default=64, help="crop side in pixels")
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but CUDA is not available", file=sys.stderr)
            return 1
    methods, backbones = args.methods.split(","), args.backbones.split(",")
    bad = [m for m in methods if m not in METHODS] + [b for b in backbones if b not in BACKBONES]
    if bad:
        print(f"error: unknown method/backbone {bad[0]!r}; methods: {METHODS}, backbones: {BACKBONES}", file=sys.stderr)
        return 1
    ctx = mp.get_context("spawn")
    mem = "peak CUDA MiB (bf16)" if args.device == "cuda" else "peak RSS MiB"
    print(f"device={args.device} batch={args.batch_size} clips x 2 views x {args.frames} frames at {args.size}px, "
          f"median of {args.steps} steps")
    # CPU s: process CPU seconds per step (all threads); other load inflates it too (spinning threads, shared caches)
    print(f"{'method':<9}{'backbone':<14}{'step s':>9}{'CPU s':>9}{mem:>22}")
    from tqdm import tqdm

    for method in tqdm(methods, desc="methods", leave=False, file=sys.stderr):
        for backbone in backbones:
            queue = ctx.Queue()
            proc = ctx.Process(target=_run, args=(method, backbone, args, queue))
            proc.start()
            proc.join()
            if proc.exitcode != 0:
                print(f"{method:<9}{backbone:<14}{'failed (exit ' + str(proc.exitcode) + ')':>31}")
                continue
            _, _, step_s, cpu_s, peak, base = queue.get()
            extra = f"  (baseline {base:.0f})" if args.device == "cpu" else ""
            print(f"{method:<9}{backbone:<14}{step_s:>9.3f}{cpu_s:>9.3f}{peak:>22.0f}{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
