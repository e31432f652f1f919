"""Export a trained backbone as a plain state_dict that the reference model loads with ``strict=True``.

    ssl-video-export runs/walk/checkpoints/step_00010000.pt walk_r18.pt [--no-fc] [--num-classes N]
    (python tools/export_backbone.py ... from a checkout)

or get the reference model with the trained weights in one line (``load_model``; ``hubconf.py`` for torch.hub)::

    model = ssl_video.export.load_model("runs/walk/checkpoints/step_00010000.pt")   # torchvision ResNet-18, fc=Identity

Reads a training checkpoint (``torch.load(weights_only=True)``; the ``backbone.`` keys of ``model``; the backbone's
name from the saved config, or ``--backbone``) and writes, atomically, ``OUT.pt`` plus ``OUT.json`` describing how to
load it. Before writing, the state_dict is loaded with ``strict=True`` into the reference model, so a file that is
written always loads.

- ``resnet18`` / ``resnet18_s8`` / ``resnet18_gru``: ``torchvision.models.resnet18(num_classes=N)``
  (default N = 1000) loads it with ``strict=True``. The names and shapes are torchvision's.

  * ``fc``: self-supervision trains no classifier, so the export adds torchvision's own fresh initialisation of
    ``fc`` (seeded with ``--seed``, so repeated exports are byte-identical): ``strict=True`` holds for the stock
    model and ``fc`` must be trained (a linear probe) before its logits mean anything. ``--no-fc`` leaves ``fc``
    out; then load with ``model.fc = torch.nn.Identity()`` first (still ``strict=True``), which makes the model
    return the pooled 512-d feature.
  * ``resnet18_s8`` (the walk encoder): same weights, but the stride-8 encoder runs layer3 and layer4 with stride 1
    where torchvision has stride 2. Loaded as is, the model computes the stride-32 network (valid weights, coarser
    maps); to get the trained encoder's 1/8-resolution maps set, after loading::

        for layer in (model.layer3, model.layer4):
            layer[0].conv1.stride = (1, 1)
            layer[0].downsample[0].stride = (1, 1)

  * ``resnet18_gru``: the per-frame trunk only (``frame_encoder.``); the GRU is not part of ResNet-18 and is dropped.
  * ``backbone.stem=cifar`` (read from the ``conv1`` kernel): load into ``torchvision.models.resnet18()`` after
    ``model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)`` and ``model.maxpool = torch.nn.Identity()``.

- ``x3d_xs``: ``pytorchvideo.models.x3d.create_x3d(input_clip_length=4, input_crop_size=160, depth_factor=2.2,
  width_factor=2.0, head_dim_out=D, model_num_class=N)`` loads it with ``strict=True`` (D = ``backbone.x3d_head_dim``,
  2048; N default 400). The trained projected pooling (``head_pool``) becomes ``blocks.5.pool``; ``blocks.5.proj`` is
  create_x3d's fresh initialisation (``--seed``), or absent with ``--no-fc`` (then set
  ``net.blocks[5].proj = torch.nn.Identity()`` before loading). The clip length and crop only size the head's
  parameter-free average pool: use the clip shape you will feed; the weights fit any.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ssl_video.checkpoint import load_checkpoint, save_atomic
from ssl_video.models.backbones import set_cifar_stem, stem_of

RESNETS = ("resnet18", "resnet18_s8", "resnet18_gru")
CIFAR_STEM = "conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False), maxpool = torch.nn.Identity()"  # backbone.stem=cifar
X3D_XS = {"input_clip_length": 4, "input_crop_size": 160, "depth_factor": 2.2, "width_factor": 2.0}  # backbones.x3d_xs


class ExportError(ValueError):
    """A checkpoint that cannot be exported; one line."""


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None, int | None]:
    """``(backbone state_dict, backbone name from the saved config or None, step or None)``."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint not found: {path}")
    try:
        obj = load_checkpoint(path)
    except Exception as exc:  # torch's messages span many lines
        raise ExportError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(obj, dict) or "model" not in obj:
        raise ExportError(f"{path} is not a training checkpoint (no 'model' entry)")
    state = {k[len("backbone.") :]: v for k, v in obj["model"].items() if k.startswith("backbone.")}
    if not state:
        raise ExportError(f"checkpoint {path} holds no backbone.* weights")
    name = OmegaConf.select(OmegaConf.create(obj["config"]), "backbone.name") if obj.get("config") else None
    step = int(obj["step"]) if "step" in obj else None
    return state, name, step


