"""The trainer: one code path for a plain process (CPU / one GPU), torchrun and SLURM (submitit).

``python -m ssl_video.train method=walk_superpixel data=synthetic train.steps=30 train.out_dir=runs/demo``

Per step: batch -> ``method(batch)`` -> ``{"loss", ...}`` -> backward -> clip -> optimiser -> schedule ->
``method.on_train_step_end(step)``. Checkpoints (atomic) every ``train.ckpt_every`` steps, at the end, and on
SIGUSR2/SIGTERM (then exit so SLURM requeues). A non-finite loss stops the run before the weights change, so the last
checkpoint stays good. Resume restores model, optimiser, schedule, step and RNG states, and the data order continues
exactly: the loader is a pure function of (seed, epoch, rank), so the trainer rebuilds the epoch and skips the batches
already done. Only rank 0 writes TensorBoard and checkpoints.
"""

from __future__ import annotations

import random
import resource
import signal
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ssl_video import checkpoint as ckpt
from ssl_video.config import ConfigError, load_config, save_config, to_yaml
from ssl_video.data.augment import augment_batch_on_device
from ssl_video.distributed import DistInfo, init_distributed
from ssl_video.methods.registry import build_method
from ssl_video.optim import build_optimizer, build_scheduler


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf; the run stops and the last checkpoint is kept."""


class Stop:
    """SIGUSR2 / SIGTERM ask for a checkpoint at the end of the current step, then an exit.

    Under submitit the handler installed before ours requeues the job: ``exit()`` hands the signal on to it once the
    checkpoint is written, so SLURM requeues and the new job resumes from that checkpoint.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self.previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGUSR2, signal.SIGTERM)}

    def _handler(self, signum, frame) -> None:
        self.requested = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def exit(self) -> None:
        previous = self.previous.get(self.requested)
        if callable(previous):
            previous(self.requested, None)  # submitit: checkpoint() -> requeue -> exit
        sys.exit(0)


