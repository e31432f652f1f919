"""The sections of ``tools/gpu_report.py`` (a helper module of that command, not a command itself).

Each section is ``fn(report, deadline) -> dict`` (``report`` is the running ``gpu_report.Report``: its ``profile``
holds the sizes, ``device`` the device); rows are measured by ``gpu_report_rows.measure`` and recorded by the caller.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from gpu_report_rows import (  # beside this file (the script's folder is on sys.path)
    add_utilisation,
    guarded,
    measure,
    reference_builder,
    two_view_builder,
    walk_builder,
)

from ssl_video import speed

WALK_METHODS = ("walk_patch", "walk_superpixel", "walk_mixed")
# share of the budget per section (compile gets what is left at the end)
SHARES = {"walk": 0.22, "walk_equal_batch": 0.05, "reference": 0.07, "two_view": 0.33, "slic": 0.03, "loader": 0.11,
          "davis": 0.05, "gpu_tests": 0.10}


# ------------------------------------------------------------------------------------------------ sections
def section_walk(report, deadline: float) -> dict:
    rows = []
    for i, method in enumerate(WALK_METHODS):
        row_deadline = time.monotonic() + (deadline - time.monotonic()) / (len(WALK_METHODS) - i)
        start = rows[-1].get("largest_batch") if rows else None
        row = guarded(measure, report, walk_builder(report, method), row_deadline, start=start or None)
        rows.append({"method": method, **row})
        report.data["sections"]["walk"] = {"status": "running", "rows": rows}
        report.write()
    patch = next((r for r in rows if r["method"] == "walk_patch" and "fraction_of_peak" in r), None)
    if patch and patch["fraction_of_peak"] is not None:
        report.goal("walk_patch fraction of bf16 peak", patch["fraction_of_peak"], ">= 0.40",
                    patch["fraction_of_peak"] >= 0.40)
    return {"rows": rows, "clips": f"{report.profile.walk_frames} x {report.profile.walk_size}²",
            "precision": "bf16 autocast" if report.device == "cuda" else "fp32 (CPU)"}


def section_walk_equal_batch(report, deadline: float) -> dict:
    walk_rows = {r["method"]: r for r in report.data["sections"].get("walk", {}).get("rows", [])}
    found = [walk_rows.get(m, {}).get("batch") for m in ("walk_patch", "walk_superpixel")]
    batch = min(found) if all(found) else report.profile.ref_batch
    rows = []
    for method in ("walk_patch", "walk_superpixel"):
        rows.append({"method": method, **guarded(measure, report, walk_builder(report, method), deadline, batch)})
    if all("step_s" in r for r in rows):
        ratio = rows[1]["step_s"] / rows[0]["step_s"]
        report.goal("walk_superpixel / walk_patch step time (equal batch)", round(ratio, 3), "<= 0.5", ratio <= 0.5)
        return {"batch": batch, "rows": rows, "ratio_superpixel_over_patch": round(ratio, 3)}
    return {"batch": batch, "rows": rows, "status": "error", "reason": "a row failed"}


def section_reference(report, deadline: float) -> dict:
    batch = report.profile.ref_batch
    while batch >= 1:
        ref = guarded(measure, report, reference_builder(report), deadline, batch)
        if ref.get("reason") != "out of memory":
            break
        batch //= 2
    ours = guarded(measure, report, walk_builder(report, "walk_patch"), deadline, batch)
    out = {"batch": batch, "reference": {"precision": "fp32 (as published)", **ref},
           "ours": {"method": "walk_patch", "precision": "bf16 autocast" if report.device == "cuda" else "fp32",
                    **ours},
           "note": "the reference's patches are cut outside its step (its data-loader workers do that); ours cut and "
                   "jitter patches inside the step"}
    if "step_s" in ref and "step_s" in ours:
        speedup = ref["step_s"] / ours["step_s"]
        out["speedup_ours_over_reference"] = round(speedup, 2)
        report.goal("walk_patch speed-up over videowalk CRW (same input)", round(speedup, 2), ">= 2", speedup >= 2)
    else:
        out.update(status="error", reason="a row failed")
    return out


def section_two_view(report, deadline: float) -> dict:
    rows, combos = [], report.profile.two_view_combos
    last_batch: dict[str, int] = {}
    for i, (method, backbone) in enumerate(combos):
        row_deadline = time.monotonic() + (deadline - time.monotonic()) / (len(combos) - i)
        frames, size = report.profile.two_view[backbone]
        row = guarded(measure, report, two_view_builder(report, method, backbone), row_deadline,
                       start=last_batch.get(backbone))
        if row.get("largest_batch"):
            last_batch[backbone] = row["largest_batch"]
        rows.append({"method": method, "backbone": backbone, "clip": f"2 views x {frames} x {size}²", **row})
        report.data["sections"]["two_view"] = {"status": "running", "rows": rows}
        report.write()
    return {"rows": rows}


def section_slic(report, deadline: float) -> dict:
    import numpy as np

    from ssl_video.superpixels.segment import slic_fast
    from ssl_video.synthetic.generate import render_sequence

    p = report.profile
    rgb, _ = render_sequence(0, num_frames=16, size=(p.slic_size, p.slic_size), num_objects=3)
    frames = torch.from_numpy(np.concatenate([rgb] * -(-p.slic_batch // 16))[: p.slic_batch]).to(report.device)
    labels = slic_fast(frames, n_segments=64)  # warm-up (kernels, caches)
    speed.sync(report.device)
    calls, t0 = 0, time.perf_counter()
    while calls < 3 or (time.perf_counter() - t0 < (1 if report.dry else 5) and time.monotonic() < deadline):
        slic_fast(frames, n_segments=64)
        speed.sync(report.device)
        calls += 1
    rate = calls * len(frames) / (time.perf_counter() - t0)
    segments = float((labels.flatten(1).amax(1) + 1).float().mean())
    if report.device == "cuda":
        report.goal("slic_fast CUDA frames/s at 256²", round(rate), ">= 5000", rate >= 5000)
    return {"frames_per_s": round(rate, 1), "batch": len(frames), "size": p.slic_size, "n_segments": 64,
            "mean_segments": round(segments, 1), "calls": calls}


def section_loader(report, deadline: float) -> dict:
    import random
    import tempfile

    from ssl_video.config import PackConfig, SuperpixelConfig, load_config
    from ssl_video.data.augment import augment_batch_on_device
    from ssl_video.data.loader import build_loader
    from ssl_video.methods import build_method
    from ssl_video.packing.shards import pack
    from ssl_video.synthetic.generate import write_kinetics

    spec, device = report.profile.loader, report.device
    workers = max(1, min(8, (os.cpu_count() or 2) - 2))
    with tempfile.TemporaryDirectory() as tmp:
        kin = write_kinetics(Path(tmp) / "kinetics", seed=0, classes=2, clips_per_class=max(1, spec["clips"] // 2),
                             splits=("train",), num_frames=spec["frames"], size=(spec["size"], spec["size"]))
        t0 = time.perf_counter()
        pack(PackConfig(output=f"{tmp}/shards", kind="kinetics", input=str(kin), annotations=str(kin / "train.csv"),
                        short_side=spec["size"], max_frames=spec["frames"], shard_size=2, workers=workers),
             SuperpixelConfig(algos={"slic": {"n_segments": 64, "compactness": 10.0, "start_label": 0}},
                              frame_stride=1), progress=False)  # fmt: skip
        pack_s = time.perf_counter() - t0
        cfg = load_config(["method=walk_superpixel", f"data.root={tmp}/shards/train", f"data.crop_size={spec['size']}",
                           "data.gpu_augment=true", f"data.num_workers={workers}",
                           f"data.epoch_length={spec['batches']}", f"train.batch_size={spec['batch']}"])
        torch.manual_seed(0)
        model = build_method(cfg).to(device).train()
        step = _loader_step(model, device)
        rng, waits, steps, clips = random.Random(0), [], [], 0
        t_wait = time.perf_counter()
        for i, batch in enumerate(build_loader(cfg.data, batch_size=spec["batch"], seed=0)):
            wait, t_step = time.perf_counter() - t_wait, time.perf_counter()
            batch.pop("skipped", None)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
            batch["clips"] = augment_batch_on_device(batch["clips"], cfg.data, rng)
            step(batch)
            if i >= 2:  # the first batches wait for the workers to start
                waits.append(wait)
                steps.append(time.perf_counter() - t_step)
                clips += batch["clips"].shape[0]
            if time.monotonic() > deadline:
                break
            t_wait = time.perf_counter()
    total = sum(waits) + sum(steps)
    if not steps:
        return {"status": "error", "reason": "fewer than 3 batches: nothing measured"}
    fraction = sum(waits) / total
    if device == "cuda":
        report.goal("data wait fraction (loader + gpu_augment, walk_superpixel)", round(fraction, 3), "< 0.05",
                    fraction < 0.05)
    return {"clips_per_s": round(clips / total, 1), "data_wait_fraction": round(fraction, 3), "batches": len(steps),
            "batch": spec["batch"], "workers": workers, "clip": f"{cfg.data.clip_len} x {spec['size']}²",
            "decoder": str(cfg.data.decoder), "pack_s": round(pack_s, 1)}


def _loader_step(model, device: str):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(batch: dict) -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        speed.sync(device)

    return step


def section_davis(report, deadline: float) -> dict:
    import tempfile

    from ssl_video.config import DavisEvalConfig
    from ssl_video.eval.common import load_backbone
    from ssl_video.eval.davis import encoder_features, evaluate
    from ssl_video.synthetic.generate import write_davis

    spec = report.profile.davis
    with tempfile.TemporaryDirectory() as tmp:
        root = write_davis(Path(tmp) / "davis", seed=0, num_sequences=spec["sequences"], num_frames=spec["frames"],
                           size=(spec["size"], spec["size"]))
        backbone, _ = load_backbone("random", "resnet18_s8")
        features = encoder_features(backbone, "layer3", report.device)
        cfg = DavisEvalConfig(save_png=False)
        evaluate(root, features, DavisEvalConfig(save_png=False, max_sequences=1), show_progress=False)  # warm-up
        t0 = time.perf_counter()
        table, _ = evaluate(root, features, cfg, show_progress=False)
        seconds = time.perf_counter() - t0
    frames = spec["sequences"] * (spec["frames"] - 1)  # every frame after the first is propagated
    return {"frames_per_s": round(frames / seconds, 1), "frames": frames, "size": f"{spec['size']}²",
            "encoder": "random resnet18_s8 (layer3)", "J&F-Mean": round(float(table["J&F-Mean"]), 3)}


REPO = Path(__file__).resolve().parent.parent


def section_gpu_tests(report, deadline: float) -> dict:
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        return {"status": "skipped", "reason": "pytest is not installed"}
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                   if "mark.gpu" in p.read_text(encoding="utf-8"))
    if not files:
        return {"status": "skipped", "reason": "no test file has a gpu mark"}
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": "pytest ran past the section's time", "files": files}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    summary = next((ln.strip("= ") for ln in reversed(lines) if any(w in ln for w in ("passed", "failed", "skipped",
                                                                                       "error", "deselected"))), "")
    out = {"exit_code": proc.returncode, "summary": summary, "files": files}
    if proc.returncode not in (0, 5):  # 5: nothing selected/ran
        out.update(status="error", reason=f"pytest exit {proc.returncode}: {summary}",
                   tail="\n".join(lines[-15:]))
    return out


def section_compile(report, deadline: float) -> dict:
    """walk_patch under torch.compile in a child process (compilation can take minutes: its limit must hold)."""
    walk = {r["method"]: r for r in report.data["sections"].get("walk", {}).get("rows", [])}
    batch = walk.get("walk_patch", {}).get("batch") or report.profile.ref_batch
    cmd = [sys.executable, str(Path(__file__).resolve().with_name("gpu_report.py")), "--compile-worker", str(batch),
           "--device", report.device] + (["--dry"] if report.dry else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": "compilation + timing ran past the section's time", "batch": batch}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"status": "error", "reason": f"worker exit {proc.returncode}: {tail[:300]}"}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    eager = walk.get("walk_patch", {})
    if eager.get("batch") == batch and "step_s" in row and "step_s" in eager:
        row["speedup_over_eager"] = round(eager["step_s"] / row["step_s"], 2)
        row["flops"] = eager.get("flops")  # same step, counted eagerly
        add_utilisation(report, row)
    return {"rows": [{"method": "walk_patch (compiled)", **row}]}


# ------------------------------------------------------------------------------------------------ all

SECTIONS = {"walk": section_walk, "walk_equal_batch": section_walk_equal_batch, "reference": section_reference,
            "two_view": section_two_view, "slic": section_slic, "loader": section_loader, "davis": section_davis,
            "gpu_tests": section_gpu_tests}
