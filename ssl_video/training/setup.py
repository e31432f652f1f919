"""Setting a run up: process group, device, seeds, run folder (lock, stale files, resume decision), the method,
optimiser and schedule, and the state restored from the newest loadable checkpoint.

Rank 0 decides (it alone takes the lock, sweeps, renames corrupt checkpoints and compares configs) and broadcasts
the decision, an error included, so every rank resumes from the same file or stops with the same one line.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ssl_video import checkpoint as ckpt
from ssl_video.config import save_config
from ssl_video.distributed import DistInfo, init_distributed
from ssl_video.methods.registry import build_method
from ssl_video.optim import build_optimizer, build_scheduler
from ssl_video.training import run_dir
from ssl_video.training.errors import RunError, one_line


@dataclass
class Run:
    """Everything the run loop needs; :meth:`close` releases the run folder."""

    cfg: object
    info: DistInfo
    device: torch.device
    out_dir: Path
    step: int = 0
    resumed_from: Path | None = None
    finished: bool = False
    method: torch.nn.Module | None = None
    model: torch.nn.Module | None = None  # what the step calls: method, DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer | None = None
    scheduler: object = None
    lock: run_dir.RunLock | None = field(default=None, repr=False)

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()


def choose_device(cfg, info: DistInfo) -> torch.device:
    """The trainer's one device choice (``train.device``: auto | cpu | cuda; one GPU per local rank)."""
    from ssl_video.device import resolve_device

    return resolve_device(cfg.train.device, info.local_rank)


def make_deterministic(device: torch.device) -> None:
    """Bit-reproducible runs (``train.deterministic=true``): deterministic kernels; on CPU one intra-op thread
    (threaded float reductions may split work differently under load); on CUDA the cuBLAS workspace setting that
    deterministic matrix products need (read when cuBLAS starts, so set before the first product)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    if device.type == "cpu":
        torch.set_num_threads(1)


def _share(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if info.world_size == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _decide(cfg, out_dir: Path, device) -> tuple[dict, dict | None, run_dir.RunLock]:
    """Rank 0: lock the folder, sweep, pick the checkpoint and check its config; ``(decision, state, lock)``."""
    mode = run_dir.resume_mode(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir.RunLock(out_dir).acquire()
    try:
        ckpt.sweep_temp_files(out_dir)
        found = ckpt.load_latest_good(out_dir, map_location=device) if mode != "never" else None
        if mode == "never" and ckpt.list_checkpoints(out_dir):
            raise RunError(f"train.resume=never but {out_dir} holds checkpoints: choose another train.out_dir")
        decision = {"out_dir": str(out_dir), "path": None, "step": 0}
        if found is None:
            return decision, None, lock
        path, state = found
        _check_config(cfg, path, state, mode, out_dir)
        decision.update(path=str(path), step=int(state["step"]))
        return decision, state, lock
    except BaseException:
        lock.release()
        raise


def _check_config(cfg, path: Path, state: dict, mode: str, out_dir: Path) -> None:
    saved = state.get("config")
    if not saved:
        return  # an old checkpoint without its config: the state_dict load below still checks the shapes
    structural, changed = run_dir.config_differences(saved, cfg)
    if structural:
        raise RunError(f"cannot resume {path}: it was trained with another "
                       f"{run_dir.describe(structural, saved, cfg)}; use another train.out_dir")  # fmt: skip
    if changed and mode != "force":
        raise RunError(f"{out_dir} was trained with other settings ({run_dir.describe(changed, saved, cfg)}); "
                       "resume anyway with train.resume=force, or use another train.out_dir")  # fmt: skip
    if changed:  # force: keep the config the checkpoint was trained with beside the new one
        before = out_dir / f"config.before_step_{int(state['step']):08d}.yaml"
        before.write_text(saved, encoding="utf-8")
        print(f"train.resume=force: resuming with {run_dir.describe(changed, saved, cfg)}; previous config kept "
              f"in {before}", flush=True)  # fmt: skip


def _out_dir(cfg) -> Path:
    return Path(cfg.train.out_dir) if cfg.train.out_dir else run_dir.default_out_dir(cfg)


def prepare_folder(cfg, info: DistInfo, device) -> tuple[Run, dict | None]:
    """The run folder decided on rank 0 and shared; ``(run, state to restore or None)``."""
    decision, state, lock = {"error": None}, None, None
    if info.is_main:
        try:
            found, state, lock = _decide(cfg, _out_dir(cfg), device)
            decision.update(found)
        except (RunError, OSError) as exc:
            decision["error"] = one_line(exc) if isinstance(exc, RunError) else f"run folder: {one_line(exc)}"
    decision = _share(decision, info)
    if decision["error"]:
        raise RunError(decision["error"])
    run = Run(cfg, info, device, Path(decision["out_dir"]), step=decision["step"], lock=lock)
    if decision["path"]:
        run.resumed_from = Path(decision["path"])
        if state is None:  # other ranks read the file rank 0 chose
            state = ckpt.load_checkpoint(run.resumed_from, map_location=device)
    run.finished = run.resumed_from is not None and run.step >= cfg.train.steps
    return run, state


def check_optim_numbers(cfg) -> None:
    """One line for optimiser numbers the parameters cannot hold (``optim.lr=1e39`` overflows float32 in the first
    update, deep inside the optimiser)."""
    limit = torch.finfo(torch.float32).max
    for key in ("lr", "weight_decay", "momentum", "grad_clip"):
        value = cfg.optim.get(key)
        if value is not None and not (math.isfinite(value) and 0 <= value <= limit):
            raise RunError(f"optim.{key}={value} is not a finite, non-negative float32 number (max {limit:.3g})")


def build_objects(run: Run, state: dict | None) -> None:
    """Method, optimiser and schedule, restored from ``state``; then the module the step calls."""
    cfg, device = run.cfg, run.device
    check_optim_numbers(cfg)
    run.method = build_method(cfg).to(device)
    if cfg.train.channels_last:
        run.method = run.method.to(memory_format=torch.channels_last)
    run.optimizer = build_optimizer(run.method, cfg.optim)
    run.scheduler = build_scheduler(run.optimizer, cfg.optim, cfg.train.steps)
    if state is not None:
        try:
            run.method.load_state_dict(state["model"])
            run.optimizer.load_state_dict(state["optimizer"])
            run.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise RunError(f"checkpoint {run.resumed_from} does not fit this model: {one_line(exc)}") from None
        ckpt.set_rng_state(state["rng"])
    run.model = run.method
    if run.info.world_size > 1:
        run.model = DistributedDataParallel(run.method, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        # compile the module the step calls (DDP-wrapped when distributed, so compile's DDP optimiser splits graphs
        # at bucket boundaries); checkpoints still save ``method``, whose parameter names compile does not prefix
        run.model = torch.compile(run.model)


def start_run(cfg) -> Run:
    """Set the run up; ``run.finished`` when its last step is already done (nothing was built or written)."""
    info = init_distributed(cfg.train.device)
    device = choose_device(cfg, info)
    torch.manual_seed(cfg.train.seed + info.rank)
    if cfg.train.deterministic:
        make_deterministic(device)
    run, state = prepare_folder(cfg, info, device)
    cfg.train.out_dir = str(run.out_dir)  # config.yaml and the checkpoints name the folder really used
    try:
        if run.finished:
            return run
        build_objects(run, state)
        if info.is_main:
            try:
                save_config(cfg, run.out_dir / "config.yaml")
            except OSError as exc:
                raise RunError(f"cannot write {run.out_dir / 'config.yaml'}: {exc.strerror or exc}") from None
        return run
    except BaseException:
        run.close()
        raise
