"""Config composition, overrides and the one-line errors."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest
from omegaconf import OmegaConf

from ssl_video.config import CONFIG_DIR, ConfigError, MethodConfig, config_from_yaml, load_config, to_yaml
from ssl_video.methods.base import Method
from ssl_video.methods.registry import register


@dataclass
class ProbeConfig(MethodConfig):
    name: str = "probe_method"
    temperature: float = 0.2
    queue_size: int = 16


@register("probe_method", ProbeConfig)
class ProbeMethod(Method):
    pass


@pytest.fixture()
def config_dir(tmp_path):
    """The real configs plus one method file that chooses another backbone and overrides a data key."""
    root = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, root)
    (root / "method" / "probe_method.yaml").write_text(
        "defaults: {backbone: resnet18}\n"
        "overrides: {data: {num_views: 2}}\n"
        "name: probe_method\ntemperature: 0.5\n"
    )
    return root


def test_groups_compose_and_overrides_apply_in_order(config_dir):
    cfg = load_config(["method=probe_method", "optim.lr=0.03", "data=takes"], config_dir=config_dir)
    assert cfg.method.name == "probe_method"
    assert cfg.method.temperature == 0.5  # method file beats the dataclass default
    assert cfg.method.queue_size == 16  # dataclass default kept
    assert cfg.backbone.name == "resnet18"  # the method file's group choice beats base.yaml's
    assert cfg.data.name == "takes" and cfg.data.positive == "other_camera"  # command-line group choice
    assert cfg.data.num_views == 2  # the method's overrides apply after the data file
    assert cfg.optim.lr == pytest.approx(0.03)
    assert cfg._choices.data == "takes"


def test_command_line_group_choice_beats_method_default(config_dir):
    cfg = load_config(["method=probe_method", "backbone=resnet18_s8"], config_dir=config_dir)
    assert cfg.backbone.name == "resnet18_s8"


def test_dotted_override_beats_method_override(config_dir):
    cfg = load_config(["method=probe_method", "data.num_views=3"], config_dir=config_dir)
    assert cfg.data.num_views == 3


def test_unknown_key_names_it_and_the_closest_key(config_dir):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr' \(did you mean 'optim\.lr'\?\)"):
        load_config(["method=probe_method", "optim.lrr=0.1"], config_dir=config_dir)


def test_unknown_method_key_is_named(config_dir):
    expected = r"unknown config key 'method\.temprature' \(did you mean 'method\.temperature'"
    with pytest.raises(ConfigError, match=expected):
        load_config(["method=probe_method", "method.temprature=0.1"], config_dir=config_dir)


def test_wrong_type_names_key_value_and_expected_type(config_dir):
    with pytest.raises(ConfigError) as err:
        load_config(["method=probe_method", "train.steps=many"], config_dir=config_dir)
    msg = str(err.value)
    assert "train.steps" in msg and "'many'" in msg and "int" in msg
    assert "\n" not in msg


def test_unknown_group_choice_suggests(config_dir):
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet81' \(did you mean 'resnet18'\?\)"):
        load_config(["method=probe_method", "backbone=resnet81"], config_dir=config_dir)


def test_unknown_method_suggests(config_dir):
    with pytest.raises(ConfigError, match="unknown method"):
        load_config(["method=no_such_method"], config_dir=config_dir)


def test_malformed_override_is_one_line(config_dir):
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(["optim.lr"], config_dir=config_dir)


def test_saved_yaml_round_trips(config_dir):
    cfg = load_config(["method=probe_method", "optim.lr=0.07"], config_dir=config_dir)
    again = config_from_yaml(to_yaml(cfg))
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)


def test_module_command_prints_config_and_one_line_errors():
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "ssl_video.config", "optim.lr=0.07"], capture_output=True, text=True)
    assert ok.returncode == 0 and "lr: 0.07" in ok.stdout, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "ssl_video.config", "optim.lrr=1"], capture_output=True, text=True)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1] == "error: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"


@pytest.mark.parametrize(
    "override, key, listed",
    [
        ("data.decoder=pyva", "data.decoder", "pyav"),
        ("data.positive=other_cam", "data.positive", "other_camera"),
        ("data.sampling=clips", "data.sampling", "frames"),
        ("data.augment=jud", "data.augment", "judo"),
        ("optim.name=adamm", "optim.name", "lars"),
        ("optim.schedule=cos", "optim.schedule", "cosine"),
        ("backbone.name=resnet19", "backbone.name", "x3d_xs"),
        ("train.device=gpu", "train.device", "cuda"),
        ("eval.online_action.model=lstm", "eval.online_action.model", "x3d"),
    ],
)
def test_choice_fields_are_checked_at_load_time_with_the_choices_listed(override, key, listed):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    msg = str(err.value)
    assert msg.startswith(f"config key '{key}' got ") and "choose from: " in msg and listed in msg
    assert "\n" not in msg


def test_superpixel_benchmark_params_are_typed():
    cfg = load_config(["eval=superpixels", "eval.params.threads=2", "eval.params.runs.slic_fast.n_segments=128"])
    assert cfg.eval.params.threads == 2 and cfg.eval.params.runs.slic_fast.n_segments == 128
    assert cfg.eval.params.runs.slic.algo == "slic"  # the YAML's runs are kept
    expected = r"unknown config key 'eval\.params\.thread' \(did you mean 'eval\.params\.threads'"
    with pytest.raises(ConfigError, match=expected):
        load_config(["eval=superpixels", "eval.params.thread=2"])
    with pytest.raises(ConfigError, match=r"eval\.params\.max_sequences.*'all'.*int"):
        load_config(["eval=superpixels", "eval.params.max_sequences=all"])


def test_validation_takes_a_schema_lookup():
    from ssl_video.config import validate

    def lookup(name):
        if name != "probe_method":
            raise KeyError(f"no schema for '{name}'")
        return ProbeConfig

    cfg = validate({"method": {"name": "probe_method", "queue_size": 4}}, method_schema=lookup)
    assert cfg.method.queue_size == 4 and cfg.method.temperature == 0.2
    with pytest.raises(ConfigError, match="no schema for 'moco'"):
        validate({"method": {"name": "moco"}}, method_schema=lookup)


def test_methods_and_parts_do_not_import_the_config_module():
    """The dependency runs one way (config -> parts): importing the methods, models, data schema, optimisers and
    evaluation schema leaves ssl_video.config unimported, so there is no import circle to dodge."""
    import subprocess
    import sys

    code = ("import sys, ssl_video.methods, ssl_video.models, ssl_video.data.schema, ssl_video.optim, "
            "ssl_video.eval.schema, ssl_video.packing.schema; print('ssl_video.config' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_every_method_yaml_has_a_registered_method_and_back():
    from ssl_video.methods.registry import METHODS

    yamls = {p.stem for p in (CONFIG_DIR / "method").glob("*.yaml")}
    assert yamls == set(METHODS) - {"probe_method"}
    for name in yamls:  # each file's keys fit its method's dataclass
        assert load_config([f"method={name}"]).method.name == name
