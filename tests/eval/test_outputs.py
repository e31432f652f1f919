"""ssl_video.eval.outputs: each evaluation writes to its own folder derived from the checkpoint, never over another."""

from __future__ import annotations

import pytest
import torch

from ssl_video.eval import davis
from ssl_video.eval.common import load_backbone
from ssl_video.eval.outputs import derived_dir, fresh, output_dir
from tests.helpers import write_checkpoint


def test_folder_is_derived_from_the_checkpoint(tmp_path):
    run = tmp_path / "runs" / "moco"
    assert derived_dir(run / "checkpoints" / "step_00001000.pt", "davis", "runs/eval") == (
        run / "eval" / "davis" / "step_1000")
    assert derived_dir("random", "retrieval", tmp_path / "e") == tmp_path / "e" / "retrieval" / "random"
    assert derived_dir(tmp_path / "walk_r18.pt", "davis", tmp_path / "e") == tmp_path / "e" / "davis" / "walk_r18"
    # a step-named file outside a run's checkpoints/ folder is just a file
    assert derived_dir(tmp_path / "step_00000005.pt", "davis", tmp_path / "e") == tmp_path / "e" / "davis" / (
        "step_00000005")


def test_a_used_folder_is_never_reused(tmp_path):
    folder = tmp_path / "eval" / "davis" / "step_7"
    assert fresh(folder) == folder  # absent
    folder.mkdir(parents=True)
    assert fresh(folder) == folder  # empty
    (folder / "global_results-val.csv").write_text("x")
    assert fresh(folder) == folder.with_name("step_7-2")
    assert output_dir(folder, "davis", tmp_path, explicit=tmp_path / "mine") == tmp_path / "mine"  # --out as given
    made = output_dir(tmp_path / "runs" / "r" / "checkpoints" / "step_00000007.pt", "davis", tmp_path)
    assert made.is_dir() and made == tmp_path / "runs" / "r" / "eval" / "davis" / "step_7"


@pytest.mark.slow
def test_two_davis_evaluations_of_one_checkpoint_get_two_folders(synthetic_root, tmp_path, capsys):
    torch.manual_seed(1)
    net, _ = load_backbone("random", "resnet18_s8")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = run / "checkpoints" / "step_00000007.pt"
    write_checkpoint(checkpoint, net.state_dict())
    args = ["--davis", str(synthetic_root / "davis"), "--checkpoint", str(checkpoint), "eval.davis.max_sequences=1",
            "eval.davis.save_png=false", "eval.davis.vis_sequences=0"]
    assert davis.main(args) == 0
    assert davis.main([*args, "eval.davis.topk=5"]) == 0
    first, second = run / "eval" / "davis" / "step_7", run / "eval" / "davis" / "step_7-2"
    for folder in (first, second):
        assert (folder / "global_results-val.csv").is_file()
        assert list((folder / "tb").glob("events.out.tfevents.*"))  # its own TensorBoard run under the run folder
    assert f"TensorBoard {first}/tb" in capsys.readouterr().out
    assert davis.main([*args[:2], "--checkpoint", "random", "eval.davis.max_sequences=1", "eval.davis.save_png=false",
                       f"eval.out_dir={tmp_path / 'evals'}"]) == 0
    assert (tmp_path / "evals" / "davis" / "random" / "global_results-val.csv").is_file()


def test_eval_help_lists_groups_and_an_example(capsys):
    with pytest.raises(SystemExit) as exc:
        davis.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: ssl-video-eval-davis" in out and "--checkpoint" in out and "--cfg" in out
    assert "eval.davis.topk=10" in out and "example:" in out and "davis*" in out


def test_eval_cfg_prints_the_config_without_running(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        davis.main(["--davis", str(tmp_path / "nothing"), "--checkpoint", "random", "--cfg", "eval.davis.topk=3"])
    assert exc.value.code == 0
    assert "topk: 3" in capsys.readouterr().out
