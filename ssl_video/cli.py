"""The one command-line parser of the config-driven commands (train, submit, the evaluations).

Every command takes ``key=value`` overrides and ``group=choice`` picks (see ``ssl_video.config``), plus:

- ``--help``: what the command does, the config groups and their choices (from every config folder searched), the
  most used keys with their defaults for this command, and an example;
- ``--cfg``: print the resolved config and exit without running;
- ``--config-dir DIR`` (repeatable; also ``$SSL_VIDEO_CONFIG_PATH``): a folder of the user's own config files,
  searched before the packaged ones, that adds or overrides group files.

Errors (a bad flag, a bad override) are one ``error:`` line on stderr and exit status 2.

    args = cli.parse_args(argv, command="train")     # argparse.Namespace: overrides, config_dir, cfg
    cfg = cli.load(args)                              # composed config; exits 2 on a config error, 0 after --cfg
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ssl_video.config import CONFIG_PATH_ENV, GROUPS, ConfigError, config_search_path, group_choices, load_config

HELP_FLAGS = ("-h", "--help")


@dataclass(frozen=True)
class Command:
    prog: str
    purpose: str
    fixed: tuple[str, ...]  # group choices the command always makes (e.g. eval=davis)
    keys: tuple[str, ...]  # the most used keys, listed with their defaults in --help
    example: str


_TRAIN_KEYS = ("train.steps", "train.batch_size", "train.out_dir", "train.device", "train.ckpt_every", "optim.lr",
               "data.root", "data.crop_size", "data.num_workers")  # fmt: skip
COMMANDS = {
    "train": Command(
        "ssl-video-train", "Train (or resume) a self-supervised video model on this machine or under torchrun.",
        (), _TRAIN_KEYS,
        "ssl-video-train method=moco backbone=resnet18 data.root=shards/kinetics/train train.steps=1000 "
        "train.out_dir=runs/moco"),
    "submit": Command(
        "ssl-video-submit", "Submit training to SLURM through submitit (the launch=slurm preset), or run it here "
        "with --local, or print the sbatch script with --dry-run.",
        ("launch=slurm",), ("launch.nodes", "launch.gpus_per_node", "launch.cpus_per_task", "launch.timeout_min",
                            "launch.partition", "launch.folder", *_TRAIN_KEYS[:4]),
        "ssl-video-submit --nodes 2 --method walk_superpixel data.root=/data/k400/train --dry-run"),
    "eval-davis": Command(
        "ssl-video-eval-davis", "DAVIS-2017 label propagation (videowalk's protocol): J&F of a checkpoint.",
        ("eval=davis",), ("eval.device", "eval.out_dir", "eval.davis.split", "eval.davis.context", "eval.davis.topk",
                          "eval.davis.radius", "eval.davis.temperature", "eval.davis.recompute_bn"),
        "ssl-video-eval-davis --davis data/DAVIS --checkpoint runs/walk/checkpoints/step_00010000.pt"),
    "eval-online-action": Command(
        "ssl-video-eval-online-action", "Online action recognition: a probe on frozen (or fine-tuned) features of "
        "take shards, per-chunk accuracy.",
        ("eval=online_action",), ("eval.device", "eval.out_dir", "eval.online_action.model",
                                  "eval.online_action.chunk_len", "eval.online_action.steps",
                                  "eval.online_action.batch_size"),
        "ssl-video-eval-online-action --shards shards/takes --checkpoint random"),
    "eval-retrieval": Command(
        "ssl-video-eval-retrieval", "Cross-camera nearest-chunk retrieval on multi-view take shards.",
        ("eval=retrieval",), ("eval.device", "eval.out_dir", "eval.retrieval.split", "eval.retrieval.chunk_len",
                              "eval.retrieval.tolerance"),
        "ssl-video-eval-retrieval --shards shards/takes --checkpoint runs/moco/checkpoints/step_00001000.pt"),
    "eval-superpixels": Command(
        "ssl-video-eval-superpixels", "Superpixel benchmark on a DAVIS-layout set: J&F, boundary recall, "
        "undersegmentation error, speed of each configured run.",
        ("eval=superpixels",), ("eval.out_dir", "eval.params.split", "eval.params.threads"),
        "ssl-video-eval-superpixels --davis data/synthetic/davis --algos slic_fast"),
}


class Parser(argparse.ArgumentParser):
    """argparse with errors as one ``error:`` line (argparse prints usage first) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def fail(message: str) -> SystemExit:
    """Print ``error: message`` to stderr; returns the SystemExit(2) to raise."""
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


