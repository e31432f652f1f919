"""Which frames and which cameras a training sample uses (pure functions of the sample's json and an RNG).

- ``clip``: ``data.clip_len`` frames at ``data.frame_stride``; with superpixels every frame of the clip must have a
  map, so only starts whose whole clip lies on superpixel frames are drawn.
- ``frames``: ``data.num_frames`` random frames (sorted, for cheap decoding), among superpixel frames if any.
- superpixels: ``data.superpixels`` names one packed algorithm, or a list of them from which each clip draws one
  (the walk study's "SLIC + Felzenszwalb chosen at random per clip"), from the sample's RNG: deterministic in the seed.
- views: ``same_clip`` uses one camera for every view (two augmentations of the same frames); ``other_camera`` (hard
  positives) takes ``data.num_views`` distinct cameras of a take at the same frame indices (packed takes are
  aligned, so frame i of every view is the same instant).
"""

from __future__ import annotations

import random

SAMPLINGS = ("clip", "frames")
POSITIVES = ("same_clip", "other_camera")


def view_prefixes(sample: dict) -> list[str]:
    """Key prefixes of the sample's videos: ``[""]`` for ``mp4``, else ``["view0.", "view1.", ...]`` in camera order."""
    if "mp4" in sample:
        return [""]
    views = [k[: -len("mp4")] for k in sample if k.startswith("view") and k.endswith(".mp4")]
    views.sort(key=lambda p: int(p[len("view") : -1]))
    if not views:
        raise ValueError("sample has no video (mp4 or view<k>.mp4)")
    return views


def candidate_frames(meta: dict, superpixels: str | None) -> list[int]:
    """Frames a sample may use: those with superpixel maps of ``superpixels`` (all frames when None)."""
    if not superpixels:
        return list(range(int(meta["num_frames"])))
    algos = meta.get("superpixels") or {}
    if superpixels not in algos:
        raise ValueError(f"sample has no '{superpixels}' superpixels (has: {', '.join(algos) or 'none'})")
    return [int(i) for i in algos[superpixels]["frame_index"]]


def superpixel_choices(value) -> list[str]:
    """``data.superpixels`` as a list of algorithms: null -> [], ``slic`` -> [slic], a list as it is."""
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def choose_superpixels(cfg, rng: random.Random) -> str | None:
    """This clip's superpixel algorithm: ``data.superpixels`` itself, or one of its list drawn uniformly from ``rng``.

    A single algorithm draws nothing, so its streams are those of the string form. Which algorithm a clip got is
    not in the batch: the maps are relabelled per frame either way, and the walk needs only the maps."""
    choices = superpixel_choices(cfg.superpixels)
    if len(choices) <= 1:
        return choices[0] if choices else None
    return choices[rng.randrange(len(choices))]


def choose_frames(meta: dict, cfg, rng: random.Random, *, superpixels: str | None = ...) -> list[int]:
    """Frame indices of one sample for ``cfg.sampling`` (see the module docstring); ``superpixels``: the clip's
    algorithm (default: ``cfg.superpixels``, which must then be one algorithm or null)."""
    if superpixels is ...:
        choices = superpixel_choices(cfg.superpixels)
        if len(choices) > 1:
            raise ValueError("data.superpixels is a list: pass the clip's algorithm (choose_superpixels)")
        superpixels = choices[0] if choices else None
    candidates = candidate_frames(meta, superpixels)
    if cfg.sampling == "frames":
        if len(candidates) < cfg.num_frames:
            raise ValueError(f"{len(candidates)} usable frames < data.num_frames={cfg.num_frames}")
        return sorted(rng.sample(candidates, cfg.num_frames))
    if cfg.sampling != "clip":
        raise ValueError(f"unknown data.sampling '{cfg.sampling}'; choose from {', '.join(SAMPLINGS)}")
    usable = set(candidates)
    span = (cfg.clip_len - 1) * cfg.frame_stride
    starts = [s for s in candidates if all(s + k * cfg.frame_stride in usable for k in range(cfg.clip_len))]
    if not starts:
        packed = candidates[1] - candidates[0] if len(candidates) > 1 else 1
        hint = f"; superpixels are every {packed} frames: use a multiple" if superpixels and packed > 1 else ""
        raise ValueError(
            f"no clip of {cfg.clip_len} frames at data.frame_stride={cfg.frame_stride} (span {span + 1}) "
            f"fits {len(candidates)} usable frames{hint}"
        )
    start = rng.choice(starts)
    return [start + k * cfg.frame_stride for k in range(cfg.clip_len)]


def choose_cameras(num_cameras: int, cfg, rng: random.Random) -> list[int]:
    """Camera (view) index of each of the ``cfg.num_views`` views."""
    if cfg.positive == "other_camera" and cfg.num_views > 1:
        if num_cameras < cfg.num_views:
            raise ValueError(
                f"data.positive=other_camera needs {cfg.num_views} cameras per sample, this one has {num_cameras} "
                "(multi-view samples: view0.mp4, view1.mp4, ...)"
            )
        return rng.sample(range(num_cameras), cfg.num_views)
    if cfg.positive not in POSITIVES:
        raise ValueError(f"unknown data.positive '{cfg.positive}'; choose from {', '.join(POSITIVES)}")
    return [rng.randrange(num_cameras)] * cfg.num_views


def superpixel_rows(meta: dict, algo: str, indices: list[int]) -> list[int]:
    """Rows of ``sp.<algo>.npz`` holding the maps of frames ``indices``."""
    row_of = {int(f): r for r, f in enumerate(meta["superpixels"][algo]["frame_index"])}
    missing = [i for i in indices if i not in row_of]
    if missing:
        raise ValueError(f"frames {missing} have no '{algo}' superpixels")
    return [row_of[i] for i in indices]


def frame_labels(meta: dict, indices: list[int]) -> list[int]:
    """Per-frame class indices of ``indices`` (-1 where the sample has none)."""
    labels = meta.get("frame_label_idx")
    if not labels:
        return [-1] * len(indices)
    return [int(labels[i]) if labels[i] is not None else -1 for i in indices]


def sample_label(meta: dict) -> int:
    """The sample's class index, -1 if unlabelled."""
    label = meta.get("label_idx")
    return -1 if label is None else int(label)
