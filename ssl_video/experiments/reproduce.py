"""One command per results table of the two studies: ``python tools/reproduce.py TABLE --scale smoke|cpu|paper``.

    python tools/reproduce.py judo_table --scale smoke                  # CI-sized, synthetic takes, a few steps
    python tools/reproduce.py judo_table --scale cpu --columns gru --rows random,moco,moco_hard --seeds 0,1,2
    python tools/reproduce.py walk_table --scale paper --data packs/k400 --davis DAVIS --dry-run   # SLURM jobs
    python tools/reproduce.py superpixel_table --scale cpu

Tables (``ssl_video/configs/experiment/<table>.yaml``): ``judo_table`` (probe accuracy per pretraining method x
{GRU, X3D} probe), ``walk_table`` (DAVIS J&F and training time per node kind), ``superpixel_table`` (the superpixel
benchmark at the walk study's presets). Every row runs the user commands (pack -> ``python -m ssl_video.train``
-> ``tools/export_backbone.py`` -> ``python -m ssl_video.eval.<name>``; see :mod:`ssl_video.experiments.cells`), one
folder per (row, column, seed) under ``--out``; a finished cell's ``result.json`` is reused, so an interrupted table
resumes row by row. Prints the table with the study's published numbers beside ours (mean +- sd over seeds), writes
``<table>.csv`` (one line per cell), ``<table>_summary.csv`` and ``<table>.png`` (matplotlib; skipped with a note when
it is not installed).

Scales: ``smoke`` and ``cpu`` run here on synthetic data (``tools/make_synthetic.py`` sets, packed once under
``<out>/data``); ``paper`` uses ``--data`` (packed shards) and ``--davis`` and submits one SLURM job per cell through
the launcher (``python launch/submit.py``), plus one evaluation job per cell depending on it (``sbatch
--dependency=afterok``) that runs ``python -m ssl_video.experiments.reproduce finish <cell>``; ``--dry-run`` prints
the jobs instead. Run the same command again once the jobs are done to collect the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from ssl_video.experiments import tables
from ssl_video.experiments.cells import (
    EVAL_MODULES,
    PACK_SCRIPT,
    REPO,
    Cell,
    CommandFailed,
    finish,
    run_cell,
    run_command,
)

TABLES = ("judo_table", "walk_table", "superpixel_table")
SCALES = ("smoke", "cpu", "paper")
SUBMIT_SCRIPT = REPO / "launch" / "submit.py"
SYNTHETIC_KIND = {"judo_table": "takes", "walk_table": "kinetics", "superpixel_table": "davis"}


class ReproduceError(ValueError):
    """A bad request (unknown row, missing --data at paper scale, ...), reported as one line."""


def load_experiment(name: str) -> dict:
    from omegaconf import OmegaConf

    from ssl_video.config import CONFIG_DIR

    path = CONFIG_DIR / "experiment" / f"{name}.yaml"
    if not path.is_file():
        raise ReproduceError(f"unknown table '{name}'; choose from {', '.join(TABLES)}")
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:  # yaml errors span lines: keep the first
        raise ReproduceError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def _pick(requested: str | None, available: list, what: str) -> list:
    if not requested:
        return list(available)
    picked = [x.strip() for x in requested.split(",") if x.strip()]
    unknown = [x for x in picked if x not in available]
    if unknown:
        raise ReproduceError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(map(str, available))}")
    return picked


# ------------------------------------------------------------------------------------------------------------------
# Data for the smoke and cpu scales: synthetic sets, packed once per preset
# ------------------------------------------------------------------------------------------------------------------
def synthetic_set(out: Path, kind: str, scale: dict, prepare: bool = True) -> Path:
    """``tools/make_synthetic.py``'s ``kind`` set (seed 0) at the scale's size and ``synthetic_options`` (per kind,
    keyword arguments of the set's writer), under ``out/data/synthetic_<name>`` (:func:`synthetic_name`); written
    once."""
    from ssl_video.synthetic.generate import make_all

    root = out / "data" / f"synthetic_{synthetic_name(scale)}"
    if prepare and not (root / kind / ".synthetic.json").is_file():
        try:
            make_all(root, seed=0, small=scale["synthetic"] == "small", what=[kind],
                     options=scale.get("synthetic_options"))
        except ValueError as exc:
            raise ReproduceError(f"synthetic_options: {exc}") from None
    return root / kind


def synthetic_name(scale: dict) -> str:
    """The scale's size (``small``, ``medium``), plus a hash of its ``synthetic_options`` when it has any: a set is
    reused only for the same settings."""
    options = scale.get("synthetic_options")
    if not options:
        return scale["synthetic"]
    return f"{scale['synthetic']}-{_digest(options)}"


def _digest(settings) -> str:
    """8 hex digits naming a set of settings (JSON, keys sorted): the folder of data made with them."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def packed(out: Path, name: str, source: Path, overrides: list[str], args) -> Path:
    """``tools/make_shards.py`` of ``source`` into ``out/data/packs/<name>`` (reused once its manifests exist)."""
    target = out / "data" / "packs" / name
    if (target / "train" / "manifest.json").is_file():
        return target
    inputs = [f"pack.input={source}", f"pack.output={target}"]
    if (source / "train.csv").is_file():  # kinetics: the training split only
        inputs.append(f"pack.annotations={source / 'train.csv'}")
    run_command("script", str(PACK_SCRIPT), [*inputs, *overrides, "--no-progress"],
                out / "data" / "packs" / f"{name}.log", args.subprocess)
    return target


# ------------------------------------------------------------------------------------------------------------------
# Cells
# ------------------------------------------------------------------------------------------------------------------
def plan_cells(exp: dict, args, out: Path) -> list[Cell]:
    """The cells of ``exp`` at ``args.scale`` (data prepared as needed for smoke / cpu)."""
    name, scale = exp["name"], exp["scales"][args.scale]
    rows = _pick(args.rows, list(exp["rows"]), "row")
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(scale.get("seeds", [0]))
    except ValueError:
        raise ReproduceError(f"--seeds must be comma-separated integers, got '{args.seeds}'") from None
    local = args.scale != "paper"
    if not local and exp["evaluation"] != "superpixel_benchmark" and not args.data:
        raise ReproduceError(f"--scale paper needs --data (packed shards; see {name}.yaml)")
    if not local and exp["evaluation"] in ("davis", "superpixel_benchmark") and not args.davis:
        raise ReproduceError("--scale paper needs --davis (a DAVIS-2017 folder)")
    folder = out / name / args.scale
    cells = []
    for seed in seeds:  # seed by seed: a partly run table already compares every row
        for row in rows:
            for column in _columns(exp, args):
                cells.append(_cell(exp, scale, row, column, seed, folder, args, out))
    return cells


def _columns(exp: dict, args) -> list[str | None]:
    if "probes" not in exp:
        return [None]
    return _pick(args.columns, list(exp["probes"]), "column")


def _data_root(exp: dict, scale: dict, row: str, args, out: Path) -> Path:
    """Where the cell's training / evaluation data lives: packed shards for training, a DAVIS folder for davis."""
    pack = exp["rows"][row].get("pack")
    if args.scale == "paper":
        return Path(args.data) / pack if pack else Path(args.data)
    overrides = [*scale["pack"], *(exp.get("packs", {}).get(pack, []) if pack else [])]
    name = pack_name(synthetic_name(scale), pack, overrides)
    if args.list:  # the cells' commands without preparing their data (tests, listings)
        return out / "data" / "packs" / name
    source = synthetic_set(out, SYNTHETIC_KIND[exp["name"]], scale)
    return packed(out, name, source, overrides, args)


def pack_name(synthetic: str, pack: str | None, overrides: list[str]) -> str:
    """``<synthetic>_<pack>-<hash of the pack overrides>``: a pack is reused only for the same settings (e.g. the cpu
    scale's split ratios), never silently stale after the config changed."""
    return f"{synthetic}_{pack or 'takes'}-{_digest(overrides)}"


def _cell(exp: dict, scale: dict, row: str, column: str | None, seed: int, folder: Path, args, out: Path) -> Cell:
    spec = exp["rows"][row] or {}
    label = f"{row}-{column}" if column else row
    cell = Cell(exp["name"], row, column, seed, str(folder / label / f"seed{seed}"), exp["evaluation"])
    if exp["evaluation"] == "superpixel_benchmark":
        davis = args.davis or synthetic_set(out, "davis", scale, not args.list)
        run = [f"eval.params.runs.{row}.{key}={value}" for key, value in spec.items()]
        # --algos takes every word after it: it goes last, after the overrides
        cell.eval = ["--davis", str(davis), *run, *scale.get("eval", []), "--algos", row]
        return cell
    data = _data_root(exp, scale, row, args, out)
    probe = exp.get("probes", {}).get(column, {}) if column else {}
    if spec.get("train") is not None:
        method = next(a.split("=", 1)[1] for a in spec["train"] if a.startswith("method="))
        cell.train = [*spec["train"], *probe.get("train", []), *scale.get("train", []),
                      *scale.get("method_train", {}).get(method, []),
                      *(scale.get("probe_train", {}) or {}).get(column, []),
                      *(scale.get("row_train", {}) or {}).get(row, []),
                      *_paper_batch(exp, scale, row, args), f"data.root={data / 'train'}", f"train.seed={seed}",
                      f"train.out_dir={cell.path / 'train'}"]
        cell.train_name = f"{exp['name']}-{label}-s{seed}"
    if exp["evaluation"] == "online_action":
        cell.eval = ["--shards", str(data), *probe.get("eval", []), *scale.get("eval", []),
                     f"eval.online_action.seed={seed}"]
        for name in exp.get("extra_evaluations") or {}:  # e.g. retrieval: probe's, then scale's arguments
            cell.extra_evals[name] = ["--shards", str(data), *probe.get(name, []), *scale.get(name, []),
                                      f"train.seed={seed}"]
    else:  # davis
        davis = args.davis or synthetic_set(out, "davis", scale, not args.list)
        cell.eval = ["--davis", str(davis), *scale.get("eval", []), f"train.seed={seed}"]
    return cell


def _paper_batch(exp: dict, scale: dict, row: str, args) -> list[str]:
    """Walk rows at paper scale: the study's batch over the scale's GPUs, one epoch of ``epoch_clips`` clips."""
    batch = exp.get("published", {}).get(row, {}).get("batch")
    if args.scale != "paper" or not batch or "epoch_clips" not in scale:
        return []
    per_rank = max(1, batch // scale.get("gpus", 1))
    return [f"train.batch_size={per_rank}", f"train.steps={scale['epoch_clips'] // (per_rank * scale.get('gpus', 1))}"]


# ------------------------------------------------------------------------------------------------------------------
# Paper scale: SLURM jobs through the launcher, dependent evaluation jobs
# ------------------------------------------------------------------------------------------------------------------
def submit(cells: list[Cell], scale: dict, args) -> None:
    """One training job per cell (``launch/submit.py``) and one evaluation job after it (``sbatch --dependency``)."""
    for cell in cells:
        if cell.result() is not None:
            print(f"{cell.label} seed {cell.seed}: done")
            continue
        cell.save()
        dependency = ""
        if cell.train is not None:
            cmd = [sys.executable, str(SUBMIT_SCRIPT), "--name", cell.train_name, *scale.get("launch", []),
                   *(["--dry-run"] if args.dry_run else []), *cell.train]
            print(f"$ {shlex.join(cmd)}", flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if done.returncode:
                raise CommandFailed(f"launch/submit.py failed for {cell.label}: {done.stderr.strip()[-300:]}")
            if args.dry_run:
                print(done.stdout.rstrip())
                dependency = "--dependency=afterok:<training job id>"
            else:
                job = re.search(r"submitted job (\S+)", done.stdout)
                if not job:
                    raise CommandFailed(f"launch/submit.py printed no job id: {done.stdout.strip()[-200:]}")
                dependency = f"--dependency=afterok:{job.group(1)}"
        wrap = f"{shlex.quote(sys.executable)} -m ssl_video.experiments.reproduce finish {shlex.quote(cell.folder)}"
        sbatch = ["sbatch", *([dependency] if dependency else []), f"--job-name={cell.train_name or cell.row}-eval",
                  f"--output={cell.path / 'logs' / 'eval-%j.out'}", "--nodes=1", "--gpus-per-node=1",
                  f"--chdir={REPO}", f"--wrap={wrap}"]
        print(f"$ {shlex.join(sbatch)}", flush=True)
        if not args.dry_run:
            done = subprocess.run(sbatch, capture_output=True, text=True)
            if done.returncode:
                raise CommandFailed(f"sbatch failed for {cell.label}: {done.stderr.strip()[-300:]}")
            print(done.stdout.strip())


# ------------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------------
def run_table(args) -> int:
    exp = load_experiment(args.table)
    out = Path(args.out)
    cells = plan_cells(exp, args, out)
    if args.list:
        for cell in cells:
            print(f"# {cell.label} seed {cell.seed}: {cell.folder}")
            if cell.train is not None:
                print(f"python -m ssl_video.train {shlex.join(cell.train)}")
            print(f"python -m {EVAL_MODULES[cell.evaluation]} {shlex.join(cell.eval)}")
            for name, extra in cell.extra_evals.items():
                print(f"python -m {EVAL_MODULES[name]} {shlex.join(extra)}")
        return 0
    if args.scale == "paper":
        submit(cells, exp["scales"]["paper"], args)
        if args.dry_run:
            return 0
    else:
        for i, cell in enumerate(cells, 1):
            print(f"[{i}/{len(cells)}] {cell.label} seed {cell.seed}", end=" ", flush=True)
            (cell.path / "failed.txt").unlink(missing_ok=True)
            try:
                result = run_cell(cell, args.subprocess)
                print(f"-> {exp['metric']} {result[exp['metric']]:.4g}", flush=True)
            except CommandFailed as exc:
                print(f"-> failed: {exc}", flush=True)
                (cell.path / "failed.txt").write_text(f"{exc}\n")  # the table says failed (a rerun tries again)
    report = tables.collect(exp, cells)
    tables.write(exp, report, out / exp["name"] / args.scale)
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python tools/reproduce.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="table", required=True, metavar="TABLE")
    for name in TABLES:
        p = sub.add_parser(name, help=f"ssl_video/configs/experiment/{name}.yaml")
        p.add_argument("--scale", choices=SCALES, default="smoke")
        p.add_argument("--out", default="runs/reproduce", help="cells, tables and plots go under OUT/<table>/<scale>")
        p.add_argument("--rows", help="comma-separated rows (default: all)")
        p.add_argument("--columns", help="comma-separated probes of the judo table (default: all)")
        p.add_argument("--seeds", help="comma-separated seeds (default: the scale's)")
        p.add_argument("--data", help="paper scale: packed shards (judo: train/ test/; walk: <preset>/train)")
        p.add_argument("--davis", help="DAVIS-2017 folder (default at smoke / cpu: the synthetic set)")
        p.add_argument("--dry-run", action="store_true", help="paper scale: print the jobs, submit nothing")
        p.add_argument("--subprocess", action="store_true", help="run each command as a subprocess (default: here)")
        p.add_argument("--list", action="store_true", help="print every cell's commands and exit (prepares no data)")
    fin = sub.add_parser("finish", help="export + evaluate one cell whose training is done (the SLURM eval job)")
    fin.add_argument("cell", help="a cell folder (holds cell.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        if args.table == "finish":
            finish(Cell.load(args.cell))
            return 0
        return run_table(args)
    except (ReproduceError, CommandFailed, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