def _config_dirs_in(argv: Sequence[str]) -> list[str]:
    dirs = []
    for i, item in enumerate(argv):
        if item == "--config-dir" and i + 1 < len(argv):
            dirs.append(argv[i + 1])
        elif item.startswith("--config-dir="):
            dirs.append(item.split("=", 1)[1])
    return dirs


def describe(command: str, argv: Sequence[str] = ()) -> str:
    """The help text below the options: groups and choices, key defaults, config folders, an example.

    The defaults are those of this command's composition with the group choices already on the command line (so
    ``method=moco --help`` shows MoCo's)."""
    spec = COMMANDS[command]
    picks = [a for a in argv if "=" in a and a.split("=", 1)[0] in GROUPS]
    try:
        path = config_search_path(_config_dirs_in(argv) or None)
        cfg = load_config([*spec.fixed, *picks], config_dir=path[:-1] or None)
    except ConfigError as exc:
        return f"(cannot compose the defaults: {exc})"
    chosen = dict(cfg.get("_choices", {}))
    lines = ["config groups (pick with group=choice; * marks this composition's choice):"]
    for group in GROUPS:
        choices = [f"{c}*" if c == chosen.get(group) else c for c in group_choices(group, path)]
        lines.append(f"  {group + ':':<10}{', '.join(choices)}")
    lines.append("most used keys (key=value; default shown):")
    from omegaconf import OmegaConf

    for key in spec.keys:
        lines.append(f"  {key}={OmegaConf.select(cfg, key)}")
    lines.append("  (all keys with their values: --cfg)")
    lines.append(f"config folders searched, first match wins (--config-dir, ${CONFIG_PATH_ENV}, packaged):")
    lines += [f"  {p}" for p in path]
    lines.append("example:")
    lines.append(f"  {spec.example}")
    return "\n".join(lines)


def build_parser(command: str, argv: Sequence[str] = (), overrides: bool = True) -> Parser:
    """The shared parser of ``command`` (a key of :data:`COMMANDS`); add the command's own flags to it."""
    spec = COMMANDS[command]
    wants_help = any(a in HELP_FLAGS for a in argv)
    parser = Parser(prog=spec.prog, description=spec.purpose, formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog=describe(command, argv) if wants_help else None)  # composing costs ~1 s: only for --help
    if overrides:
        parser.add_argument("overrides", nargs="*", metavar="key=value",
                            help="config overrides and group picks, e.g. method=moco optim.lr=0.03")
    parser.add_argument("--cfg", action="store_true", help="print the resolved config and exit without running")
    parser.add_argument("--config-dir", action="append", default=None, metavar="DIR",
                        help=f"your own config folder, searched before the packaged one (repeatable; also "
                             f"${CONFIG_PATH_ENV})")
    return parser


def parse_args(argv: Sequence[str] | None = None, command: str = "train",
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) for ``command``; ``add_arguments(parser)`` adds its own flags.

    Options may come before or after the overrides. ``--help`` prints and exits 0; a bad flag or a positional that is
    not ``key=value`` exits 2 with one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command, argv)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_intermixed_args(argv)
    bad = [item for item in args.overrides if "=" not in item]
    if bad:
        parser.error(f"'{bad[0]}' is not a key=value override or a known flag")
    args.command = command
    return args


def load(args: argparse.Namespace, extra: Sequence[str] = ()):
    """Compose the config of parsed ``args`` (the command's fixed picks, then ``args.overrides``, then ``extra``).

    ``--cfg``: prints it and exits 0. A config error: one ``error:`` line, exit 2."""
    from ssl_video.config import to_yaml

    try:
        cfg = load_config([*COMMANDS[args.command].fixed, *args.overrides, *extra], config_dir=args.config_dir)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if args.cfg:
        print(to_yaml(cfg), end="")
        raise SystemExit(0)
    return cfg
