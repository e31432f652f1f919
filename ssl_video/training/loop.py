"""The run loop: epochs of batches -> :func:`train_step` -> logs -> checkpoints, until ``train.steps`` or a stop.

Resume continues the data order exactly: the loader is a pure function of (seed, epoch, rank), so the loop rebuilds
the epoch it stopped in and skips the batches already trained on. Checkpoints every ``train.ckpt_every`` steps, at
the end, and when a stop signal arrived (then exit so SLURM requeues); only rank 0 writes them.
"""

from __future__ import annotations

import random
import time

import torch
from tqdm import tqdm

from ssl_video import checkpoint as ckpt
from ssl_video import tb_logging
from ssl_video.config import to_yaml
from ssl_video.data.augment import augment_batch_on_device
from ssl_video.training.errors import CheckpointError, NonFiniteLoss, RunError, one_line
from ssl_video.training.logs import TrainLog
from ssl_video.training.setup import Run, _share
from ssl_video.training.step import train_step
from ssl_video.training.stop import Stop, agree


def _batches(run: Run, loader_fn):
    """``(batch, seconds waited for it)`` from the current step to the end of its epoch; loader errors (no shards,
    too many bad samples in a row, a worker's exception) become one-line :class:`RunError`s."""
    cfg = run.cfg
    epoch, skip = divmod(run.step, cfg.data.epoch_length)
    try:
        loader = loader_fn(cfg.data, batch_size=cfg.train.batch_size, rank=run.info.rank,
                           world_size=run.info.world_size, seed=cfg.train.seed, epoch=epoch)  # fmt: skip
        batches = iter(loader)
        for _ in range(skip):  # resume mid-epoch: the same batches in the same order, already trained on
            next(batches)
    except RunError:
        raise
    except Exception as exc:  # StopIteration too: an epoch shorter than the batches a resume skips
        raise RunError(f"data: {one_line(exc)}") from exc
    try:
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as exc:
                raise RunError(f"data: {one_line(exc)}") from exc
            yield batch, time.perf_counter() - start
    finally:
        # stop the workers now, also on Ctrl-C or an error: the traceback would keep the iterator (and its workers,
        # which then print their own tracebacks) alive until the interpreter exits
        shutdown = getattr(batches, "_shutdown_workers", None)  # torch's multi-process iterator
        if shutdown is not None:
            shutdown()


def _to_device(run: Run, batch: dict) -> dict:
    batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
    if run.cfg.data.gpu_augment:  # the photometric part the workers left out, on whole batches where they live
        # seeded by (seed, rank, step): a resumed run draws the same colours for the same step
        draw = random.Random((run.cfg.train.seed * 1_000_003 + run.info.rank) * 1_000_003 + run.step)
        batch["clips"] = augment_batch_on_device(batch["clips"], run.cfg.data, draw)
    return batch


def save(run: Run, log: TrainLog) -> None:
    """Checkpoint the current step on rank 0 (TensorBoard flushed first); a failed write stops every rank."""
    error = ""
    if run.info.is_main:
        log.flush()
        state = {"model": run.method.state_dict(), "optimizer": run.optimizer.state_dict(),
                 "scheduler": run.scheduler.state_dict(), "step": run.step, "rng": ckpt.rng_state(),
                 "config": to_yaml(run.cfg), "world_size": run.info.world_size}  # fmt: skip
        try:
            ckpt.save_checkpoint(state, run.out_dir, run.step, run.cfg.train.keep_last)
        except CheckpointError as exc:
            error = str(exc)
    error = _share(error, run.info)  # also the barrier: no rank runs ahead of a checkpoint
    if error:
        raise CheckpointError(error)


def _step(run: Run, batch: dict) -> dict:
    cfg = run.cfg
    try:
        out = train_step(run.model, run.method, batch, run.optimizer, run.scheduler, step=run.step,
                         grad_clip=cfg.optim.grad_clip, amp=cfg.train.amp and run.device.type == "cuda")  # fmt: skip
    except NonFiniteLoss as exc:
        last = ckpt.latest_checkpoint(run.out_dir)
        raise NonFiniteLoss(f"{exc}; stopping (last good checkpoint: {last or 'none'}, in "
                            f"{ckpt.checkpoint_dir(run.out_dir)})") from None  # fmt: skip
    run.step += 1
    return out


def run_loop(run: Run, loader_fn, on_first_batch=None) -> dict:
    """Train from ``run.step`` to ``train.steps``; returns ``{"step", "loss"}`` of the last step.

    ``on_first_batch(run)`` runs once the first batch has arrived (so a data error is reported before it)."""
    cfg = run.cfg
    log = TrainLog(run.out_dir, run.step, run.info.is_main)
    if log.writer is not None:
        tb_logging.log_run_config(log.writer, cfg, run.step)
    stop = Stop()
    bar = tqdm(total=cfg.train.steps, initial=run.step, disable=not run.info.is_main, desc="train", dynamic_ncols=True)
    last = {"step": run.step, "loss": float("nan")}
    skipped = 0
    try:
        while run.step < cfg.train.steps:
            for batch, data_wait in _batches(run, loader_fn):
                if on_first_batch is not None:
                    on_first_batch(run)
                    on_first_batch = None
                started = time.perf_counter()
                skipped += int(batch.pop("skipped", torch.zeros(1)).sum())
                batch = _to_device(run, batch)
                out = _step(run, batch)
                last = {"step": run.step, "loss": float(out["loss"])}
                bar.update(1)
                if log.due(run.step, cfg.train.log_every):
                    log.scalars(run.step, out, lr=run.optimizer.param_groups[0]["lr"], clips=cfg.train.batch_size,
                                seconds=time.perf_counter() - started + data_wait, data_wait=data_wait,
                                skipped=skipped, device=run.device)  # fmt: skip
                    bar.set_postfix(loss=f"{last['loss']:.4f}")
                if log.writer is not None and cfg.train.image_every and run.step % cfg.train.image_every == 0:
                    log.images(run.step, run.method, batch)
                stopping = agree(stop.requested is not None, run.info.world_size, run.device)
                if run.step % cfg.train.ckpt_every == 0 or run.step == cfg.train.steps or stopping:
                    save(run, log)
                if stopping:
                    bar.close()
                    log.close()
                    if run.info.is_main:
                        print(f"signal received: checkpoint written at step {run.step}; exiting for requeue",
                              flush=True)  # fmt: skip
                    run.close()  # the requeued job takes the folder over
                    stop.exit()
                if run.step >= cfg.train.steps:
                    break
    finally:
        bar.close()
        stop.restore()
        if log.writer is not None and run.step >= cfg.train.steps:
            tb_logging.log_hparams(log.writer, cfg, {"loss": last["loss"]}, step=run.step)
        log.close()
    return last
