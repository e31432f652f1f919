"""The cells of a results table: what each runs (pack -> pretrain -> export -> evaluate) and how a command runs.

A table's experiment config (``ssl_video/configs/experiment/<table>.yaml``) names rows, columns (probes for the judo
table) and per-scale settings; :func:`plan_cells` turns it into :class:`Cell` s, one per (row, column, seed), each with
its own folder ``<out>/<table>/<scale>/<row>[-<column>]/seed<k>`` holding ``cell.json`` (the commands),
``result.json`` (written last: a finished cell is reused), ``train/``, ``backbone.pt``, ``eval/`` and ``logs/``.

Commands are the user commands (``python -m ssl_video.train``, ``tools/export_backbone.py``, ``python -m
ssl_video.eval.<name>``, ``tools/make_shards.py``), run either in this process (``runpy``, exactly as the command line
would run them, output to the cell's log; no interpreter start-up per command) or as subprocesses.
"""

from __future__ import annotations

import contextlib
import csv
import json
import resource
import runpy
import shlex
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXPORT_SCRIPT = REPO / "tools" / "export_backbone.py"
PACK_SCRIPT = REPO / "tools" / "make_shards.py"
EVAL_MODULES = {"online_action": "ssl_video.eval.online_action", "davis": "ssl_video.eval.davis",
                "superpixel_benchmark": "ssl_video.eval.superpixel_benchmark", "retrieval": "ssl_video.eval.retrieval"}


class CommandFailed(RuntimeError):
    """A command of a cell exited non-zero; the message is its last ``error:`` line (or its exit status)."""


@dataclass
class Cell:
    """One (row, column, seed) of a table and the commands that produce its numbers."""

    table: str
    row: str
    column: str | None
    seed: int
    folder: str
    evaluation: str
    train: list[str] | None = None  # python -m ssl_video.train arguments; None: no pretraining (random init)
    eval: list[str] = field(default_factory=list)  # evaluation arguments after the module
    # further evaluations reported beside the table's metric (the judo table's cross-camera retrieval): name -> args
    extra_evals: dict[str, list[str]] = field(default_factory=dict)
    train_name: str = ""  # job name at --scale paper

    @property
    def path(self) -> Path:
        return Path(self.folder)

    @property
    def label(self) -> str:
        return f"{self.row}/{self.column}" if self.column else self.row

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "cell.json").write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> Cell:
        return cls(**json.loads((Path(folder) / "cell.json").read_text()))

    def result(self) -> dict | None:
        path = self.path / "result.json"
        return json.loads(path.read_text()) if path.is_file() else None


# ------------------------------------------------------------------------------------------------------------------
# Running a command
# ------------------------------------------------------------------------------------------------------------------
def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.is_file() else []
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["no output"])[-1][:300]


def run_command(kind: str, target: str, args: list[str], log: Path, subprocess_mode: bool = False) -> None:
    """Run ``python -m target args`` (``kind='module'``) or ``python target args`` (``kind='script'``), output to
    ``log``; raise :class:`CommandFailed` with its last error line when it exits non-zero."""
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = ["-m", target, *args] if kind == "module" else [target, *args]
    with open(log, "a") as fh:
        fh.write(f"$ python {shlex.join(argv)}\n")
        fh.flush()
        if subprocess_mode:
            code = subprocess.run([sys.executable, *argv], stdout=fh, stderr=subprocess.STDOUT, cwd=REPO).returncode
        else:
            code = _run_here(kind, target, args, fh)
    if code:
        raise CommandFailed(f"{target} exited {code}: {_last_error(log)} (log: {log})")


def _run_here(kind: str, target: str, args: list[str], fh) -> int:
    """The command in this process, as ``python`` would run it (``__main__``, ``sys.argv``); its exit status."""
    saved = sys.argv
    sys.argv = [target, *args]
    try:
        with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: "found in sys.modules" for imported modules
            if kind == "module":
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(target, run_name="__main__")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=fh)  # sys.exit("error: ...")
        return 2
    finally:
        sys.argv = saved
    return 0


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (loader workers, subprocesses)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# ------------------------------------------------------------------------------------------------------------------
# Stages of a cell
# ------------------------------------------------------------------------------------------------------------------
def pretrain(cell: Cell, subprocess_mode: bool) -> dict:
    """Train (resuming a run already in ``train/``); returns the wall / CPU seconds and steps."""
    wall, cpu = time.time(), cpu_seconds()
    run_command("module", "ssl_video.train", cell.train, cell.path / "logs" / "train.log", subprocess_mode)
    steps = next((int(a.split("=", 1)[1]) for a in reversed(cell.train) if a.startswith("train.steps=")), None)
    return {"train_wall_s": round(time.time() - wall, 2), "train_cpu_s": round(cpu_seconds() - cpu, 2),
            "train_steps": steps}


