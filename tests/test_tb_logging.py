"""ssl_video.tb_logging against a real TensorBoard server: a short real training run plus the resolved config and the
hparams summaries, read back through TensorBoard's HTTP API (the tags docs/training.md and docs/install.md list)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from ssl_video import checkpoint as ckpt
from ssl_video.config import config_from_yaml
from ssl_video.tb_logging import CONFIG_TAG, HPARAM_KEYS, hparam_values, log_hparams, log_run_config

TRAINING_TAGS = {"Training/loss", "Training/lr", "Speed/clips_per_sec_per_gpu", "Speed/data_wait_fraction",
                 "Data/skipped_samples", "Memory/peak_MiB"}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"X-XSRF-Protected": "1",
                                                               "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _poll(fetch, ready, deadline_s: float = 240.0):
    """``fetch()`` until ``ready(result)``; TensorBoard loads event files in the background, so wait generously."""
    deadline, last = time.monotonic() + deadline_s, None
    while time.monotonic() < deadline:
        try:
            last = fetch()
            if ready(last):
                return last
        except OSError as exc:  # server not up yet
            last = exc
        time.sleep(1.0)
    raise AssertionError(f"TensorBoard did not serve the expected data within {deadline_s} s: {last!r}")


@pytest.fixture()
def trained_run(kinetics_shards, tmp_path) -> Path:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ssl_video.train", "method=walk_superpixel", f"data.root={kinetics_shards / 'train'}",
           "data.crop_size=64", "data.num_workers=0", "data.epoch_length=4", "train.batch_size=2", "train.steps=2",
           "train.log_every=1", "train.device=cpu", f"train.out_dir={out}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def test_hparam_values_are_tensorboard_types():
    cfg = config_from_yaml("method:\n  name: moco\noptim:\n  lr: 0.1\n")
    values = hparam_values(cfg)
    assert values["method.name"] == "moco" and values["optim.lr"] == 0.1
    assert set(values) <= set(HPARAM_KEYS) and all(isinstance(v, (bool, int, float, str)) for v in values.values())


@pytest.mark.slow
def test_a_real_tensorboard_serves_the_run_config_and_hparams(trained_run):
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(trained_run))
    cfg = config_from_yaml(state["config"])
    with SummaryWriter(str(trained_run / "tb")) as writer:  # what the trainer does at its start and end
        log_run_config(writer, cfg)
        log_hparams(writer, cfg, {"loss": 1.25}, step=state["step"])

    port = _free_port()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(trained_run), "--host",
                               "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)  # fmt: skip
    base = f"http://127.0.0.1:{port}/data/plugin"
    try:
        scalars = _poll(lambda: _get(f"{base}/scalars/tags"),
                        lambda tags: "tb" in tags and TRAINING_TAGS | {"hparams/loss"} <= set(tags["tb"]))
        assert any(tag.startswith("Method/") for tag in scalars["tb"])  # the method's own numbers
        text_tag = f"{CONFIG_TAG}/text_summary"  # torch's add_text appends /text_summary
        texts = _poll(lambda: _get(f"{base}/text/tags"), lambda tags: text_tag in tags.get("tb", []))
        assert texts["tb"] == [text_tag]
        experiment = _poll(lambda: _get(f"{base}/hparams/experiment", {"experimentName": ""}),
                           lambda e: e.get("hparamInfos"))
        names = {info["name"] for info in experiment["hparamInfos"]}
        assert {"method.name", "backbone.name", "optim.lr", "train.batch_size"} <= names
        assert [m["name"]["tag"] for m in experiment["metricInfos"]] == ["hparams/loss"]
        groups = _get(f"{base}/hparams/session_groups", {"experimentName": "", "startIndex": 0, "sliceSize": 10,
                                                          "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"]})
        session = groups["sessionGroups"][0]
        assert session["hparams"]["method.name"] == "walk_superpixel"
        assert session["hparams"]["train.steps"] == 2
        assert session["metricValues"][0]["value"] == pytest.approx(1.25)
    finally:
        server.kill()
        server.wait(timeout=60)
