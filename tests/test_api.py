"""The Python API of docs/install.md: ``from ssl_video import load_config, build_method, build_loader, train``."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

import ssl_video


def _docstring_example() -> str:
    """The example in ssl_video/__init__.py's docstring (the one docs/install.md shows)."""
    lines = ssl_video.__doc__.split("::", 1)[1].strip("\n")
    return textwrap.dedent(lines)


def test_api_names_resolve_to_the_library_functions():
    from ssl_video import build_loader, build_method, load_config, train
    from ssl_video.config import load_config as config_load
    from ssl_video.data.loader import build_loader as loader_build
    from ssl_video.methods.registry import build_method as registry_build
    from ssl_video.train import train as trainer_train

    assert (load_config, build_method, build_loader) == (config_load, registry_build, loader_build)
    assert train is trainer_train or train.train is trainer_train  # the function, or its (callable) module
    import ssl_video.train as module  # the submodule stays importable under its own name

    assert module.train is trainer_train and callable(module)
    with pytest.raises(AttributeError):
        ssl_video.no_such_thing  # noqa: B018


@pytest.mark.slow
def test_the_documented_example_runs(kinetics_shards, tmp_path):
    example = _docstring_example().replace("shards/synthetic/kinetics/train", str(kinetics_shards / "train"))
    example = example.replace("runs/notebook", str(tmp_path / "nb"))
    assert len([line for line in example.splitlines() if line.strip()]) <= 10
    script = f"import torch\ntorch.manual_seed(0)\n{example}\nprint('RESULT', result['step'], type(model).__name__)"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"tensor\([0-9.]+", proc.stdout)  # the forward pass printed a finite loss
    assert "RESULT 2 ResNet" in proc.stdout