def set_stride8(model: torch.nn.Module) -> torch.nn.Module:
    """torchvision ResNet-18 -> the walk's stride-8 encoder: layer3/layer4 start with stride 1 (same weights)."""
    for layer in (model.layer3, model.layer4):
        layer[0].conv1.stride = (1, 1)
        layer[0].downsample[0].stride = (1, 1)
    return model


def resnet_reference(num_classes: int, seed: int) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


def x3d_reference(num_classes: int, head_dim: int, seed: int) -> torch.nn.Module:
    from pytorchvideo.models.x3d import create_x3d

    torch.manual_seed(seed)
    return create_x3d(**X3D_XS, head_dim_out=head_dim, model_num_class=num_classes)


def convert(state: dict[str, torch.Tensor], name: str, *, fc: bool = True, num_classes: int | None = None,
            seed: int = 0) -> tuple[dict[str, torch.Tensor], dict]:  # fmt: skip
    """Rename ``state`` (the method's ``backbone.`` weights) for the reference model; returns ``(state, info)``.

    The result is checked by loading it with ``strict=True`` into the reference model (``fc``/``proj`` replaced by
    ``Identity`` when ``fc=False``).
    """
    state, info, _ = convert_and_load(state, name, fc=fc, num_classes=num_classes, seed=seed)
    return state, info


def convert_and_load(state: dict[str, torch.Tensor], name: str, *, fc: bool = True, num_classes: int | None = None,
                     seed: int = 0) -> tuple[dict[str, torch.Tensor], dict, torch.nn.Module]:  # fmt: skip
    """:func:`convert`, also returning the reference model holding the weights (eval mode)."""
    if name in RESNETS:
        if name == "resnet18_gru":
            state = {k[len("frame_encoder.") :]: v for k, v in state.items() if k.startswith("frame_encoder.")}
        num_classes = num_classes or 1000
        reference = resnet_reference(num_classes, seed)
        head, head_key = "fc", "fc"
        load = f"torchvision.models.resnet18(num_classes={num_classes})"
        if stem_of(state) == "cifar":
            set_cifar_stem(reference)
            load = f"{load} with {CIFAR_STEM}"
    elif name == "x3d_xs":
        state = {(f"blocks.5.pool.{k[len('head_pool.') :]}" if k.startswith("head_pool.") else k): v
                 for k, v in state.items()}  # fmt: skip
        num_classes = num_classes or 400
        if "blocks.5.pool.post_conv.weight" not in state:
            raise ExportError("backbone 'x3d_xs' weights do not fit create_x3d: no head_pool.post_conv.weight")
        head_dim = int(state["blocks.5.pool.post_conv.weight"].shape[0])
        reference = x3d_reference(num_classes, head_dim, seed)
        head, head_key = "blocks[5].proj", "blocks.5.proj"
        args = ", ".join(f"{k}={v}" for k, v in {**X3D_XS, "head_dim_out": head_dim}.items())
        load = f"pytorchvideo.models.x3d.create_x3d({args}, model_num_class={num_classes})"
    else:
        raise ExportError(f"backbone '{name}' has no reference model to export to (one of: {', '.join(RESNETS)}, "
                          "x3d_xs)")  # fmt: skip
    ref_state = reference.state_dict()
    if fc:
        state = {**state, **{k: v.clone() for k, v in ref_state.items() if k.startswith(head_key + ".")}}
    else:
        parent, attr = (reference, "fc") if head_key == "fc" else (reference.blocks[5], "proj")
        setattr(parent, attr, torch.nn.Identity())
        load = f"{load} with {head} = torch.nn.Identity()"
    try:
        reference.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = [line.strip() for line in str(exc).splitlines() if line.strip()][-1]
        raise ExportError(f"backbone '{name}' weights do not fit {load}: {detail}") from None
    classifier = f"{head}: fresh initialisation (seed {seed}), not trained" if fc else f"{head}: absent"
    info = {"backbone": name, "load": f"{load}; model.load_state_dict(state, strict=True)", "classifier": classifier}
    if name == "resnet18_s8":
        info["differs"] = ("trained with stride 1 in layer3[0] and layer4[0] (conv1 and downsample[0]), "
                           "torchvision has 2: set them to (1, 1) for the 1/8-resolution encoder")  # fmt: skip
    if name == "resnet18_gru":
        info["differs"] = "per-frame trunk only: the GRU over frame features is not exported"
    return state, info, reference.eval()


