"""Walk step with superpixels computed on the fly (slic_fast per batch) against walk_patch, like for like.

    python benchmarks/walk_superpixels_on_the_fly.py                       # CPU: 2 clips of 4 frames at 128²
    python benchmarks/walk_superpixels_on_the_fly.py --device cuda --batch 32 --size 256 --steps 10

The superpixel study's speed comparison (time per epoch SLIC-10 9:14 ... SLIC-50 14:59 vs patches 16:27) grows with
the node count. Here every row trains on the same clips with the same model and optimiser (Adam, lr 1e-4, the walk
recipe), bf16 autocast on CUDA: ``walk_patch`` (64² patches at stride 32 on 256², scaled with ``--size``), and
``walk_superpixel`` with SLIC-10/30/50 at compactness 30 whose maps are recomputed by ``slic_fast`` on the batch's
frames inside every timed step (on the step's device), as training without packed maps would. Per row: the step time
(median of ``--steps`` after a warm-up; CUDA: wall clock, synchronised; CPU: process CPU time), the part spent in
``slic_fast``, clips/s, nodes per frame, and the ratio to walk_patch. Clips are rendered moving shapes
(ssl_video.synthetic.render), so the GPU machine needs no footage.

``on_the_fly_rows(device, batch, size, steps)`` returns the rows as dicts (used by tools/gpu_report.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from ssl_video.normalise import IMAGENET_MEAN, IMAGENET_STD
from ssl_video.superpixels.segment import slic_fast

SLIC_PRESETS = (10, 30, 50)  # the study's SLIC-10 / 30 / 50
COMPACTNESS = 30.0


def rendered_clips(batch: int, frames: int, size: int) -> torch.Tensor:
    """``(B, T, H, W, 3)`` uint8 clips of moving textured shapes (a few distinct ones, repeated)."""
    from ssl_video.synthetic.render import render_sequence

    clips = [torch.from_numpy(render_sequence(seed, frames, (size, size), num_objects=3)[0])
             for seed in range(min(batch, 4))]
    return torch.stack([clips[i % len(clips)] for i in range(batch)])


def normalise(clips: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, T, H, W, 3)`` -> the loader's ``(B, 1, T, 3, H, W)`` ImageNet-normalised float clips."""
    mean = torch.tensor(IMAGENET_MEAN, device=clips.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=clips.device).view(3, 1, 1)
    return ((clips.permute(0, 1, 4, 2, 3).float() / 255 - mean) / std)[:, None]


def superpixel_batch(clips: torch.Tensor, n_segments: int) -> dict[str, torch.Tensor]:
    """The batch's ``superpixels`` ``(B, T, H, W)`` and ``num_superpixels`` ``(B, T)`` from slic_fast on all frames."""
    b, t, h, w, _ = clips.shape
    labels = slic_fast(clips.reshape(b * t, h, w, 3), n_segments=n_segments, compactness=COMPACTNESS).view(b, t, h, w)
    return {"superpixels": labels, "num_superpixels": labels.amax(dim=(-2, -1)) + 1}


def build(method: str, frames: int, size: int, device: str) -> torch.nn.Module:
    from ssl_video.config import load_config
    from ssl_video.methods.registry import build_method

    cfg = load_config([f"method={method}", f"data.clip_len={frames}", f"data.crop_size={size}",
                       f"method.patch_size={size // 4}", f"method.patch_stride={size // 8}"])
    return build_method(cfg).to(device).train()


def time_row(method: str, clips: torch.Tensor, n_segments: int | None, steps: int, device: str) -> dict:
    """Median step time of ``method`` on ``clips``; with ``n_segments`` the superpixels are made inside the step."""
    torch.manual_seed(0)
    b, t, size = clips.shape[0], clips.shape[1], clips.shape[2]
    model = build(method, t, size, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    cuda = device.startswith("cuda")
    clock = time.perf_counter if cuda else time.process_time
    inputs = {"clips": normalise(clips)}

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def step() -> tuple[float, dict]:
        start = clock()
        batch = dict(inputs)
        if n_segments is not None:
            batch.update(superpixel_batch(clips, n_segments))
        sync()
        made = clock() - start
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out = model(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        return made, out

    step()  # warm-up: kernels, allocator, cached slic tables
    sync()
    times, slic_times = [], []
    for _ in range(steps):
        start = clock()
        made, out = step()
        sync()
        times.append(clock() - start)
        slic_times.append(made)
    step_s = statistics.median(times)
    name = method if n_segments is None else f"{method} SLIC-{n_segments}"
    return {"row": name, "method": method, "n_segments": n_segments, "batch": b, "frames": t, "size": size,
            "device": device, "clock": "wall" if cuda else "cpu", "step_s": step_s, "step_s_all": times,
            "slic_s": statistics.median(slic_times), "clips_per_s": b / step_s,
            "nodes_per_frame": float(out["nodes_per_frame"])}


def on_the_fly_rows(device: str = "cpu", batch: int = 2, size: int = 128, steps: int = 3,
                    frames: int = 4) -> list[dict]:
    """walk_patch, then walk_superpixel with slic_fast SLIC-10/30/50 computed per step; each with ``vs_patch``."""
    clips = rendered_clips(batch, frames, size).to(device)
    rows = [time_row("walk_patch", clips, None, steps, device)]
    rows += [time_row("walk_superpixel", clips, n, steps, device) for n in SLIC_PRESETS]
    for row in rows:
        row["vs_patch"] = row["step_s"] / rows[0]["step_s"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: CPU time per core, as elsewhere)")
    args = ap.parse_args()
    if not args.device.startswith("cuda"):
        torch.set_num_threads(args.threads)
    rows = on_the_fly_rows(args.device, args.batch, args.size, args.steps, args.frames)
    cpu = f"CPU, {torch.get_num_threads()} threads"
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu
    print(f"{args.batch} clips x {args.frames} frames {args.size}², {where}, {rows[0]['clock']} time, "
          f"median of {args.steps} steps; superpixels by slic_fast inside each step")
    for r in rows:
        print(f"{r['row']:>26}: step {r['step_s'] * 1000:8.1f} ms (slic {r['slic_s'] * 1000:7.1f} ms)  "
              f"{r['clips_per_s']:7.2f} clips/s  {r['nodes_per_frame']:5.1f} nodes/frame  {r['vs_patch']:.2f}x patch")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
