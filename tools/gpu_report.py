"""One-shot GPU report: training-step speed, utilisation, memory, superpixels, loader, DAVIS and the gpu tests.

    python tools/gpu_report.py --out reports/ --budget-s 420        # on one GPU: about 7 minutes
    python tools/gpu_report.py --dry                                  # CPU: a ~30 s version with tiny sizes

Writes ``gpu_report.json`` and ``gpu_report.md`` into ``--out`` after every section, so a run that is killed still
leaves what it measured. Sections (each has a share of ``--budget-s``, skips with a reason when the time is gone,
and stops at its own deadline):

- ``walk``: walk_patch / walk_superpixel / walk_mixed at 4 x 256² (patches 64 at stride 32, SLIC 64 segments):
  largest batch (doubling then bisection while the step's peak stays under 90% of the device memory), then bf16
  step time, clips/s, FLOPs (``torch.utils.flop_counter``), achieved TFLOP/s and its fraction of the device's dense
  bf16 peak (``ssl_video.speed.PEAKS``), peak memory;
- ``walk_equal_batch``: walk_superpixel / walk_patch step time at the same batch (goal <= 0.5);
- ``reference``: videowalk's CRW step (fp32, Adam, as published; ``ssl_video.experiments.videowalk_crw``) against
  walk_patch (bf16) on the same clips and batch; speed-up goal >= 2;
- ``two_view``: moco / simclr / byol / simsiam on resnet18 (4 frames of 224²), resnet18_gru (8 x 224²), x3d_xs
  (4 x 182²), same measurements as ``walk``;
- ``slic``: ``slic_fast`` on the device, frames/s at 256² (goal >= 5000);
- ``loader``: synthetic Kinetics packed to shards, ``build_loader`` with ``data.gpu_augment=true`` feeding
  walk_superpixel steps: clips/s and the fraction of the time spent waiting for data (goal < 5%);
- ``davis``: label propagation (``ssl_video.eval.davis``) on a small synthetic DAVIS set, frames/s;
- ``gpu_tests``: ``pytest -m gpu`` on the test files that have such tests, in a subprocess with a timeout;
- ``compile``: one walk_patch row under ``torch.compile`` (``--compile auto``: only when enough time is left), in
  a subprocess so that its time limit holds.

Optional parts whose packages are missing (webdataset, av, pytest, ...) are skipped with the reason. Exit status 0
when the report was written (sections may have failed: see their ``status``), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
from gpu_report_rows import DRY, Profile, SectionTimeout, measure, one_line, walk_builder  # beside this file
from gpu_report_sections import SECTIONS, SHARES, section_compile

from ssl_video import speed


def _alarm(signum, frame):
    raise SectionTimeout("section passed its time limit")


# ------------------------------------------------------------------------------------------------ the report file
class Report:
    def __init__(self, out: Path, budget_s: float, dry: bool, device: str) -> None:
        self.out, self.budget_s, self.dry, self.device = out, budget_s, dry, device
        self.start = time.monotonic()
        self.data = {"schema": 1, "dry": dry, "budget_s": budget_s, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "elapsed_s": 0.0, "device": device_info(device), "sections": {}, "goals": []}
        self.profile = DRY if dry else Profile()

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def run(self, name: str, fn, share: float, minimum: float = 5.0) -> None:
        """Run section ``fn(report, deadline)`` within ``share`` of the budget (less if less is left); record it."""
        budget = min(share * self.budget_s, self.left())
        if budget < (0.5 if self.dry else minimum):
            self.data["sections"][name] = {"status": "skipped", "reason": f"out of time ({budget:.0f} s left for it)"}
            self.write()
            return
        t0 = time.monotonic()
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(max(1, int(budget + (2 if self.dry else 15))))  # grace: sections watch their deadline too
        try:
            result = fn(self, t0 + budget)
            result.setdefault("status", "ok")
        except SectionTimeout as exc:  # keep the rows it had finished
            result = {**self.data["sections"].get(name, {}), "status": "timeout", "reason": str(exc)}
        except ModuleNotFoundError as exc:  # an optional dependency (webdataset, av, ...) is not installed here
            result = {"status": "skipped", "reason": f"missing package: {exc.name}"}
        except Exception as exc:  # one section's failure must not lose the others
            where = traceback.extract_tb(exc.__traceback__)[-1]
            result = {"status": "error", "reason": f"{one_line(exc)} ({Path(where.filename).name}:{where.lineno})"}
        finally:
            signal.alarm(0)
            speed.free_memory()
        result["seconds"] = round(time.monotonic() - t0, 1)
        result["budget_s"] = round(budget, 1)
        self.data["sections"][name] = result
        self.write()

    def goal(self, name: str, value, target: str, met: bool | None) -> None:
        """A target of issue 18; judged only on a GPU (dry-run figures mean nothing)."""
        self.data["goals"].append({"goal": name, "value": value, "target": target, "met": None if self.dry else met})

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - self.start, 1)
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "gpu_report.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        tmp.replace(self.out / "gpu_report.json")
        (self.out / "gpu_report.md").write_text(markdown(self.data))


def device_info(device: str) -> dict:
    import torchvision

    info = {"kind": device, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "host": platform.node(), "cpus": os.cpu_count()}
    if device != "cuda":
        info.update(name=f"CPU ({platform.processor() or platform.machine()})", peak_bf16_tflops=None)
        return info
    props = torch.cuda.get_device_properties(0)
    name = torch.cuda.get_device_name(0)
    info.update(name=name, memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(), capability=f"{props.major}.{props.minor}",
                peak_bf16_tflops=speed.peak_tflops(name), driver=_driver_version(),
                tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32,
                cudnn_benchmark=torch.backends.cudnn.benchmark)
    return info


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def compile_worker(batch: int, device: str, dry: bool) -> int:
    """Child process of ``section_compile``: prints one JSON row."""
    report = Report(Path(os.devnull), 1e9, dry, device)  # never written: holds the profile and the device
    build = walk_builder(report, "walk_patch", compile_backend="eager" if dry else "inductor")
    t0 = time.perf_counter()
    step = build(batch)
    step()  # compiles
    compile_s = time.perf_counter() - t0
    # FLOPs are not counted under compile (the dispatch-level counter does not see generated kernels)
    row = measure(report, lambda b: step, time.monotonic() + 120, batch, flops=False)
    print(json.dumps({**row, "compile_s": round(compile_s, 1), "backend": "eager (dry run)" if dry else "inductor"}))
    return 0



# ------------------------------------------------------------------------------------------------ markdown
COLUMNS = [("method", "method"), ("backbone", "backbone"), ("clip", "clip"), ("batch", "batch"),
           ("largest_batch", "largest batch"), ("step_s", "step s"), ("clips_per_s", "clips/s"),
           ("flops", "GFLOP"), ("tflops", "TFLOP/s"), ("fraction_of_peak", "of peak"), ("peak_gib", "peak GiB"),
           ("cpu_s", "CPU s"), ("compile_s", "compile s"), ("status", "status")]


def _cell(key: str, value) -> str:
    if value is None:
        return "–"
    if key == "flops":
        return f"{value / 1e9:.1f}"
    if key == "fraction_of_peak":
        return f"{100 * value:.1f}%"
    return str(value)


def _table(rows: list[dict]) -> list[str]:
    cols = [(k, title) for k, title in COLUMNS if any(k in r for r in rows)]
    lines = ["| " + " | ".join(t for _, t in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [_cell(k, r.get(k)) if not (k == "status" and r.get("reason")) else f"{r[k]}: {r['reason']}"
                 for k, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(data: dict) -> str:
    dev = data["device"]
    peak = dev.get("peak_bf16_tflops")
    lines = ["# GPU report" + (" (dry run on the CPU: tiny sizes, figures mean nothing)" if data["dry"] else ""), "",
             f"Device: **{dev.get('name')}**, driver {dev.get('driver', '–')}, CUDA {dev.get('cuda', '–')}, "
             f"torch {dev['torch']}, torchvision {dev['torchvision']}, Python {dev['python']}; dense bf16 peak "
             f"{peak or '–'} TFLOP/s; memory {dev.get('memory_gib', '–')} GiB. Started {data['started']}, "
             f"{data['elapsed_s']} s of a {data['budget_s']} s budget.", ""]
    if data["goals"]:
        lines += ["## Goals", "", "| goal | value | target | met |", "|---|---|---|---|"]
        lines += [f"| {g['goal']} | {g['value']} | {g['target']} | { {True: 'yes', False: 'no'}.get(g['met'], '–') } |"
                  for g in data["goals"]]
        lines.append("")
    for name, sec in data["sections"].items():
        head = f"## {name}: {sec.get('status')}"
        if "seconds" in sec:
            head += f" ({sec['seconds']} s)"
        lines += [head, ""]
        if sec.get("reason"):
            lines += [f"Reason: {sec['reason']}", ""]
        if sec.get("rows"):
            lines += _table(sec["rows"]) + [""]
        for key in ("reference", "ours"):
            if isinstance(sec.get(key), dict):
                lines += _table([{"method": key, **sec[key]}]) + [""]
        scalars = {k: v for k, v in sec.items() if k not in ("status", "reason", "seconds", "rows", "reference", "ours",
                                                              "tail") and not isinstance(v, dict | list)}
        lines += [f"- {k}: {v}" for k, v in scalars.items()]
        if sec.get("tail"):
            lines += ["", "```", sec["tail"], "```"]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".", help="folder for gpu_report.json and gpu_report.md (default: here)")
    parser.add_argument("--budget-s", type=float, default=None, help="overall time budget (default 420; dry run 30)")
    parser.add_argument("--dry", action="store_true", help="the short CPU version (automatic without CUDA)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset, in this order")
    parser.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                        help="one torch.compile'd walk_patch row; auto: on a GPU when >= 25%% of the budget is left")
    parser.add_argument("--compile-worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [s for s in args.sections.split(",") if s not in SECTIONS]
    if unknown:
        parser.exit(2, f"error: unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}\n")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "error: --device cuda but CUDA is not available\n")
    if args.budget_s is not None and args.budget_s <= 0:
        parser.exit(2, f"error: --budget-s must be positive, got {args.budget_s}\n")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() and not args.dry else "cpu"
    dry = args.dry or device == "cpu"
    if dry:
        torch.set_num_threads(1)  # tiny sizes: threads only spin against each other (and other work on the machine)
    if args.compile_worker:
        return compile_worker(args.compile_worker, device, dry)
    report = Report(Path(args.out), args.budget_s or (30.0 if dry else 420.0), dry, device)
    print(f"gpu_report: {report.data['device']['name']}, budget {report.budget_s:.0f} s"
          f"{' (dry run)' if dry else ''} -> {Path(args.out).resolve()}/gpu_report.{{json,md}}", file=sys.stderr)
    for name in args.sections.split(","):
        print(f"gpu_report: {name} ({report.left():.0f} s left)", file=sys.stderr, flush=True)
        report.run(name, SECTIONS[name], SHARES[name])
    if args.compile == "off" or (args.compile == "auto" and dry):
        why = "--compile off" if args.compile == "off" else "dry run: --compile on exercises it (tracing takes ~1 min)"
        report.data["sections"]["compile"] = {"status": "skipped", "reason": why}
    elif args.compile == "auto" and report.left() < 0.25 * report.budget_s:
        report.data["sections"]["compile"] = {"status": "skipped",
                                              "reason": f"--compile auto: only {report.left():.0f} s left"}
    else:
        report.run("compile", section_compile, 1.0)
    report.write()
    print(markdown(report.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
