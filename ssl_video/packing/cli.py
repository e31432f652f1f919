"""``make_shards`` command line (``tools/make_shards.py``, ``ssl-video-make-shards``); usage in docs/packing.md.

    make_shards.py pack.kind=kinetics pack.input=ROOT pack.output=OUT [--workers N] [--strict]
    make_shards.py ... --slurm --nodes N [--cpus-per-task C --mem-gb G --time MIN --partition P] [--wait]
    make_shards.py ... --task K/N          # one range by hand (any scheduler); then: make_shards.py ... --merge

Exit status: 0 done (some inputs may have failed: they are listed); 2 for every input/config/environment problem,
each reported as one ``error:`` line (bad settings, no inputs, a split where nothing could be packed, failures under
``--strict``, a disk that fills up); 130 on Ctrl-C (finished shards are kept: rerun to resume).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ssl_video.packing.inputs import PackError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other error of the tool (argparse prints usage too)
        self.exit(2, f"error: {message} (see --help)\n")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(description="Pack videos into WebDataset shard sets (config keys as key=value).")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. pack.input=data/k400 pack.kind=kinetics")
    parser.add_argument("--workers", type=int, help="parallel processes (pack.workers); --slurm: --cpus-per-task")
    parser.add_argument("--shard-size", type=int, help="inputs per shard (pack.shard_size)")
    parser.add_argument("--strict", action="store_true", help="exit 2 if any input failed (pack.strict)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--task", default="", metavar="K/N", help="pack only the K-th of N shard ranges (0-based)")
    parser.add_argument("--merge", action="store_true", help="only write the manifests of shards packed by tasks")
    slurm = parser.add_argument_group("SLURM (submitit): one array task per node, then a merge job")
    slurm.add_argument("--slurm", action="store_true", help="submit to SLURM instead of packing here")
    slurm.add_argument("--nodes", type=int, default=1, help="array tasks, one node each (default 1)")
    slurm.add_argument("--cpus-per-task", type=int, default=8, help="CPUs per task = its packing workers")
    slurm.add_argument("--mem-gb", type=int, default=16)
    slurm.add_argument("--time", type=int, default=720, help="time limit per task in minutes (requeued on timeout)")
    slurm.add_argument("--partition", default="")
    slurm.add_argument("--folder", default="", help="submitit logs (default: <pack.output>/.slurm)")
    slurm.add_argument("--wait", action="store_true", help="wait for the merge job and print its summary")
    return parser.parse_intermixed_args(argv)


def _task(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise PackError(f"--task takes K/N (e.g. 0/4), got '{text}'") from None
    if not (n >= 1 and 0 <= k < n):
        raise PackError(f"--task {text}: need 0 <= K < N")
    return k, n


def report(summary: dict, output: str | Path, final: bool = True) -> list[str]:
    """Print each split's counts, truncated and failed inputs; returns the ``error:`` lines the run must end with."""
    errors = []
    for split, m in summary.items():
        truncated = f" ({len(m['truncated'])} truncated)" if m["truncated"] else ""
        print(f"{split}: {m['packed']} packed{truncated}, {len(m['failed'])} failed of {m['inputs']} inputs, "
              f"{len(m['shards'])} shards -> {Path(output) / split}")
        for t in m["truncated"]:
            print(f"  truncated: {t['input']}: {t['frames']} of {t['declared_frames']} declared frames")
        for f in m["failed"]:
            print(f"  failed: {f['input']}: {f['reason']}")
        if final and m["packed"] == 0:
            errors.append(f"nothing could be packed for split {split} ({len(m['failed'])} inputs failed): no "
                          f"manifest written; failures in {Path(output) / split / '.pack' / 'failed.json'}")
    return errors


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from ssl_video.config import ConfigError, load_config

    overrides = list(args.overrides)
    workers = args.cpus_per_task if args.slurm else args.workers
    overrides += [f"pack.workers={workers}"] if workers else []
    overrides += [f"pack.shard_size={args.shard_size}"] if args.shard_size else []
    overrides += ["pack.strict=true"] if args.strict else []
    cfg = None
    try:
        cfg = load_config(overrides)
        if args.slurm:
            from ssl_video.packing.slurm import submit

            return submit(cfg, args)
        return _run(cfg, _task(args.task), args.merge, progress=not args.no_progress)
    except (ConfigError, PackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except OSError as exc:  # disk full, read-only output, permissions: the environment, not a bug
        where = f" (packing into {cfg.pack.output})" if cfg is not None else ""
        print(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}{where}", file=sys.stderr)
    except BrokenProcessPool:  # the kernel killed a worker: almost always memory (the OOM killer)
        print("error: a packing worker was killed (out of memory?); finished shards are kept: rerun, with fewer "
              "--workers if it happens again", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    return 2


def _run(cfg, task: tuple[int, int] | None, merge_only: bool, progress: bool) -> int:
    from ssl_video.packing.shards import merge, pack

    if merge_only:
        summary = merge(cfg.pack, cfg.superpixels)
    else:
        summary = pack(cfg.pack, cfg.superpixels, progress=progress, task=task)
    errors = report(summary, cfg.pack.output, final=task is None)
    failed = sum(len(m["failed"]) for m in summary.values())
    if failed and cfg.pack.strict:
        errors.append(f"{failed} inputs failed (--strict)")
    if task is not None:
        print(f"task {task[0]}/{task[1]} done; when all tasks are: make_shards.py ... --merge")
    if errors:
        print(f"error: {'; '.join(errors)}", file=sys.stderr)
    return 2 if errors else 0
