"""tools/reproduce.py: the studies' recipes as configs, every cell's command valid, tables with the published numbers
beside ours, resumable cells, SLURM jobs at paper scale (dry run), and the smoke scale end to end (slow)."""

from __future__ import annotations

import json
import statistics
from argparse import Namespace
from pathlib import Path

import pytest

from ssl_video.config import ConfigError, load_config
from ssl_video.experiments import reproduce, tables
from ssl_video.experiments.cells import Cell, run_cell


def test_walks_train_with_the_studys_optimiser_and_two_view_methods_keep_theirs():
    for method in ("walk_patch", "walk_superpixel", "walk_mixed"):
        optim = load_config([f"method={method}"]).optim
        assert (optim.name, optim.lr, optim.weight_decay, optim.schedule) == ("adam", 1e-4, 0.0, "constant")
        assert load_config([f"method={method}", "optim.lr=0.001"]).optim.lr == 0.001  # the command line still wins
    assert load_config(["method=moco"]).optim.name == "sgd"
    kinetics = load_config(["method=walk_patch", "data=kinetics"]).data
    assert (kinetics.clip_len, kinetics.crop_size, kinetics.frame_stride) == (4, 256, 3)  # 4 x 256², 25 fps / 3


def test_superpixel_presets_are_the_studys():
    exp = reproduce.load_experiment("walk_table")
    for n in (10, 30, 50):
        cfg = load_config(exp["packs"][f"slic{n}"])
        slic = cfg.superpixels.algos["slic"]
        assert (slic["n_segments"], slic["compactness"]) == (n, 30)
    from omegaconf import OmegaConf

    from ssl_video.packing.shards import sp_plan

    def packed(preset: str) -> dict:  # what tools/make_shards.py packs for a preset: {algo: (stride, params)}
        return sp_plan(OmegaConf.to_container(load_config(exp["packs"][preset]).superpixels))

    assert set(packed("slic30_fh")) == {"slic", "felzenszwalb"}
    assert packed("patches") == {}  # patches pack no maps
    mix = exp["rows"]["mix"]
    assert mix["pack"] == "slic30" and "method.patch_prob=0.7" in mix["train"]
    table = reproduce.load_experiment("superpixel_table")
    cells = reproduce.plan_cells(table, _args("superpixel_table", "paper", Path("/x"), davis="/d"), Path("/x"))
    for cell in cells:  # the benchmark's command composes each row's run from the table's preset
        runs = load_config(["eval=superpixels", *[a for a in cell.eval if "=" in a]]).eval.params["runs"]
        assert cell.eval[cell.eval.index("--algos") + 1] == cell.row and cell.row in runs
        if cell.row.startswith("slic"):
            assert (runs[cell.row]["n_segments"], runs[cell.row]["compactness"]) == (int(cell.row[-2:]), 30.0)