def export(cell: Cell, subprocess_mode: bool) -> str:
    """The latest checkpoint of ``train/`` exported as a backbone state_dict; returns its path."""
    from ssl_video.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(cell.path / "train")
    if ckpt is None:
        raise CommandFailed(f"no checkpoint in {cell.path / 'train'} (see {cell.path / 'logs' / 'train.log'})")
    out = cell.path / "backbone.pt"
    run_command("script", str(EXPORT_SCRIPT), [str(ckpt), str(out), "--no-fc"], cell.path / "logs" / "export.log",
                subprocess_mode)
    return str(out)


def evaluate(cell: Cell, checkpoint: str | None, subprocess_mode: bool) -> dict:
    """Run the cell's evaluation into ``eval/`` (and each extra one into ``eval_<name>/``) and read their numbers."""
    numbers = _evaluate(cell, cell.evaluation, cell.eval, "eval", checkpoint, subprocess_mode)
    for name, args in cell.extra_evals.items():
        numbers |= _evaluate(cell, name, args, f"eval_{name}", checkpoint, subprocess_mode)
    return numbers


def _evaluate(cell: Cell, evaluation: str, args: list[str], folder: str, checkpoint: str | None,
              subprocess_mode: bool) -> dict:
    out = cell.path / folder
    args = list(args)
    if evaluation != "superpixel_benchmark":
        args = ["--checkpoint", checkpoint or "random", *args]
    args = ["--out", str(out / "superpixels.csv" if evaluation == "superpixel_benchmark" else out), *args]
    run_command("module", EVAL_MODULES[evaluation], args, cell.path / "logs" / f"{folder}.log", subprocess_mode)
    return read_numbers(evaluation, out, cell.row)


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _find(out: Path, pattern: str) -> Path:
    found = sorted(out.rglob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CommandFailed(f"the evaluation wrote no {pattern} under {out}")
    return found[-1]


def read_numbers(evaluation: str, out: Path, row: str) -> dict:
    """The numbers a table reports, from the evaluation's CSV (accuracies in %)."""
    if evaluation == "online_action":
        rows = {r["class"]: r for r in _csv_rows(_find(out, "online_action.csv"))}
        per_class = [int(r["chunks"]) for name, r in rows.items() if name not in ("all", "mean per class")]
        # the accuracy of always answering the commonest test class (background): a probe at this level learned
        # nothing (the cpu-scale test windows are 62 % background)
        majority = 100 * max(per_class) / max(1, int(rows["all"]["chunks"])) if per_class else float("nan")
        return {"accuracy": 100 * float(rows["all"]["accuracy"]),
                "mean_per_class": 100 * float(rows["mean per class"]["accuracy"]), "majority": majority}
    if evaluation == "retrieval":  # fractions, as the evaluation prints them (chance: 1 / gallery size)
        total = next(r for r in _csv_rows(_find(out, "retrieval.csv")) if r["query_view"] == "all")
        return {f"retrieval_{k}": float(total[k]) for k in ("top1", "top5", "chance1")}
    if evaluation == "davis":
        (table,) = _csv_rows(_find(out, "global_results-*.csv"))
        return {k: float(v) for k, v in table.items()}
    rows = [r for r in _csv_rows(_find(out, "superpixels.csv")) if r["run"] == row]
    if not rows:
        raise CommandFailed(f"the superpixel benchmark wrote no row '{row}'")
    return {k: float(v) for k, v in rows[0].items() if k not in ("run", "algo", "params")}


def finish(cell: Cell, subprocess_mode: bool = False) -> dict:
    """Export (if pretrained) and evaluate a cell whose training is done; write and return ``result.json``."""
    timing = json.loads((cell.path / "timing.json").read_text()) if (cell.path / "timing.json").is_file() else {}
    checkpoint = export(cell, subprocess_mode) if cell.train is not None else None
    wall, cpu = time.time(), cpu_seconds()
    numbers = evaluate(cell, checkpoint, subprocess_mode)
    result = {"row": cell.row, "column": cell.column, "seed": cell.seed, **numbers, **timing,
              "eval_wall_s": round(time.time() - wall, 2), "eval_cpu_s": round(cpu_seconds() - cpu, 2)}
    tmp = cell.path / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(cell.path / "result.json")
    return result


def run_cell(cell: Cell, subprocess_mode: bool = False) -> dict:
    """Every stage of a cell here (pretrain -> export -> evaluate); a cell with a result is returned as it is."""
    done = cell.result()
    if done is not None:
        return done
    cell.save()
    if cell.train is not None:
        timing = pretrain(cell, subprocess_mode)
        (cell.path / "timing.json").write_text(json.dumps(timing) + "\n")
    return finish(cell, subprocess_mode)
