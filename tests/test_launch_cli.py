"""Console scripts: every one in setup.py resolves; ``ssl-video-submit`` (ssl_video.launch) behaves as
``python launch/submit.py``; the job it submits unpickles on a node that never imported the launcher script."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _console_scripts() -> dict[str, str]:
    """``{name: "module:function"}`` read from setup.py's source (no setup() call)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    items = [ast.literal_eval(v) for v in value.elts]
                    return dict(item.split("=", 1) for item in items)
    raise AssertionError("setup.py declares no console_scripts")


def test_every_code_folder_is_a_package_the_wheel_ships():
    """setup.py's find_packages skips a folder without __init__.py: its modules would be missing once installed."""
    from setuptools import find_packages

    shipped = set(find_packages(str(REPO), include=["ssl_video", "ssl_video.*"]))
    code = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "ssl_video").rglob("*.py")}
    assert code <= shipped, sorted(code - shipped)


def test_every_console_script_in_setup_py_resolves():
    scripts = _console_scripts()
    assert scripts["ssl-video-submit"] == "ssl_video.launch:main"
    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func, None)), f"{name} -> {target}"


def test_installed_entry_point_is_launch_main():
    try:
        eps = importlib.metadata.entry_points(group="console_scripts")
    except Exception:  # pragma: no cover - very old importlib.metadata
        pytest.skip("importlib.metadata cannot list entry points")
    submit = [ep for ep in eps if ep.name == "ssl-video-submit"]
    if not submit:
        pytest.skip("ssl-video is not installed in this environment (pip install -e .)")
    if submit[0].value != _console_scripts()["ssl-video-submit"]:
        pytest.skip(f"the installed metadata is older than setup.py ({submit[0].value}): reinstall")
    from ssl_video.launch import main

    assert submit[0].load() is main


def test_dry_run_prints_the_sbatch_script_from_any_directory(tmp_path):
    # the installed console script itself runs in tests/test_install.py (a fresh venv from a wheel)
    cmd = [sys.executable, "-m", "ssl_video.launch"]
    proc = subprocess.run([*cmd, "--nodes", "2", "--method", "moco", "--time", "30", "--dry-run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for line in ("#!/bin/bash", "#SBATCH --nodes=2", "#SBATCH --time=30", "#SBATCH --job-name=moco"):
        assert line in proc.stdout, line
    assert "srun" in proc.stdout and "submitit.core._submit" in proc.stdout


def test_bad_override_exits_with_one_line(capsys):
    from ssl_video.launch import main

    with pytest.raises(SystemExit) as exc:
        main(["--method", "walk_superpixel", "--dry-run", "train.stepz=3"])
    assert exc.value.code == 2
    message = "error: unknown config key 'train.stepz' (did you mean 'train.steps'?)"
    assert capsys.readouterr().err.splitlines() == [message]


def test_submitted_job_unpickles_where_launch_submit_was_never_imported(tmp_path, monkeypatch, capsys):
    """submitit pickles the job with cloudpickle; the compute node must rebuild it without our launcher module."""
    import cloudpickle
    import submitit

    from ssl_video.launch import main

    submitted = []

    class FakeExecutor:  # stands in for SLURM: keeps the submitted object, numbers the jobs 42, 43, ...
        def __init__(self, folder, cluster=None, **kwargs):
            self.folder = folder

        def update_parameters(self, **params):
            self.params = params

        def submit(self, job):
            submitted.append(job)
            return type("Job", (), {"job_id": str(41 + len(submitted))})()

    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    assert main(["--method", "simclr", f"launch.folder={tmp_path / 'jobs'}", "train.steps=5"]) == 0
    assert main(["--method", "simclr", f"launch.folder={tmp_path / 'jobs'}", "train.steps=7"]) == 0
    out = capsys.readouterr().out
    assert "submitted job 42 (slurm, preset slurm)" in out and "submitted job 43" in out
    # one folder per job id, each with that job's config (the second submission does not overwrite the first)
    assert "steps: 5" in (tmp_path / "jobs" / "simclr" / "42" / "config.yaml").read_text()
    assert "steps: 7" in (tmp_path / "jobs" / "simclr" / "43" / "config.yaml").read_text()
    assert not (tmp_path / "jobs" / "simclr" / "config.yaml").exists()
    payload = cloudpickle.dumps(submitted[0])
    check = ("import pickle, sys; job = pickle.loads(sys.stdin.buffer.read()); "
             "assert 'submit' not in sys.modules and '__main__' not in type(job).__module__; "
             "print(type(job).__name__, 'steps: 5' in job.config_yaml, type(job.checkpoint()).__name__)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", check], input=payload, cwd=tmp_path, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split() == ["TrainingJob", "True", "DelayedSubmission"]