def _args(table: str, scale: str, tmp_path: Path, **kw) -> Namespace:
    base = {"table": table, "scale": scale, "out": str(tmp_path), "rows": None, "columns": None, "seeds": None,
            "data": None, "davis": None, "dry_run": False, "subprocess": False, "list": True}
    return Namespace(**(base | kw))


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("table", ["judo_table", "walk_table"])
def test_every_cells_training_command_is_a_valid_config(table, scale, tmp_path):
    """Each cell's `python -m ssl_video.train` arguments compose (what the trainer would run), with the row's method,
    the probe's backbone, the cell's seed and its own output folder."""
    exp = reproduce.load_experiment(table)
    args = _args(table, scale, tmp_path, data=str(tmp_path / "d"), davis=str(tmp_path / "davis"))
    cells = reproduce.plan_cells(exp, args, tmp_path)
    columns = len(exp.get("probes", {None: 0}))
    seeds = exp["scales"][scale].get("seeds", [0])
    assert len(cells) == len(exp["rows"]) * columns * len(seeds)
    assert len({c.folder for c in cells}) == len(cells)
    for cell in cells:
        if cell.train is None:
            assert cell.row == "random"
            continue
        try:
            cfg = load_config(cell.train)
        except ConfigError as exc:  # the per-clip algorithm list is the loader helper's data option
            assert cell.row == "slic30_fh" and "superpixels" in str(exc)
            continue
        assert cfg.train.seed == cell.seed and cfg.train.out_dir == str(cell.path / "train")
        assert cfg.method.name == next(a for a in exp["rows"][cell.row]["train"] if a.startswith("method="))[7:]
        if table == "judo_table":
            assert cfg.backbone.name == {"gru": "resnet18", "x3d": "x3d_xs"}[cell.column]
            assert cfg.data.positive == ("other_camera" if cell.row == "moco_hard" else "same_clip")
            if cell.column == "x3d":
                assert (cfg.data.sampling, cfg.data.clip_len, cfg.data.frame_stride) == ("clip", 4, 1)  # contiguous
        else:
            assert cfg.optim.name == "adam" and cfg.data.clip_len == 4
        if scale == "cpu" and table == "judo_table":  # the study's crop list swamps a 32² frame (results.md)
            assert cfg.data.augment == ("none" if cell.row == "moco_hard" else "walk")
        if scale == "paper" and table == "judo_table" and cell.column == "gru":
            assert cfg.train.batch_size * cfg.data.num_frames == 210  # the study's 210 frames per batch
        if scale == "paper" and table == "walk_table":
            study_batch = exp["published"][cell.row]["batch"]
            assert cfg.train.batch_size * 2 == study_batch  # the study's batch over its 2 GPUs
            assert cfg.train.steps == 240000 // (cfg.train.batch_size * 2)  # one Kinetics-400 epoch


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_judo_cells_also_run_cross_camera_retrieval_on_the_probes_test_takes(scale, tmp_path):
    """Each judo cell's retrieval command composes, on the cell's test shards, with the probe's chunks and the
    random row's seed; at cpu scale on the 32² frames and the CIFAR stem the GRU column's pretraining uses."""
    exp = reproduce.load_experiment("judo_table")
    cells = reproduce.plan_cells(exp, _args("judo_table", scale, tmp_path, data=str(tmp_path / "d")), tmp_path)
    for cell in cells:
        args = cell.extra_evals["retrieval"]
        assert args[:2] == cell.eval[:2] and args[0] == "--shards"  # the probe's shard set
        cfg = load_config(["eval=retrieval", *[a for a in args if "=" in a]])
        r = cfg.eval.retrieval
        assert cfg.train.seed == cell.seed
        assert (r.backbone, r.chunk_len) == {"gru": (None, 8), "x3d": ("x3d_xs", 4)}[cell.column]
        if scale != "paper":
            assert (cfg.eval.device, r.crop_size) == ("cpu", 32)
        if scale == "cpu":
            assert cfg.backbone.stem == "cifar"


def test_judo_probe_cells_use_the_studys_probes_at_paper_scale(tmp_path):
    exp = reproduce.load_experiment("judo_table")
    cells = reproduce.plan_cells(exp, _args("judo_table", "paper", tmp_path, data=str(tmp_path)), tmp_path)
    from ssl_video.eval.online_action import resolve_probe

    for cell in cells:
        overrides = [a for a in cell.eval if "=" in a]
        probe = load_config(["eval=online_action", *overrides]).eval.online_action
        resolve_probe(probe)
        assert (probe.model, probe.chunk_len, probe.crop_size, probe.augment) == \
            {"gru": ("gru", 8, 224, True), "x3d": ("x3d", 4, 182, True)}[cell.column]


