"""ssl_video.device.resolve_device: the one place a config's device name becomes a torch.device."""

from __future__ import annotations

import pytest
import torch

from ssl_video.device import resolve_device
from ssl_video.errors import ConfigError


def test_cpu_and_auto(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", local_rank=3) == torch.device("cpu")


def test_cuda_is_this_ranks_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", local_rank=2) == torch.device("cuda", 2)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:3", local_rank=1) == torch.device("cuda", 3)  # an explicit index wins


def test_cuda_without_cuda_and_unknown_names_are_one_line_config_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device 'cuda' requested but CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"unknown device 'gpu'; choose from: auto, cpu, cuda"):
        resolve_device("gpu")
