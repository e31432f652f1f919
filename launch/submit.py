"""Submit a training run to SLURM through submitit (or run it here with --local, or print the sbatch script).

    python launch/submit.py --nodes 2 --method walk_superpixel [--gpus-per-node 8 --partition gpu --time 1440]
        [key=value ...]
    python launch/submit.py --local --method walk_superpixel train.steps=20      # this machine, same code path
    python launch/submit.py --nodes 2 --method moco --dry-run                    # print the sbatch script only

The job folder (``launch.folder/<name>``) holds the resolved config and submitit's logs; the run folder
(``train.out_dir``) holds checkpoints and TensorBoard. A preempted or timed-out job checkpoints (the trainer's
SIGUSR2 handler) and is requeued by submitit (``checkpoint()`` returns a DelayedSubmission); the requeued job resumes
from the latest checkpoint because the trainer always does.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import submitit

from ssl_video.config import ConfigError, config_from_yaml, load_config, save_config, to_yaml


class TrainingJob(submitit.helpers.Checkpointable):
    """What runs on every task: export the torch.distributed variables from SLURM's, then train."""

    def __init__(self, config_yaml: str) -> None:
        self.config_yaml = config_yaml

    def __call__(self) -> dict:
        from ssl_video.train import train

        env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        print(f"rank {env.rank}/{env.world_size} (local {env.local_rank}) master {env.master_addr}:{env.master_port}")
        result = train(config_from_yaml(self.config_yaml))
        print(f"rank {env.rank} finished at step {result['step']}", flush=True)
        return result

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # the trainer has already written a checkpoint for this signal; the new job resumes from it
        return submitit.helpers.DelayedSubmission(TrainingJob(self.config_yaml))


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description="Submit ssl-video training to SLURM (submitit).")
    parser.add_argument("--method", default=None, help="method name (ssl_video/configs/method/<name>.yaml)")
    parser.add_argument("--nodes", type=int, default=None)
    parser.add_argument("--gpus-per-node", type=int, default=None)
    parser.add_argument("--tasks-per-node", type=int, default=None, help="default: gpus per node, or 1 on CPU")
    parser.add_argument("--cpus-per-task", type=int, default=None)
    parser.add_argument("--mem-gb", type=int, default=None)
    parser.add_argument("--partition", default=None)
    parser.add_argument("--time", type=int, default=None, help="time limit in minutes")
    parser.add_argument("--name", default=None, help="job name (default: the method)")
    parser.add_argument("--local", action="store_true", help="run on this machine through submitit's local executor")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch script and exit")
    return parser.parse_known_args(argv)


def build_config(args: argparse.Namespace, overrides: list[str]):
    flags = {
        "launch.nodes": args.nodes, "launch.gpus_per_node": args.gpus_per_node,
        "launch.tasks_per_node": args.tasks_per_node, "launch.cpus_per_task": args.cpus_per_task,
        "launch.mem_gb": args.mem_gb, "launch.partition": args.partition, "launch.timeout_min": args.time,
    }  # fmt: skip
    items = [f"method={args.method}"] if args.method else []
    items += [f"{k}={v}" for k, v in flags.items() if v is not None]
    cfg = load_config(items + overrides)
    if args.tasks_per_node is None and cfg.launch.gpus_per_node > 0:
        cfg.launch.tasks_per_node = cfg.launch.gpus_per_node  # one task per GPU
    if cfg.launch.gpus_per_node == 0:
        cfg.train.device = "cpu" if cfg.train.device == "auto" else cfg.train.device
    return cfg


def slurm_parameters(cfg, name: str) -> dict:
    launch = cfg.launch
    params = {
        "nodes": launch.nodes, "tasks_per_node": launch.tasks_per_node, "cpus_per_task": launch.cpus_per_task,
        "mem_gb": launch.mem_gb, "timeout_min": launch.timeout_min, "name": name,
        "slurm_additional_parameters": dict(launch.slurm_additional_parameters),
    }  # fmt: skip
    if launch.gpus_per_node:
        params["gpus_per_node"] = launch.gpus_per_node
    if launch.partition:
        params["slurm_partition"] = launch.partition
    return params


def sbatch_script(cfg, folder: Path, name: str) -> str:
    """The script submitit would submit (uses submitit's own private renderer, so it cannot drift from it)."""
    from submitit.slurm.slurm import _make_sbatch_string

    launch = cfg.launch
    return _make_sbatch_string(
        command=f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}",
        folder=folder, job_name=name, partition=launch.partition or None, time=launch.timeout_min,
        nodes=launch.nodes, ntasks_per_node=launch.tasks_per_node, cpus_per_task=launch.cpus_per_task,
        gpus_per_node=launch.gpus_per_node or None, mem=f"{launch.mem_gb}GB",
        additional_parameters=dict(launch.slurm_additional_parameters) or None,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse(sys.argv[1:] if argv is None else argv)
    try:
        cfg = build_config(args, overrides)
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    name = args.name or cfg.method.name
    folder = Path(cfg.launch.folder) / name
    if args.dry_run:
        print(sbatch_script(cfg, folder / "%j", name))
        return 0
    if args.local and cfg.launch.nodes > 1:
        sys.exit("error: --local runs on this machine only: use --nodes 1 (or submit to SLURM)")
    folder.mkdir(parents=True, exist_ok=True)
    save_config(cfg, folder / "config.yaml")
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="local" if args.local else None)
    params = slurm_parameters(cfg, name)
    if args.local:
        params = {k: v for k, v in params.items() if k in ("tasks_per_node", "gpus_per_node", "timeout_min")}
        params["nodes"] = 1
    executor.update_parameters(**params)
    job = executor.submit(TrainingJob(to_yaml(cfg)))
    print(f"submitted job {job.job_id} ({'local' if args.local else 'slurm'}), job folder {folder / str(job.job_id)}")
    print(f"monitor: tensorboard --logdir {cfg.train.out_dir}")
    if args.local:
        result = job.result()
        print(f"finished: step {result['step']}, loss {result['loss']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
