"""A reproduced table: our numbers (mean +- sd over seeds) beside the study's, as text, CSV and a plot."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path


def _stats(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def measures(exp: dict, column: str | None) -> list[str]:
    """What a table entry reports: per probe column (judo) the metric, the evaluation's other measures
    (``also_report``) and the extra evaluations' measures, else the table's columns."""
    if not column:
        return list(exp["columns"])
    extras = (m for names in (exp.get("extra_evaluations") or {}).values() for m in names)
    return [exp["metric"], *exp.get("also_report", []), *extras]


def published(exp: dict, row: str, column: str | None, measure: str):
    if not _has_published(exp, column, measure):
        return None
    entry = exp.get("published", {}).get(row) or {}
    return entry.get(column) if column else entry.get(measure)


def collect(exp: dict, cells: list) -> list[dict]:
    """One entry per (row, column): per measure ``(mean, sd)`` over the seeds with results, the study's value, and
    the per-seed results (``cells``)."""
    groups: dict[tuple, list] = {}
    for cell in cells:
        groups.setdefault((cell.row, cell.column), []).append((cell, cell.result()))
    entries = []
    for (row, column), items in groups.items():
        results = [r for _, r in items if r is not None]
        failed = any(r is None and (c.path / "failed.txt").is_file() for c, r in items)
        entry = {"row": row, "column": column, "n": len(results), "of": len(items), "failed": failed,
                 "cells": [dict(r, seed=c.seed) for c, r in items if r is not None], "values": {}, "published": {}}
        for m in measures(exp, column):
            entry["values"][m] = _stats([float(r[m]) for r in results if m in r])
            entry["published"][m] = published(exp, row, column, m)
        entry["train_wall_s"] = _stats([r["train_wall_s"] for r in results if r.get("train_wall_s") is not None])
        entries.append(entry)
    return entries


def _has_published(exp: dict, column: str | None, measure: str) -> bool:
    """Whether the study reports ``measure`` (per probe column only the table's metric; e.g. not retrieval)."""
    return not column or measure == exp["metric"]


def _fmt(stats: tuple[float, float] | None, n: int, failed: bool = False) -> str:
    if stats is None:
        return "failed" if failed else "pending"
    mean, sd = stats
    digits = 1 if abs(mean) >= 2 else 3
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if n > 1 else "")


def _fmt_time(stats: tuple[float, float] | None) -> str:
    if stats is None:
        return "-"
    seconds = round(stats[0])
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def text_table(exp: dict, entries: list[dict]) -> str:
    """Rows x (ours, published) per measure, plus the training time (walk: the study's time per epoch)."""
    header = ["row"]
    lines = []
    for e in entries:
        label = f"{e['row']} / {e['column']}" if e["column"] else e["row"]
        cells = [label]
        for m in measures(exp, e["column"]):
            pub = e["published"][m]
            cells.append(_fmt(e["values"][m], e["n"], e["failed"]))
            if _has_published(exp, e["column"], m):
                cells.append("—" if pub is None else str(pub))
        cells += [f"{e['n']}/{e['of']}", _fmt_time(e["train_wall_s"])]
        epoch = (exp.get("published", {}).get(e["row"]) or {}).get("epoch")
        if exp["name"] == "walk_table":
            cells.append(epoch or "—")
        lines.append(cells)
    first = entries[0] if entries else {"column": None}
    for m in measures(exp, first["column"]):
        name = f"{m} (%)" if first["column"] and m == exp["metric"] else m
        header += [f"{name} ours", "published"] if _has_published(exp, first["column"], m) else [f"{name} ours"]
    header += ["seeds", "train h:m:s"] + (["study epoch h:m"] if exp["name"] == "walk_table" else [])
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    out = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
           for r in [header, *lines]]
    return "\n".join([exp["title"], *out, *[f"note: {n}" for n in exp.get("notes", [])]])


def write(exp: dict, entries: list[dict], folder: Path) -> dict[str, Path]:
    """Print the table; write ``<name>.csv`` (per cell), ``<name>_summary.csv`` and ``<name>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    print(text_table(exp, entries))
    paths = {"cells": folder / f"{exp['name']}.csv", "summary": folder / f"{exp['name']}_summary.csv"}
    per_cell = [c | {"row": e["row"], "column": e["column"]} for e in entries for c in e["cells"]]
    keys = ["row", "column", "seed"] + sorted({k for c in per_cell for k in c} - {"row", "column", "seed"})
    _write_csv(paths["cells"], per_cell, keys)
    summary = [{"row": e["row"], "column": e["column"] or "", "measure": m,
                "ours_mean": "" if e["values"][m] is None else e["values"][m][0],
                "ours_sd": "" if e["values"][m] is None else e["values"][m][1], "seeds": e["n"],
                "published": "" if e["published"][m] is None else e["published"][m]}
               for e in entries for m in measures(exp, e["column"])]
    _write_csv(paths["summary"], summary, ["row", "column", "measure", "ours_mean", "ours_sd", "seeds", "published"])
    plot = plot_table(exp, entries, folder / f"{exp['name']}.png")
    if plot is not None:
        paths["plot"] = plot
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def plot_table(exp: dict, entries: list[dict], path: Path) -> Path | None:
    """Bars of the table's metric, ours (mean, sd over seeds) beside the study's; None (with a note) without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    metric = exp["metric"]
    labels = [f"{e['row']}\n{e['column']}" if e["column"] else e["row"] for e in entries]
    ours = [e["values"][metric] for e in entries]
    pub = [_number(e["published"][metric]) for e in entries]
    x = range(len(entries))
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(entries) + 2), 3.5))
    ax.bar([i - 0.2 for i in x], [o[0] if o else 0 for o in ours], 0.4, yerr=[o[1] if o else 0 for o in ours],
           label="ours", capsize=3)
    ax.bar([i + 0.2 for i in x], [p or 0 for p in pub], 0.4, label="published")
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title(exp["title"], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
