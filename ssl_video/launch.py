"""Submit a training run to SLURM through submitit (or run it here with --local, or print the sbatch script).

    ssl-video-submit --nodes 2 --method walk_superpixel [--gpus-per-node 8 --partition gpu --time 1440] [key=value ...]
    ssl-video-submit --local --method walk_superpixel train.steps=20     # this machine, same code path
    ssl-video-submit --nodes 2 --method moco --dry-run                   # print the sbatch script only

(``python launch/submit.py`` is the same command from a checkout.) Without ``--local`` the ``launch=slurm`` preset
(``ssl_video/configs/launch/slurm.yaml``) applies: one task per GPU, GPUs per node, CPUs and memory per GPU, a time
limit, and ``--signal=USR2@90`` (submitit's default) so the trainer checkpoints before the limit; every value can be
changed by a flag or ``launch.*``, and another preset chosen with ``launch=<name>`` (e.g. from ``--config-dir``).

Each job gets its own folder ``<launch.folder>/<name>/<job id>/`` with submitit's logs and the job's resolved
``config.yaml``; the run folder (``train.out_dir``) holds checkpoints and TensorBoard. A preempted or timed-out job
checkpoints (the trainer's signal handler) and is requeued by submitit (``checkpoint()`` returns a
DelayedSubmission); the requeued job keeps its id and resumes from the latest checkpoint in ``train.out_dir``.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

import submitit

from ssl_video import cli
from ssl_video.config import config_from_yaml, save_config, to_yaml

# a SLURM job name is written into the sbatch script and file names: no whitespace, quotes or shell metacharacters
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
LOCAL_PARAMETERS = ("tasks_per_node", "gpus_per_node", "timeout_min")


class TrainingJob(submitit.helpers.Checkpointable):
    """What runs on every task: export the torch.distributed variables from SLURM's, then train.

    A module-level class of an installed module: submitit's cloudpickle pickles it by reference, so the compute nodes
    only need ``ssl_video`` importable (the same environment), never the file that submitted it."""

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


def _add_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--method", default=None, help="method name (= method=<name>)")
    add("--nodes", type=int, default=None, help="nodes (launch.nodes)")
    add("--gpus-per-node", type=int, default=None, help="GPUs per node (launch.gpus_per_node; 0: CPU only)")
    add("--tasks-per-node", type=int, default=None, help="default: one per GPU, or 1 on CPU")
    add("--cpus-per-task", type=int, default=None, help="CPUs per task = per GPU (launch.cpus_per_task)")
    add("--mem-per-gpu", type=int, default=None, metavar="GB",
        help="memory per GPU in GB (launch.slurm_additional_parameters.mem_per_gpu)")
    add("--mem-gb", type=int, default=None, help="memory per node in GB instead of per GPU (launch.mem_gb)")
    add("--partition", default=None, help="SLURM partition (launch.partition; default: the cluster's)")
    add("--time", type=int, default=None, help="time limit in minutes (launch.timeout_min)")
    add("--name", default=None, help="job name (default: the method); letters, digits and . _ + - only")
    add("--local", action="store_true", help="run on this machine through submitit's local executor (launch=local)")
    add("--dry-run", action="store_true", help="print the sbatch script and exit")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    return cli.parse_args(argv, command="submit", add_arguments=_add_flags)


def build_config(args: argparse.Namespace):
    """The job's config: the preset (``launch=slurm``, or ``launch=local`` with ``--local``), flags, overrides."""
    flags = {
        "launch.nodes": args.nodes, "launch.gpus_per_node": args.gpus_per_node,
        "launch.tasks_per_node": args.tasks_per_node, "launch.cpus_per_task": args.cpus_per_task,
        "launch.mem_gb": args.mem_gb, "launch.partition": args.partition, "launch.timeout_min": args.time,
        "launch.slurm_additional_parameters.mem_per_gpu": f"{args.mem_per_gpu}G" if args.mem_per_gpu else None,
    }  # fmt: skip
    picks = [f"method={args.method}"] if args.method else []  # after the command's launch=slurm (cli.COMMANDS)
    if args.local and not any(item.startswith("launch=") for item in args.overrides):
        picks.append("launch=local")
    # the flags come after the overrides: an explicit flag wins over launch.* on the same command line
    cfg = cli.load(args, extra=[*picks, *(f"{k}={v}" for k, v in flags.items() if v is not None)])
    explicit = args.tasks_per_node is not None or any(o.startswith("launch.tasks_per_node=") for o in args.overrides)
    if not explicit:  # one task per GPU; one per node without GPUs (the preset's 8 would ask 8 CPU tasks per node)
        cfg.launch.tasks_per_node = max(cfg.launch.gpus_per_node, 1)
    if cfg.launch.gpus_per_node == 0:
        cfg.train.device = "cpu" if cfg.train.device == "auto" else cfg.train.device
    # the job runs in another process, maybe on another node: paths relative to here become absolute
    cfg.launch.folder = str(Path(cfg.launch.folder).expanduser().absolute())
    if cfg.train.out_dir:
        cfg.train.out_dir = str(Path(cfg.train.out_dir).expanduser().absolute())
    return cfg