def load_model(checkpoint: str | Path, *, backbone: str | None = None, fc: bool = False,
               num_classes: int | None = None, seed: int = 0, stride8: bool | None = None,
               family: str | None = None) -> torch.nn.Module:
    """The reference model (torchvision ResNet-18 / pytorchvideo X3D-XS) holding a training checkpoint's backbone.

    ``fc=False`` (default): the classifier is ``Identity`` and the model returns the pooled feature (512-d ResNet,
    ``backbone.x3d_head_dim`` X3D); ``fc=True``: a fresh, untrained classifier of ``num_classes`` (seed ``seed``).
    ``stride8``: run layer3/layer4 with stride 1 as the walk's ``resnet18_s8`` encoder was trained (default: only
    for that backbone). ``family`` (``resnet18`` | ``x3d_xs``): the model kind the caller expects (hub entry points).
    Raises :class:`ExportError` (one line) for a file that is not a usable checkpoint.
    """
    state, saved_name, _ = read_checkpoint(checkpoint)
    name = backbone or saved_name
    if not name:
        raise ExportError(f"{checkpoint} has no saved config naming its backbone: pass backbone=")
    if family is not None and name not in (RESNETS if family == "resnet18" else (family,)):
        raise ExportError(f"{checkpoint} holds a '{name}' backbone, not a {family}")
    _, _, model = convert_and_load(state, name, fc=fc, num_classes=num_classes, seed=seed)
    if stride8 if stride8 is not None else name == "resnet18_s8":
        if name not in RESNETS:
            raise ExportError(f"stride8 applies to the ResNet-18 backbones, not '{name}'")
        set_stride8(model)
    return model


def export(checkpoint: str | Path, out: str | Path, *, backbone: str | None = None, fc: bool = True,
           num_classes: int | None = None, seed: int = 0) -> dict:  # fmt: skip
    """Write ``out`` (state_dict) and ``out`` with suffix ``.json`` (how to load it); returns the JSON's dict."""
    state, saved_name, step = read_checkpoint(checkpoint)
    name = backbone or saved_name
    if not name:
        raise ExportError(f"{checkpoint} has no saved config naming its backbone: pass --backbone")
    state, info = convert(state, name, fc=fc, num_classes=num_classes, seed=seed)
    info.update({"source": str(checkpoint), "step": step, "tensors": len(state)})
    out = Path(out)
    save_atomic(state, out)
    save_atomic_text(json.dumps(info, indent=2) + "\n", out.with_suffix(".json"))
    return info


def save_atomic_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    from ssl_video.cli import Parser

    parser = Parser(prog="ssl-video-export", description=__doc__.split("\n\n")[0],
                    epilog="example: ssl-video-export runs/walk/checkpoints/step_00010000.pt walk_r18.pt --no-fc")
    parser.add_argument("checkpoint", help="training checkpoint (<out_dir>/checkpoints/step_*.pt)")
    parser.add_argument("out", help="output state_dict (.pt); a .json beside it says how to load it")
    parser.add_argument("--backbone", default=None, help="override the backbone named by the checkpoint's config")
    parser.add_argument("--no-fc", action="store_true", help="leave out the untrained classifier (fc / blocks.5.proj)")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier size (default 1000 / X3D 400)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the classifier's fresh initialisation")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        info = export(args.checkpoint, args.out, backbone=args.backbone, fc=not args.no_fc,
                      num_classes=args.num_classes, seed=args.seed)  # fmt: skip
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({info['tensors']} tensors, backbone {info['backbone']}, step {info['step']})")
    print(f"load: {info['load']}")
    if "differs" in info:
        print(f"note: {info['differs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
