"""ssl-video: self-supervised representation learning from video.

The Python API (for notebooks and scripts), imported lazily so ``import ssl_video`` stays cheap::

    from ssl_video import build_loader, build_method, load_config, load_model, train

    cfg = load_config(["method=simclr", "data.root=shards/synthetic/kinetics/train", "data.crop_size=64",
                       "train.batch_size=4", "train.steps=2", "train.device=cpu", "train.out_dir=runs/notebook"])
    method = build_method(cfg)                       # an nn.Module: method(batch) -> {"loss": ..., ...}
    batch = next(iter(build_loader(cfg.data, batch_size=cfg.train.batch_size)))
    print(method(batch)["loss"])                     # one forward pass on real shards
    result = train(cfg)                              # the trainer itself: {"step": 2, "loss": ...}
    model = load_model("runs/notebook/checkpoints/step_00000002.pt")  # torchvision ResNet-18 with those weights
"""

from __future__ import annotations

import importlib
import types

__version__ = "0.1.0"

# name -> module that defines it
_API = {
    "load_config": "ssl_video.config",
    "build_method": "ssl_video.methods.registry",
    "build_loader": "ssl_video.data.loader",
    "train": "ssl_video.train",
    "load_model": "ssl_video.export",
}
__all__ = [*_API, "__version__"]


class _CallableTrainModule(types.ModuleType):
    """``ssl_video.train`` is both the trainer's module and the API's ``train(cfg)``: importing the submodule makes
    Python set the package attribute ``train`` to the module, so the module is made callable as the function."""

    def __call__(self, *args, **kwargs):
        return self.train(*args, **kwargs)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'ssl_video' has no attribute {name!r}")
    module = importlib.import_module(_API[name])
    if name == "train":  # not cached: the package attribute stays the submodule (``import ssl_video.train as m``)
        module.__class__ = _CallableTrainModule
        return module.train
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