def memory(launch) -> tuple[int | None, dict]:
    """``(mem_gb per node or None, additional parameters)``: a per-node request (``mem_gb`` > 0) wins over the
    preset's ``mem_per_gpu`` (SLURM rejects both); without GPUs there is nothing per GPU to ask."""
    extra = dict(launch.slurm_additional_parameters)
    if launch.mem_gb > 0 or not launch.gpus_per_node:
        extra.pop("mem_per_gpu", None)
    return (launch.mem_gb if launch.mem_gb > 0 else None), extra


def slurm_parameters(cfg, name: str) -> dict:
    launch = cfg.launch
    mem_gb, extra = memory(launch)
    params = {
        "nodes": launch.nodes, "tasks_per_node": launch.tasks_per_node, "cpus_per_task": launch.cpus_per_task,
        "timeout_min": launch.timeout_min, "name": name, "slurm_additional_parameters": extra,
    }  # fmt: skip
    if mem_gb:
        params["mem_gb"] = mem_gb
    if launch.gpus_per_node:
        params["gpus_per_node"] = launch.gpus_per_node
    if launch.partition:
        params["slurm_partition"] = launch.partition
    return params


def sbatch_script(cfg, folder: Path, name: str) -> str:
    """The script submitit would submit (submitit's own private renderer, so it cannot drift from it), with a comment
    naming the preset after the shebang line."""
    from submitit.slurm.slurm import _make_sbatch_string

    from ssl_video.config import _find_file, config_search_path

    launch = cfg.launch
    mem_gb, extra = memory(launch)
    script = _make_sbatch_string(
        command=f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}",
        folder=folder, job_name=name, partition=launch.partition or None, time=launch.timeout_min,
        nodes=launch.nodes, ntasks_per_node=launch.tasks_per_node, cpus_per_task=launch.cpus_per_task,
        gpus_per_node=launch.gpus_per_node or None, mem=f"{mem_gb}GB" if mem_gb else None,
        additional_parameters=extra or None,
    )  # fmt: skip
    preset = cfg.get("_choices", {}).get("launch", "?")
    path = _find_file(f"launch/{preset}.yaml", config_search_path())
    shebang, rest = script.split("\n", 1)
    return f"{shebang}\n# ssl-video launch preset: {preset} ({path}); job folder {folder}\n{rest}"


def check_name(name: str) -> str:
    if not JOB_NAME.fullmatch(name):
        raise cli.fail(f"job name {name!r} may hold only letters, digits and . _ + - (at most 128, no spaces, quotes "
                       "or newlines)")
    return name


def submit(cfg, name: str, local: bool):
    """Submit (or, ``local``, run here) the training job; writes the job's config into its own folder."""
    folder = Path(cfg.launch.folder) / name
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="local" if local else None,
                                     slurm_max_num_timeout=cfg.launch.max_num_timeout)
    params = slurm_parameters(cfg, name)
    if local:
        params = {k: v for k, v in params.items() if k in LOCAL_PARAMETERS}
        params["nodes"] = 1
    executor.update_parameters(**params)
    job = executor.submit(TrainingJob(to_yaml(cfg)))
    job_folder = folder / str(job.job_id)
    save_config(cfg, job_folder / "config.yaml")  # the job got the same YAML in its pickle; this copy is for people
    return job, job_folder


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cfg = build_config(args)
    name = check_name(cfg.method.name if args.name is None else args.name)
    if args.dry_run:
        print(sbatch_script(cfg, Path(cfg.launch.folder) / name / "%j", name))
        return 0
    if args.local and cfg.launch.nodes > 1:
        raise cli.fail("--local runs on this machine only: use --nodes 1 (or submit to SLURM)")
    job, job_folder = submit(cfg, name, args.local)
    where = "local" if args.local else f"slurm, preset {cfg.get('_choices', {}).get('launch', '?')}"
    print(f"submitted job {job.job_id} ({where}), job folder {job_folder}")
    print(f"monitor: tensorboard --logdir {cfg.train.out_dir}")
    if args.local:
        result = job.result()
        literal = job_folder.parent / "%j"  # submitit's local controller mkdirs its folder before expanding %j
        if literal.is_dir() and not any(literal.iterdir()):
            literal.rmdir()
        print(f"finished: step {result['step']}, loss {result['loss']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
