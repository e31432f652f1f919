"""What every evaluation shares: loading a backbone from any checkpoint, results tables, TensorBoard.

The device comes from :func:`ssl_video.device.resolve_device`.

``load_backbone(path, name=...)`` accepts a training checkpoint (``{"model": method.state_dict(), "config": ...}``,
backbone weights under ``backbone.``), a plain state_dict written by ``tools/export_backbone.py``, or ``"random"`` (an
untrained backbone, the baseline every evaluation should be compared with). Exports carry the reference models' names
(torchvision's ResNet-18; pytorchvideo's ``create_x3d``, whose head pooling ``blocks.5.pool.*`` is our
``head_pool.*``) and their classifiers (``fc.*`` / ``blocks.5.proj.*``), which are ignored.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

RANDOM = "random"
# reference-model prefixes of tools/export_backbone.py -> ours (applied when the backbone has the target prefix)
EXPORT_RENAMES = {"blocks.5.pool.": "head_pool."}  # pytorchvideo create_x3d's ProjectedPool -> X3D.head_pool
CLASSIFIERS = ("fc.", "blocks.5.proj.")  # untrained heads of the exports (torchvision / create_x3d): ignored


def _checkpoint_backbone_cfg(obj: dict):
    """The ``backbone`` section of a training checkpoint's saved config (no method validation needed)."""
    from ssl_video.config import BackboneConfig

    base = OmegaConf.structured(BackboneConfig())
    text = obj.get("config") if isinstance(obj, dict) else None
    if not text:
        return base
    saved = OmegaConf.create(text).get("backbone")
    known = {k: v for k, v in (OmegaConf.to_container(saved) if saved is not None else {}).items() if k in base}
    return OmegaConf.merge(base, known)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(backbone state, raw checkpoint) through ``ssl_video.checkpoint`` (the project's one checkpoint reader)."""
    from ssl_video.checkpoint import load_backbone_state

    try:
        state = load_backbone_state(path)
        # mmap: the second read only maps the file, to reach the saved config without copying the tensors again
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except ValueError:
        raise
    except Exception as exc:  # torch's messages span many lines
        raise ValueError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path} is neither a training checkpoint nor a state_dict")
    return state, raw if isinstance(raw, dict) else {}


def load_backbone(path: str | Path, name: str | None = None, *, seed: int = 0,
                  stem: str = "imagenet") -> tuple[nn.Module, dict]:  # fmt: skip
    """Build a backbone and load its weights.

    Args:
        path: training checkpoint, exported state_dict, or ``"random"``.
        name: backbone to build (e.g. ``resnet18_s8`` for DAVIS); default: the checkpoint's, else ``x3d_xs`` for an
            X3D export (``blocks.*`` names) and ``resnet18`` otherwise. ResNet-18 variants share weight names, so a
            ``resnet18`` checkpoint loads into ``resnet18_s8`` and the ``frame_encoder.`` part of a ``resnet18_gru``
            checkpoint loads into either.
        seed: initialisation seed for ``"random"`` (and any weights the file does not hold, e.g. a GRU).
        stem: the ResNet stem of ``"random"`` (``backbone.stem``; ignored for ``x3d_xs``); a file's own stem is read
            from its ``conv1``.

    Returns:
        ``(backbone in eval mode, info)`` with ``info = {"source", "backbone", "missing", "unexpected", "ignored"}``
        (``ignored``: the export's classifier keys).
    """
    from ssl_video.models import build_backbone
    from ssl_video.models.backbones import stem_of

    torch.manual_seed(seed)
    if str(path) == RANDOM:
        cfg = _checkpoint_backbone_cfg({})
        if name:
            cfg.name = name
        cfg.stem = stem if cfg.name != "x3d_xs" else "imagenet"
        model = build_backbone(cfg)
        return model.eval(), {"source": RANDOM, "backbone": cfg.name, "missing": [], "unexpected": [], "ignored": []}
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    state, raw = _read(path)
    cfg = _checkpoint_backbone_cfg(raw)
    if name:
        cfg.name = name
    elif not raw.get("config") and any(k.startswith("blocks.") for k in state):
        cfg.name = "x3d_xs"  # a create_x3d export (no saved config): ResNets have no blocks.*
    if cfg.name != "x3d_xs":
        cfg.stem = stem_of(state)  # an export has no config: its conv1 kernel tells the stem
    model = build_backbone(cfg)
    own = model.state_dict()
    if not any(k in own for k in state) and any(k.startswith("frame_encoder.") for k in state):
        state = {k[len("frame_encoder.") :]: v for k, v in state.items() if k.startswith("frame_encoder.")}
    if not any(k in own for k in state) and any(f"frame_encoder.{k}" in own for k in state):
        state = {f"frame_encoder.{k}": v for k, v in state.items()}
    state = _export_names(state, own)
    ignored = [k for k in state if k not in own and k.startswith(CLASSIFIERS)]
    unexpected = [k for k in state if k not in own and not k.startswith(CLASSIFIERS)]
    shape_bad = [k for k in state if k in own and state[k].shape != own[k].shape]
    if unexpected or shape_bad:
        bad = (unexpected + shape_bad)[0]
        raise ValueError(f"{path} does not fit backbone '{cfg.name}': e.g. key '{bad}' "
                         f"({len(unexpected)} unexpected, {len(shape_bad)} of another shape)")
    result = model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if len(result.missing_keys) == len(own):
        raise ValueError(f"{path} holds no weights of backbone '{cfg.name}'")
    info = {"source": str(path), "backbone": cfg.name, "missing": list(result.missing_keys), "unexpected": [],
            "ignored": ignored}
    return model.eval(), info


def _export_names(state: dict[str, torch.Tensor], own: dict) -> dict[str, torch.Tensor]:
    """Rename an export's reference-model prefixes (:data:`EXPORT_RENAMES`) to the backbone's own, where it has them."""
    for theirs, ours in EXPORT_RENAMES.items():
        if any(k.startswith(ours) for k in own) and not any(k.startswith(ours) for k in state):
            state = {(ours + k[len(theirs) :] if k.startswith(theirs) else k): v for k, v in state.items()}
    return state


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable[torch.Tensor],
                       forward: Callable[[torch.Tensor], object] | None = None) -> int:
    """Replace every BatchNorm's running statistics by their average over ``batches`` ("precise BN"), then eval mode.

    Each batch counts equally (``momentum=None`` while it runs; the momentum is restored). BNs that no batch reaches
    (e.g. after the stage ``forward`` stops at) keep their statistics. ``forward`` defaults to ``model``.
    Returns the number of samples seen.
    """
    saved = {m: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}
    for m in saved:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.train()
    seen = 0
    try:
        for x in batches:
            (forward or model)(x)
            seen += len(x)
    finally:
        for m, (mean, var, count, momentum) in saved.items():
            m.momentum = momentum
            if not m.num_batches_tracked.item():  # reached by no batch: untouched
                m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
        model.eval()
    return seen


def write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts) as CSV, replacing the file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns or (rows[0].keys() if rows else []))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """Fixed-width text table; floats with ``digits`` decimals."""
    columns = list(columns or (rows[0].keys() if rows else []))
    cells = [[f"{r.get(c, ''):.{digits}f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def summary_writer(out_dir: str | Path):
    """A TensorBoard writer under ``out_dir/tb``."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(Path(out_dir) / "tb"))


def fail(message: str) -> int:
    """Print ``error: message`` to stderr; the exit status for CLIs."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def image_batch_iter(n: int, batch: int):
    """Slices ``[i, i + batch)`` covering ``range(n)``."""
    for start in range(0, n, batch):
        yield slice(start, min(start + batch, n))
