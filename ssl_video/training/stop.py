"""Stopping on request: SIGUSR2 (submitit's preemption / time-limit warning) and SIGTERM (SLURM preemption, scancel,
the time limit itself, systemd) ask for a checkpoint at the end of the current step, then an exit that requeues.

DataLoader workers ignore both signals (``ssl_video.data.loader``'s worker_init_fn), so a signal sent to the whole
process group reaches only the trainer, which finishes its step with the workers still running. Under submitit the
preemption handler installed before ours checkpoints the job object and requeues it (``scontrol requeue``);
:meth:`Stop.exit` calls it for SIGTERM too (submitit itself only logs SIGTERM), so both signals requeue.
"""

from __future__ import annotations

import signal
import sys

import torch

SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class Stop:
    """Records a stop request from a signal; :meth:`exit` hands over to submitit's requeue (if any) and exits 0."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self.previous = {sig: signal.signal(sig, self._handler) for sig in SIGNALS}

    def _handler(self, signum, frame) -> None:
        self.requested = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def exit(self) -> None:
        # submitit's SIGUSR2 handler is the one that requeues (its SIGTERM handler only logs): use it for both
        previous = self.previous.get(signal.SIGUSR2)
        requested = self.requested
        self.restore()
        if callable(previous):
            previous(requested, None)  # submitit: checkpoint() -> scontrol requeue -> exit
        sys.exit(0)


def agree(stopping: bool, world_size: int, device: torch.device) -> bool:
    """True on every rank when any rank was asked to stop: a signal may reach the ranks at different steps."""
    if world_size == 1:
        return stopping
    flag = torch.tensor([float(stopping)], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())
