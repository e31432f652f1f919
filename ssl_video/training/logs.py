"""TensorBoard logging of a run (rank 0 only): one scalar per tag per logged step, exactly once across resumes.

Tags: ``Training/loss``, ``Training/lr``, ``Speed/clips_per_sec_per_gpu``, ``Speed/data_wait_fraction``,
``Data/skipped_samples``, ``Memory/peak_MiB``, ``Method/<key>`` (scalars the method returns), ``Images/<tag>``.

Resume: the writer purges events *after* the checkpoint step (``purge_step = step + 1``), i.e. what a killed run
logged past its last checkpoint, and keeps the checkpoint step itself (``purge_step = step`` dropped it: a run resumed
twice showed steps 1,2,3,5,6,8). The writer is flushed before every checkpoint, so every step up to a checkpoint is
on disk when the checkpoint is.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch


def peak_mib(device: torch.device) -> float:
    """Peak memory in MiB: on CUDA the allocator's peak of tensor memory on ``device``; on CPU the process's peak
    resident set size (``ru_maxrss``: KiB on Linux, bytes on macOS), which also counts Python, libraries and loader
    buffers held by this process (not its DataLoader workers), so the tag exists on every device."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class TrainLog:
    """The run's SummaryWriter (``<out_dir>/tb``), or nothing on ranks other than 0."""

    def __init__(self, out_dir: Path, start_step: int, enabled: bool) -> None:
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(out_dir) / "tb"), purge_step=start_step + 1 if start_step else None)

    def due(self, step: int, every: int) -> bool:
        return self.writer is not None and every > 0 and (step % every == 0 or step == 1)

    def scalars(self, step: int, out: dict, *, lr: float, clips: int, seconds: float, data_wait: float,
                skipped: int, device: torch.device) -> None:  # fmt: skip
        """The step's scalars; ``seconds`` is the step's wall time including ``data_wait``."""
        write = self.writer.add_scalar
        write("Training/loss", float(out["loss"]), step)
        write("Training/lr", lr, step)
        write("Speed/clips_per_sec_per_gpu", clips / max(seconds, 1e-9), step)
        write("Speed/data_wait_fraction", data_wait / max(seconds, 1e-9), step)
        write("Data/skipped_samples", skipped, step)
        write("Memory/peak_MiB", peak_mib(device), step)
        for key, value in out.items():
            if key != "loss" and torch.is_tensor(value) and value.numel() == 1:
                write(f"Method/{key}", float(value), step)

    def images(self, step: int, method, batch: dict) -> None:
        method.eval()
        for tag, image in method.visualize(batch).items():
            self.writer.add_image(f"Images/{tag}", image.float().clamp(0, 1).cpu(), step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
