"""One training step, the only copy: the trainer, the benchmarks and the tests all call :func:`train_step`.

batch -> ``model(batch)`` -> ``{"loss", ...}`` -> finite check -> zero_grad -> backward -> clip -> optimiser step
-> schedule step -> ``method.on_train_step_end(step + 1)`` (EMA targets, queues).
"""

from __future__ import annotations

import torch

from ssl_video.training.errors import NonFiniteLoss


def train_step(
    model,
    method,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    *,
    step: int,
    grad_clip: float | None = None,
    amp: bool = False,
) -> dict:
    """Train on ``batch`` as step ``step + 1``; returns the method's outputs (``out["loss"]`` detached).

    ``model`` is what is called (``method`` itself, or it wrapped in DDP / torch.compile); ``method`` owns the
    parameters and the end-of-step hook. ``amp``: bf16 autocast on the batch's device. A NaN/inf loss raises
    :class:`NonFiniteLoss` before any weight changes, so the last checkpoint stays good.
    """
    method.train()
    with torch.autocast(next(method.parameters()).device.type, dtype=torch.bfloat16, enabled=amp):
        out = model(batch)
    loss = out["loss"]
    if not torch.isfinite(loss).all():
        raise NonFiniteLoss(f"loss is {loss.item()} at step {step + 1}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(method.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    method.on_train_step_end(step + 1)
    return {**out, "loss": loss.detach()}
