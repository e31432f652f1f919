"""ssl_video.cli: the shared parser of the config-driven commands (--help, --cfg, --config-dir, one-line errors) and
the config search path (--config-dir, $SSL_VIDEO_CONFIG_PATH, packaged)."""

from __future__ import annotations

import pytest

from ssl_video import cli
from ssl_video.config import CONFIG_DIR, CONFIG_PATH_ENV, ConfigError, config_search_path, load_config


def _exit(capsys, argv, command="train", **kw):
    with pytest.raises(SystemExit) as exc:
        cli.load(cli.parse_args(argv, command=command, **kw))
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


@pytest.fixture()
def user_configs(tmp_path, monkeypatch):
    """A user's folder: a new method file (a SimCLR variant) and a replaced SLURM preset."""
    monkeypatch.delenv(CONFIG_PATH_ENV, raising=False)
    folder = tmp_path / "my_configs"
    (folder / "method").mkdir(parents=True)
    (folder / "launch").mkdir()
    simclr = (CONFIG_DIR / "method" / "simclr.yaml").read_text()
    (folder / "method" / "my_simclr.yaml").write_text(simclr.replace("temperature: 0.1", "temperature: 0.33"))
    (folder / "launch" / "slurm.yaml").write_text("nodes: 1\ngpus_per_node: 2\ncpus_per_task: 3\npartition: mine\n")
    return folder


def test_train_help_lists_purpose_groups_keys_and_an_example(capsys):
    code, out, _ = _exit(capsys, ["method=moco", "--help"])
    assert code == 0
    assert out.startswith("usage: ssl-video-train") and "Train (or resume)" in out
    assert "method:   byol, moco*, simclr" in out and "launch:   local*, slurm" in out  # choices, * = this one
    assert "train.steps=1000" in out and "optim.lr=0.05" in out  # keys with their defaults
    assert "--cfg" in out and "--config-dir" in out and "example:\n  ssl-video-train method=moco" in out


def test_cfg_prints_the_resolved_config_and_exits(capsys):
    code, out, _ = _exit(capsys, ["--cfg", "method=simclr", "train.steps=7"])
    assert code == 0
    assert "name: simclr" in out and "steps: 7" in out and "num_views: 2" in out


def test_options_may_follow_overrides():
    args = cli.parse_args(["method=moco", "--config-dir", "/x", "train.steps=3"], command="train")
    assert args.overrides == ["method=moco", "train.steps=3"] and args.config_dir == ["/x"] and not args.cfg


@pytest.mark.parametrize("argv,message", [
    (["--bogus"], "error: unrecognized arguments: --bogus (see ssl-video-train --help)"),
    (["train.steps"], "error: 'train.steps' is not a key=value override or a known flag (see ssl-video-train --help)"),
    (["method=mocco"], "error: unknown method 'mocco' (did you mean 'moco'?); choose from: byol, moco, simclr, "
                       "simsiam, vicreg, walk_mixed, walk_patch, walk_superpixel"),
    (["train.stepz=1"], "error: unknown config key 'train.stepz' (did you mean 'train.steps'?)"),
])  # fmt: skip
def test_errors_are_one_line_with_exit_2(capsys, argv, message):
    code, out, err = _exit(capsys, argv)
    assert code == 2 and out == "" and err.splitlines() == [message]


def test_user_config_folder_adds_and_overrides_group_files(user_configs):
    cfg = load_config(["method=my_simclr", "launch=slurm"], config_dir=user_configs)
    assert cfg.method.name == "simclr" and cfg.method.temperature == 0.33  # a new choice
    assert cfg.data.num_views == 2  # its overrides apply as for a packaged method
    assert cfg.launch.partition == "mine" and cfg.launch.gpus_per_node == 2  # the packaged preset replaced
    assert load_config(["launch=slurm"]).launch.gpus_per_node == 8  # without the folder: the packaged one
    assert config_search_path(user_configs) == [user_configs, CONFIG_DIR]


def test_env_var_folders_come_after_config_dir(user_configs, tmp_path, monkeypatch):
    other = tmp_path / "team_configs"
    (other / "launch").mkdir(parents=True)
    (other / "launch" / "slurm.yaml").write_text("gpus_per_node: 4\npartition: team\n")
    monkeypatch.setenv(CONFIG_PATH_ENV, str(other))
    assert load_config(["launch=slurm"]).launch.partition == "team"
    assert load_config(["launch=slurm"], config_dir=user_configs).launch.partition == "mine"
    assert config_search_path(user_configs) == [user_configs, other, CONFIG_DIR]
    monkeypatch.setenv(CONFIG_PATH_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="config folder not found: .*missing"):
        load_config([])


def test_config_dir_flag_reaches_help_and_composition(user_configs, capsys):
    code, out, _ = _exit(capsys, ["--config-dir", str(user_configs), "method=my_simclr", "--help"])
    assert code == 0 and "my_simclr*" in out and str(user_configs) in out
    code, out, _ = _exit(capsys, ["--config-dir", str(user_configs), "method=my_simclr", "--cfg"])
    assert code == 0 and "temperature: 0.33" in out