def peak_mib(device: torch.device) -> float:
    """Peak memory in MiB: on CUDA the allocator's peak of tensor memory on ``device``; on CPU the process's peak
    resident set size (``ru_maxrss``: KiB on Linux, bytes on macOS), which also counts Python, libraries and loader
    buffers held by this process (not its DataLoader workers), so the tag exists on every device."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _device(cfg, info: DistInfo) -> torch.device:
    if cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train(cfg, loader_fn=None) -> dict:
    """Run (or resume) the training described by ``cfg``; returns ``{"step", "loss"}`` of the last step."""
    info = init_distributed(cfg.train.device)
    device = _device(cfg, info)
    out_dir = Path(cfg.train.out_dir)
    torch.manual_seed(cfg.train.seed + info.rank)
    if cfg.train.deterministic:
        # bit-reproducible runs: deterministic kernels, and on CPU one intra-op thread (threaded float reductions
        # may split work differently from run to run under load)
        torch.use_deterministic_algorithms(True)
        if device.type == "cpu":
            torch.set_num_threads(1)
    if loader_fn is None:
        from ssl_video.data.loader import build_loader as loader_fn

    method = build_method(cfg).to(device)
    if cfg.train.channels_last:
        method = method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(method, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.train.steps)

    step = 0
    latest = ckpt.latest_checkpoint(out_dir) if cfg.train.resume else None
    if latest is not None:
        state = ckpt.load_checkpoint(latest, map_location=device)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        step = int(state["step"])
        if info.is_main:
            print(f"resumed from {latest} at step {step}", flush=True)

    model = method
    if info.world_size > 1:
        model = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        # compile the module the step calls (DDP-wrapped when distributed, so compile's DDP optimiser splits graphs
        # at bucket boundaries); checkpoints still save ``method``, whose parameter names compile does not prefix
        model = torch.compile(model)

    writer = None
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"), purge_step=step)

    def save(at: int) -> None:
        if info.is_main:
            state = {
                "model": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": at,
                "rng": ckpt.rng_state(),
                "config": to_yaml(cfg),
                "world_size": info.world_size,
            }
            ckpt.save_checkpoint(state, out_dir, at, cfg.train.keep_last)
        if info.world_size > 1:
            torch.distributed.barrier()

    stop = Stop()
    use_amp = cfg.train.amp and device.type == "cuda"
    epoch_length = cfg.data.epoch_length
    bar = tqdm(total=cfg.train.steps, initial=step, disable=not info.is_main, desc="train", dynamic_ncols=True)
    last = {"step": step, "loss": float("nan")}
    skipped_total = 0
    while step < cfg.train.steps:
        epoch, skip = divmod(step, epoch_length)
        loader = loader_fn(
            cfg.data, batch_size=cfg.train.batch_size, rank=info.rank, world_size=info.world_size,
            seed=cfg.train.seed, epoch=epoch,
        )  # fmt: skip
        batches = iter(loader)
        for _ in range(skip):  # resume mid-epoch: the same batches in the same order, already trained on
            next(batches)
        wait_start = time.perf_counter()
        for batch in batches:
            data_wait = time.perf_counter() - wait_start
            step_start = time.perf_counter()
            skipped_total += int(batch.pop("skipped", torch.zeros(1)).sum())
            batch = _to(batch, device)
            if cfg.data.gpu_augment:  # the photometric part the workers left out, on whole batches where they live
                # seeded by (seed, rank, step): a resumed run draws the same colours for the same step
                draw = random.Random((cfg.train.seed * 1_000_003 + info.rank) * 1_000_003 + step)
                batch["clips"] = augment_batch_on_device(batch["clips"], cfg.data, draw)
            method.train()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = model(batch)
            loss = out["loss"]
            if not torch.isfinite(loss).all():
                bar.close()
                stop.restore()
                raise NonFiniteLoss(
                    f"loss is {loss.item()} at step {step + 1}; stopping (last good checkpoint kept in "
                    f"{ckpt.checkpoint_dir(out_dir)})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            method.on_train_step_end(step + 1)
            step += 1
            last = {"step": step, "loss": float(loss.detach())}
            bar.update(1)
            if writer is not None and (step % cfg.train.log_every == 0 or step == 1):
                elapsed = time.perf_counter() - step_start + data_wait
                writer.add_scalar("Training/loss", last["loss"], step)
                writer.add_scalar("Training/lr", optimizer.param_groups[0]["lr"], step)
                writer.add_scalar("Speed/clips_per_sec_per_gpu", cfg.train.batch_size / max(elapsed, 1e-9), step)
                writer.add_scalar("Speed/data_wait_fraction", data_wait / max(elapsed, 1e-9), step)
                writer.add_scalar("Data/skipped_samples", skipped_total, step)
                writer.add_scalar("Memory/peak_MiB", peak_mib(device), step)
                for key, value in out.items():
                    if key != "loss" and torch.is_tensor(value) and value.numel() == 1:
                        writer.add_scalar(f"Method/{key}", float(value), step)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
            if writer is not None and cfg.train.image_every and step % cfg.train.image_every == 0:
                method.eval()
                for tag, image in method.visualize(batch).items():
                    writer.add_image(f"Images/{tag}", image.float().clamp(0, 1).cpu(), step)
            stopping = stop.requested is not None
            if info.world_size > 1:  # agree across ranks: a signal may reach them at different steps
                flag = torch.tensor([float(stopping)], device=device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                stopping = bool(flag.item())
            if step % cfg.train.ckpt_every == 0 or step == cfg.train.steps or stopping:
                save(step)
            if stopping:
                bar.close()
                print(f"signal received: checkpoint written at step {step}; exiting for requeue", flush=True)
                if writer is not None:
                    writer.close()
                stop.exit()
            if step >= cfg.train.steps:
                break
            wait_start = time.perf_counter()
    bar.close()
    stop.restore()
    if writer is not None:
        writer.close()
    return last


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = load_config(argv)
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    print(OmegaConf.to_yaml(cfg), flush=True)
    try:
        result = train(cfg)
    except (NonFiniteLoss, ConfigError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
    print(f"finished at step {result['step']} (loss {result['loss']:.4f}); logs: {Path(cfg.train.out_dir) / 'tb'}")


if __name__ == "__main__":
    main()
