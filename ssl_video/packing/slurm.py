"""``make_shards --slurm --nodes N``: a submitit job array of N tasks (one node each), then one merge job.

Task ``k`` packs the ``k``-th of N contiguous ranges of shards (:func:`ssl_video.packing.shards.task_ranges`, cut at
shard boundaries in the splits' seeded order), with ``--cpus-per-task`` workers, so it writes exactly the shards a
single local run would, byte for byte. A task that is preempted or reaches its time limit is requeued by submitit
(:class:`PackTask` is checkpointable) and resumes: shards it finished are verified by sha256 and kept. The merge job
runs after the whole array (``afterany``) and writes each split's ``manifest.json``; if a task failed for good it
fails naming the missing shards, and rerunning the same command submits again and packs only those.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import submitit

from ssl_video.packing.inputs import PackError, discover
from ssl_video.packing.sample import check_settings, plain, sp_plan


class PackTask(submitit.helpers.Checkpointable):
    """Array task ``task`` of ``tasks``: pack its shard range (the default ``checkpoint`` requeues it as it is)."""

    def __init__(self, pack_cfg: dict, sp_cfg: dict, task: int, tasks: int) -> None:
        self.pack_cfg, self.sp_cfg, self.task, self.tasks = pack_cfg, sp_cfg, task, tasks

    def __call__(self) -> dict:
        from ssl_video.packing.cli import report
        from ssl_video.packing.shards import pack

        node = os.environ.get("SLURMD_NODENAME", socket.gethostname())
        print(f"make_shards task {self.task}/{self.tasks} on node {node}, {self.pack_cfg['workers']} workers",
              flush=True)
        summary = pack(self.pack_cfg, self.sp_cfg, progress=False, task=(self.task, self.tasks))
        report(summary, self.pack_cfg["output"], final=False)
        return {split: {"packed": m["packed"], "failed": len(m["failed"]), "shards": [s["name"] for s in m["shards"]]}
                for split, m in summary.items()}


class MergeJob:
    """After the array: write the manifests (PackError naming missing shards if a task did not finish)."""

    def __init__(self, pack_cfg: dict, sp_cfg: dict) -> None:
        self.pack_cfg, self.sp_cfg = pack_cfg, sp_cfg

    def __call__(self) -> dict:
        from ssl_video.packing.cli import report
        from ssl_video.packing.shards import merge

        summary = merge(self.pack_cfg, self.sp_cfg)
        errors = report(summary, self.pack_cfg["output"])
        failed = sum(len(m["failed"]) for m in summary.values())
        if failed and self.pack_cfg["strict"]:
            errors.append(f"{failed} inputs failed (--strict)")
        if errors:
            raise PackError("; ".join(errors))
        return {split: {"packed": m["packed"], "failed": len(m["failed"]), "truncated": len(m["truncated"]),
                        "shards": len(m["shards"])} for split, m in summary.items()}


def submit_jobs(pack_cfg: dict, sp_cfg: dict, tasks: int, folder: Path, params: dict, cluster: str = "slurm"):
    """Submit the array and (on SLURM) the dependent merge job; returns ``(array jobs, merge job or None)``."""
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    executor.update_parameters(name="make_shards", nodes=1, tasks_per_node=1, slurm_array_parallelism=tasks,
                               **params)
    jobs = executor.submit_array([PackTask(pack_cfg, sp_cfg, k, tasks) for k in range(tasks)])
    if cluster != "slurm":
        return jobs, None
    array_id = str(jobs[0].job_id).split("_")[0]
    executor.update_parameters(name="make_shards_merge", cpus_per_task=1,
                               slurm_additional_parameters={"dependency": f"afterany:{array_id}"})
    return jobs, executor.submit(MergeJob(pack_cfg, sp_cfg))


def submit(cfg, args) -> int:
    """``--slurm``: check the settings and inputs here (fail in one line, not in N jobs), then submit."""
    if args.nodes < 1 or args.cpus_per_task < 1 or args.mem_gb < 1 or args.time < 1:
        raise PackError("--nodes, --cpus-per-task, --mem-gb and --time must be >= 1")
    if shutil.which("sbatch") is None:
        raise PackError("--slurm needs SLURM's sbatch on PATH (run on a login node), or pack here without --slurm")
    pack_cfg, sp_cfg = plain(cfg.pack), plain(cfg.superpixels)
    check_settings(pack_cfg, sp_plan(sp_cfg))
    splits, _ = discover(pack_cfg)
    inputs = sum(len(items) for items, _ in splits.values())
    pack_cfg["output"] = str(Path(pack_cfg["output"]).resolve())  # jobs may start elsewhere
    folder = Path(args.folder or Path(pack_cfg["output"]) / ".slurm").resolve()
    params = {"cpus_per_task": args.cpus_per_task, "mem_gb": args.mem_gb, "timeout_min": args.time}
    params.update({"slurm_partition": args.partition} if args.partition else {})
    jobs, merge_job = submit_jobs(pack_cfg, sp_cfg, args.nodes, folder, params)
    array_id = str(jobs[0].job_id).split("_")[0]
    print(f"submitted make_shards array {array_id} ({args.nodes} tasks, one node each, {inputs} inputs) and merge "
          f"job {merge_job.job_id} (after the array); logs in {folder}")
    print(f"manifests: {pack_cfg['output']}/<split>/manifest.json once job {merge_job.job_id} ends; after a failure "
          "rerun the same command (finished shards are kept)")
    if not args.wait:
        return 0
    try:
        result = merge_job.result()
    except Exception as exc:  # submitit's error holds the job's whole traceback: its last line is the reason
        last = [line for line in str(exc).strip().splitlines() if line.strip()]
        print(f"error: merge job {merge_job.job_id} failed: {last[-1] if last else exc} (log: "
              f"{merge_job.paths.stderr})", file=sys.stderr)
        return 2
    for split, m in result.items():
        print(f"{split}: {m['packed']} packed ({m['truncated']} truncated), {m['failed']} failed, "
              f"{m['shards']} shards -> {Path(pack_cfg['output']) / split}")
    return 0
