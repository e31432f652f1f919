"""Run folders: where a run writes, who may write there, and whether a saved run may be resumed with this config.

- ``train.out_dir`` empty: a fresh folder ``runs/<method>/<YYYYmmdd-HHMMSS>`` (under SLURM ``runs/<method>/
  slurm-<job id>``, the same for every rank and for a requeued job, which keeps its job id).
- A lock file ``run.lock`` (JSON: pid, host, SLURM job id) stops a second concurrent run in the same folder. A lock is
  stale, and taken over, when its process is gone on this host or when it belongs to this SLURM job (a requeue).
- Resuming compares the checkpoint's config with this one: a different method / backbone / data shape cannot load
  the weights (one-line error naming the keys); other changes (lr, steps, ...) would silently mix two trainings, so
  they need ``train.resume=force``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import uuid
from pathlib import Path

from omegaconf import OmegaConf

from ssl_video.training.errors import RunError

LOCK_NAME = "run.lock"
RESUME_MODES = {"auto": "auto", "true": "auto", "force": "force", "never": "never", "false": "never"}
# keys whose change makes the saved weights unusable for this model / data
STRUCTURAL = ("method.name", "backbone.", "data.sampling", "data.clip_len", "data.num_frames", "data.num_views",
              "data.crop_size", "data.max_superpixels", "data.superpixels")  # fmt: skip
# keys that do not change what is trained: where it is written, how often it logs, how the job is placed
IGNORED = ("_choices", "train.out_dir", "train.resume", "train.log_every", "train.image_every", "train.ckpt_every",
           "train.keep_last", "train.compile", "data.num_workers", "launch.folder", "launch.partition",
           "launch.timeout_min", "launch.mem_gb", "launch.cpus_per_task", "launch.slurm_additional_parameters",
           "eval.", "pack.", "superpixels.")  # fmt: skip


def resume_mode(cfg) -> str:
    """``auto`` | ``force`` | ``never`` from ``train.resume`` (``true``/``false`` are read as auto/never)."""
    mode = RESUME_MODES.get(str(cfg.train.resume).strip().lower())
    if mode is None:
        raise RunError(f"train.resume={cfg.train.resume!r}: choose auto (true), force or never (false)")
    return mode


def default_out_dir(cfg, now: datetime.datetime | None = None) -> Path:
    """The fresh folder of a run without ``train.out_dir``."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job:  # every rank and every requeue of the job agree on it without talking
        return Path("runs") / cfg.method.name / f"slurm-{job}"
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / cfg.method.name / stamp


def _flat(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def _as_trained(saved_yaml: str) -> dict[str, object]:
    """A checkpoint's config, flat, with the keys added to the schema since it was saved at their defaults: the
    behaviour the run had (a new key's default keeps the old behaviour), so a run from before it still resumes."""
    from ssl_video.config import ConfigError, validate

    saved = OmegaConf.to_container(OmegaConf.create(saved_yaml), resolve=True)
    try:  # a key since removed from the schema fails validation: then compare what was saved, as it is
        filled = _flat(OmegaConf.to_container(validate({k: v for k, v in saved.items() if k != "_choices"})))
    except ConfigError:
        filled = {}
    return filled | _flat(saved)


def config_differences(saved_yaml: str, cfg) -> tuple[list[str], list[str]]:
    """``(structural, changed)``: the dotted keys that differ between a checkpoint's config and ``cfg``."""
    saved = _as_trained(saved_yaml)
    now = _flat(OmegaConf.to_container(cfg, resolve=True))
    differ = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k) and not _matches(k, IGNORED))
    structural = [k for k in differ if _matches(k, STRUCTURAL)]
    return structural, [k for k in differ if k not in structural]


def describe(keys: list[str], saved_yaml: str, cfg, limit: int = 6) -> str:
    """``optim.lr 0.05 -> 0.1, train.steps 10 -> 20`` for the first ``limit`` keys."""
    saved = _as_trained(saved_yaml)
    now = _flat(OmegaConf.to_container(cfg, resolve=True))
    parts = [f"{k} {saved.get(k, '<absent>')} -> {now.get(k, '<absent>')}" for k in keys[:limit]]
    return ", ".join(parts) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


class RunLock:
    """``run.lock`` in the run folder, created atomically (O_EXCL); released by :meth:`release` or found stale."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self.owned = False
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "job": os.environ.get("SLURM_JOB_ID", ""),
                   "token": uuid.uuid4().hex}  # the token tells two locks of one process apart  # fmt: skip

    def acquire(self) -> RunLock:
        for _ in range(3):  # create; or take over a stale lock and create again (another run may race us)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if not self._stale(holder):
                    raise RunError(
                        f"run folder {self.path.parent} is in use by pid {holder.get('pid')} on "
                        f"{holder.get('host')} ({self.path}); wait for it, or delete the lock file if that run is dead"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.me, f)
            self.owned = True
            return self
        raise RunError(f"could not take the lock {self.path}: another run keeps taking it")

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # unreadable or half-written: treated as stale below only if empty for a while

    def _stale(self, holder: dict) -> bool:
        if not holder:
            return True
        if holder.get("job") and holder.get("job") == self.me["job"]:
            return True  # the same SLURM job, requeued: its previous incarnation is gone
        if holder.get("host") != self.me["host"]:
            return False  # another machine: its process cannot be checked from here
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError):
            return False
        return int(holder["pid"]) == self.me["pid"]  # our own pid: an earlier train() in this process that crashed

    def release(self) -> None:
        if self.owned and self._read() == self.me:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.owned = False
