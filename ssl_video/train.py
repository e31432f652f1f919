"""The trainer: one code path for a plain process (CPU / one GPU), torchrun and SLURM (submitit).

``python -m ssl_video.train method=walk_superpixel data=synthetic train.steps=30 train.out_dir=runs/demo``

Its parts live in ``ssl_video/training/`` (docs/training.md): ``setup`` (process group, device, run folder, resume),
``step.train_step`` (forward, backward, clip, optimiser, schedule, ``on_train_step_end``: the only copy), ``logs``
(TensorBoard), ``stop`` (signals and the cross-rank stop agreement), ``loop`` (epochs, checkpoints). What each failure
does is in docs/failures.md: every foreseeable one ends with one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import os
import sys
import types

from omegaconf import OmegaConf

from ssl_video.config import ConfigError
from ssl_video.training.errors import NonFiniteLoss, RunError, one_line
from ssl_video.training.loop import run_loop
from ssl_video.training.setup import Run, start_run

__all__ = ["NonFiniteLoss", "RunError", "main", "train"]


def train(cfg, loader_fn=None, on_start=None) -> dict:
    """Run (or resume) the training described by ``cfg``; returns ``{"step", "loss"}`` of the last step.

    ``loader_fn(data_cfg, batch_size=, rank=, world_size=, seed=, epoch=)`` yields the batches of one epoch (default
    ``ssl_video.data.loader.build_loader``). ``on_start(run)`` is called on rank 0 once the run folder is settled and
    the first batch has arrived (``main`` prints the config there, so setup and data errors come before it). Raises
    :class:`RunError` (one line) for configuration, data and environment problems.
    """
    if loader_fn is None:
        from ssl_video.data.loader import build_loader as loader_fn
    run = start_run(cfg)
    try:
        if run.info.is_main:
            _announce(run)
        if run.finished:
            return {"step": run.step, "loss": float("nan"), "finished": True}
        return run_loop(run, loader_fn, on_start if run.info.is_main else None)
    finally:
        run.close()


def _announce(run: Run) -> None:
    if run.finished:
        print(f"run {run.out_dir} already finished at step {run.step} ({run.resumed_from}); nothing to do", flush=True)
    elif run.resumed_from is not None:
        print(f"resumed from {run.resumed_from} at step {run.step}", flush=True)
    else:
        print(f"run folder: {run.out_dir}", flush=True)


def _print_config(run: Run) -> None:
    print(OmegaConf.to_yaml(run.cfg), flush=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m ssl_video.train key=value ...``: errors are one ``error:`` line, exit 2; Ctrl-C one line, 130."""
    from ssl_video import cli

    argv = sys.argv[1:] if argv is None else argv
    cfg = cli.load(cli.parse_args(argv, command="train"))  # --help / --cfg / --config-dir; config errors exit 2
    try:
        result = train(cfg, on_start=_print_config)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted (Ctrl-C): the run stopped; its last checkpoint is kept and a rerun resumes\n")
        sys.exit(130)
    except (ConfigError, RunError, FileNotFoundError) as exc:
        if os.environ.get("SSL_VIDEO_TRACEBACK"):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        sys.exit(2)
    if not result.get("finished"):
        print(f"finished at step {result['step']} (loss {result['loss']:.4f}); logs: {cfg.train.out_dir}/tb")


if __name__ == "__main__":
    main()


class _CallableModule(types.ModuleType):
    """``from ssl_video import train`` may give this module (a submodule import shadows the function): make
    ``train(cfg)`` work either way."""

    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
