"""A wheel of this checkout installed into a fresh venv: packaged configs, every console script's --help, a 2-step
CPU training and a SLURM dry run from another folder, and a source tree left as it was."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("install")]  # one worker builds the venv once


def _console_scripts() -> list[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    return [ast.literal_eval(v).split("=", 1)[0] for v in value.elts]
    raise AssertionError("setup.py declares no console_scripts")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (*root.iterdir(), *(root / "ssl_video").iterdir())}


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv holding only the wheel; its dependencies come from this interpreter's site-packages (a .pth line),
    so nothing is downloaded. Built with --no-build-isolation for the same reason."""
    tmp = tmp_path_factory.mktemp("install")
    before = _tree(REPO)
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(REPO)], check=True, cwd=tmp, timeout=600)  # fmt: skip
    assert _tree(REPO) == before  # no build/, no *.egg-info left in the source tree
    (wheel,) = wheels.glob("ssl_video-*.whl")
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=300)
    purelib = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "--no-deps",
                    "-q", str(wheel)], check=True, cwd=tmp, timeout=600)  # fmt: skip
    return env_dir


def _run(venv: Path, cwd: Path, *cmd: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package, not this checkout
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_installed_package_is_the_wheel_with_its_configs(venv, tmp_path):
    proc = _run(venv, tmp_path, "python", "-c", "import ssl_video.config as c; print(c.__file__); print(c.CONFIG_DIR)")
    module, configs = proc.stdout.split()
    assert module.startswith(str(venv)) and (Path(configs) / "base.yaml").is_file()
    assert (Path(configs) / "launch" / "slurm.yaml").is_file()
    proc = _run(venv, tmp_path, "python", "-c", "from ssl_video.superpixels import kernel; print(kernel.cpu_kernel())")
    assert proc.stdout.strip() == "C kernel", proc.stdout + proc.stderr  # the wheel built slic_fast's C sources


def test_every_console_script_prints_help(venv, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    procs = {  # all at once: each is mostly a Python start-up
        script: subprocess.Popen([script, "--help"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        for script in _console_scripts()
    }  # fmt: skip
    failed = {}
    for script, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        if proc.returncode != 0 or not stdout.startswith("usage:"):
            failed[script] = f"exit {proc.returncode}: {(stderr or stdout)[-300:]}"
    assert not failed, failed


def test_two_step_training_and_a_dry_run_from_another_folder(venv, kinetics_shards, tmp_path):
    out = tmp_path / "run"
    proc = _run(venv, tmp_path, "ssl-video-train", "method=walk_superpixel", f"data.root={kinetics_shards / 'train'}",
                "data.crop_size=64", "data.num_workers=0", "data.epoch_length=4", "train.batch_size=2",
                "train.steps=2", "train.device=cpu", f"train.out_dir={out}")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (out / "checkpoints" / "step_00000002.pt").is_file()
    proc = _run(venv, tmp_path, "ssl-video-submit", "--nodes", "2", "--method", "walk_superpixel", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"# ssl-video launch preset: slurm ({venv}" in proc.stdout and "#SBATCH --gpus-per-node=8" in proc.stdout