def test_bad_requests_are_one_line_errors(capsys, tmp_path):
    assert reproduce.main(["judo_table", "--rows", "moco,nope", "--out", str(tmp_path), "--list"]) == 2
    assert capsys.readouterr().err.strip() == ("error: unknown row nope; choose from random, moco, moco_hard, simclr, "
                                               "byol, simsiam")
    assert reproduce.main(["walk_table", "--scale", "paper", "--out", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err
    assert reproduce.main(["finish", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def _cell_with_result(tmp_path: Path, row: str, column: str | None, seed: int, result: dict) -> Cell:
    cell = Cell("judo_table", row, column, seed, str(tmp_path / f"{row}-{column}" / f"seed{seed}"), "online_action",
                train=["not-a-valid-override"])
    cell.save()
    (cell.path / "result.json").write_text(json.dumps(result))
    return cell


def test_a_finished_cell_is_reused_not_rerun(tmp_path):
    cell = _cell_with_result(tmp_path, "moco", "gru", 0, {"accuracy": 71.0})
    assert run_cell(cell) == {"accuracy": 71.0}  # its invalid training command was never run


def test_table_reports_mean_and_sd_over_seeds_beside_the_published_number(tmp_path, capsys):
    exp = reproduce.load_experiment("judo_table")
    accs = {"moco": [70.0, 74.0, 75.5], "random": [50.0, 52.0, 51.0]}
    cells = [_cell_with_result(tmp_path, row, "gru", s, {"accuracy": a, "train_wall_s": 30.0, "majority": 32.3,
                                                         "mean_per_class": 20.0 + s,
                                                         "retrieval_top1": 0.1 * (s + 1), "retrieval_top5": 0.5})
             for row, values in accs.items() for s, a in enumerate(values)]
    cells.append(Cell("judo_table", "moco", "x3d", 0, str(tmp_path / "pending"), "online_action"))
    broken = Cell("judo_table", "simclr", "gru", 0, str(tmp_path / "broken"), "online_action")
    broken.save()
    (broken.path / "failed.txt").write_text("error: ...\n")
    cells.append(broken)
    entries = tables.collect(exp, cells)
    paths = tables.write(exp, entries, tmp_path / "table")
    text = capsys.readouterr().out
    moco = next(e for e in entries if e["row"] == "moco" and e["column"] == "gru")
    assert moco["values"]["accuracy"] == pytest.approx((statistics.mean(accs["moco"]), statistics.stdev(accs["moco"])))
    assert moco["published"]["accuracy"] == 75.95
    assert moco["values"]["retrieval_top1"] == pytest.approx((0.2, 0.1)) and moco["published"]["retrieval_top1"] is None
    assert moco["values"]["mean_per_class"] == pytest.approx((21.0, 1.0))
    assert moco["published"]["mean_per_class"] is None
    assert moco["values"]["majority"] == pytest.approx((32.3, 0.0))
    assert "retrieval_top1" in text.splitlines()[1] and "0.200 ± 0.100" in next(
        ln for ln in text.splitlines() if ln.startswith("moco / gru"))
    line = next(ln for ln in text.splitlines() if ln.startswith("moco / gru"))
    assert f"{statistics.mean(accs['moco']):.1f} ± {statistics.stdev(accs['moco']):.1f}" in line and "75.95" in line
    assert "pending" in next(ln for ln in text.splitlines() if ln.startswith("moco / x3d"))
    assert "failed" in next(ln for ln in text.splitlines() if ln.startswith("simclr / gru"))
    per_cell = paths["cells"].read_text().splitlines()
    assert per_cell[0].startswith("row,column,seed") and len(per_cell) == 1 + 6
    summary = paths["summary"].read_text().splitlines()
    assert next(s for s in summary if s.startswith("moco,gru,accuracy,")).endswith(",3,75.95")
    assert any(s.startswith("moco,gru,mean_per_class,21.0,") for s in summary)
    header = text.splitlines()[1]
    assert header.index("accuracy (%) ours") < header.index("mean_per_class ours") < header.index("retrieval_top1")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "plot" not in paths and "matplotlib is not installed" in text
    else:
        assert paths["plot"].is_file()


def test_paper_scale_dry_run_prints_one_training_job_and_one_dependent_evaluation_per_cell(tmp_path, capsys):
    rc = reproduce.main(["walk_table", "--scale", "paper", "--data", str(tmp_path / "packs"), "--davis",
                         str(tmp_path / "DAVIS"), "--rows", "patches,slic30", "--out", str(tmp_path), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0, out
    submits = [ln for ln in out.splitlines() if ln.startswith("$ ") and "launch/submit.py" in ln]
    evals = [ln for ln in out.splitlines() if ln.startswith("$ sbatch")]
    assert len(submits) == len(evals) == 2
    assert all("--dry-run" in s and "--gpus-per-node 2" in s and "method=walk_" in s for s in submits)
    assert "#SBATCH" in out  # the launcher's own sbatch script
    assert all("--dependency=afterok:" in e and "ssl_video.experiments.reproduce finish" in e for e in evals)
    assert f"data.root={tmp_path / 'packs' / 'slic30' / 'train'}" in submits[1]
    assert len(list((tmp_path / "walk_table" / "paper").rglob("cell.json"))) == 2


@pytest.mark.slow
@pytest.mark.parametrize("table", ["judo_table", "walk_table", "superpixel_table"])
def test_smoke_scale_runs_every_row_end_to_end(table, tmp_path, capsys):
    """The real commands on synthetic data, a few steps each: every cell gets a result (the per-clip algorithm list
    row only once the loader's option exists), the table and CSVs are written; a second run reuses every cell."""
    import torch

    torch.set_num_threads(1)
    assert reproduce.main([table, "--scale", "smoke", "--out", str(tmp_path)]) == 0
    exp = reproduce.load_experiment(table)
    results = sorted((tmp_path / table / "smoke").rglob("result.json"))
    cells = len(exp["rows"]) * len(exp.get("probes", {None: 0}))
    failed = [ln for ln in capsys.readouterr().out.splitlines() if "-> failed" in ln]
    assert len(results) + len(failed) == cells
    assert all("slic30_fh" in ln and "superpixels" in ln for ln in failed), failed
    for path in results:
        assert exp["metric"] in json.loads(path.read_text())
    assert (tmp_path / table / "smoke" / f"{table}_summary.csv").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in results}
    assert reproduce.main([table, "--scale", "smoke", "--out", str(tmp_path)]) == 0
    assert {p: p.stat().st_mtime_ns for p in results} == stamps  # resumed: nothing recomputed


def test_a_pack_is_reused_only_for_the_same_pack_settings():
    half = ["pack.kind=takes", "pack.split_ratios=[0.5,0,0.5]"]
    default = ["pack.kind=takes"]
    assert reproduce.pack_name("medium", None, half) == reproduce.pack_name("medium", None, list(half))
    assert reproduce.pack_name("medium", None, half) != reproduce.pack_name("medium", None, default)
    assert reproduce.pack_name("medium", "slic30", half) != reproduce.pack_name("medium", "slic10", half)
    assert reproduce.pack_name("medium", None, half).startswith("medium_takes-")


def test_a_scales_synthetic_options_make_their_own_set_and_bad_ones_are_named(tmp_path, monkeypatch):
    """``synthetic_options`` (the set writer's keyword arguments) reach the written set, in a folder of their own, so
    a set written without them is never reused; an unknown option is a one-line error naming it."""
    import ssl_video.synthetic.generate as gen

    small = {**gen.SIZES["small"], "takes": {**gen.SIZES["small"]["takes"], "num_takes": 2, "num_frames": 8,
                                             "size": (32, 32)}}
    monkeypatch.setitem(gen.SIZES, "small", small)
    options = {"takes": {"num_distractors": 0, "segment_fraction": [0.9, 1.0]}}
    plain = reproduce.synthetic_set(tmp_path, "takes", {"synthetic": "small"})
    chosen = reproduce.synthetic_set(tmp_path, "takes", {"synthetic": "small", "synthetic_options": options})
    assert plain.parent.name == "synthetic_small" and chosen.parent.name.startswith("synthetic_small-")
    info = json.loads((chosen / gen.MARKER).read_text())
    assert (info["num_distractors"], info["segment_fraction"], info["num_takes"]) == (0, [0.9, 1.0], 2)
    assert json.loads((plain / gen.MARKER).read_text())["num_distractors"] == 2
    with pytest.raises(reproduce.ReproduceError, match="unknown option num_distracters for the takes set"):
        reproduce.synthetic_set(tmp_path, "takes", {"synthetic": "small",
                                                    "synthetic_options": {"takes": {"num_distracters": 0}}})


def test_judo_cells_report_the_majority_class_baseline(tmp_path):
    from ssl_video.experiments.cells import read_numbers

    out = tmp_path / "eval"
    out.mkdir()
    (out / "online_action.csv").write_text(
        "class,accuracy,chunks\nall,0.6,100\nmean per class,0.3,100\nbackground,0.9,62\ncircle,0.2,20\n"
        "spin,0.1,18\nsway,nan,0\n")
    numbers = read_numbers("online_action", out, "random")
    assert numbers == {"accuracy": 60.0, "mean_per_class": 30.0, "majority": 62.0}


def test_retrieval_numbers_are_the_all_views_row(tmp_path):
    from ssl_video.experiments.cells import read_numbers

    (tmp_path / "retrieval.csv").write_text(
        "query_view,gallery_view,queries,gallery,top1,top5,chance1,chance5\n0,1,10,10,0.5,0.9,0.1,0.5\n"
        "all,all,20,10,0.25,0.75,0.1,0.5\n")
    assert read_numbers("retrieval", tmp_path, "moco") == {"retrieval_top1": 0.25, "retrieval_top5": 0.75,
                                                           "retrieval_chance1": 0.1}
