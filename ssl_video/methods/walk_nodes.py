"""Graph nodes for the contrastive random walk: jittered patches, and area-weighted superpixel pooling.

Two ways to turn frames into node embeddings (see :mod:`ssl_video.methods.walk`):

- :func:`extract_patches` cuts a grid of ``size``×``size`` patches at ``stride`` out of every frame, each with its own
  spatial jitter (a random sub-box of 70–90 % of the patch area, aspect ratio in [3/4, 4/3], resized back to
  ``size``), like videowalk's ``patch_grid`` + ``RandomResizedCrop``. The patches are then encoded as images.
- :func:`superpixel_pool` averages the cells of one frame's feature map into one vector per superpixel, each cell
  weighted by the fraction of its area the superpixel covers (the seed's eq. 3.5). Coverage is counted with one
  ``bincount`` over ``(frame, label, cell)`` keys at pixel level and the pooling is a sparse ``index_add`` over the
  non-zero ``(frame, label, cell)`` pairs, so nothing of size ``frames × labels × H × W`` is ever built.
  A superpixel smaller than a cell still gets an embedding: the features of the cell(s) it touches.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align


def patch_grid(height: int, width: int, size: int, stride: int) -> torch.Tensor:
    """Top-left corners ``(P, 2)`` as ``(y, x)`` of the patch grid, row-major; raises if no patch fits."""
    if size <= 0 or stride <= 0:
        raise ValueError(f"patch size and stride must be positive, got size={size} stride={stride}")
    if size > height or size > width:
        raise ValueError(f"patch size {size} does not fit in {height}x{width} frames; lower method.patch_size")
    ys = torch.arange(0, height - size + 1, stride)
    xs = torch.arange(0, width - size + 1, stride)
    return torch.cartesian_prod(ys, xs)


def patch_boxes(
    num_frames: int,
    height: int,
    width: int,
    size: int,
    stride: int,
    jitter: bool = True,
    scale: tuple[float, float] = (0.7, 0.9),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``roi_align`` boxes ``(num_frames * P, 5)``: ``(frame, x1, y1, x2, y2)`` in pixels, frame-major.

    Without jitter each box is exactly its grid window. With jitter each patch gets an independent random sub-box of
    area fraction ``U(scale)`` and aspect ratio ``exp(U(log ratio))`` (clamped to the window), placed uniformly.
    """
    corners = patch_grid(height, width, size, stride).to(device=device, dtype=torch.float32)
    P = corners.shape[0]
    y0 = corners[:, 0].repeat(num_frames)
    x0 = corners[:, 1].repeat(num_frames)
    frame = torch.arange(num_frames, device=device, dtype=torch.float32).repeat_interleave(P)
    bw = torch.full_like(x0, float(size))
    bh = torch.full_like(y0, float(size))
    if jitter:
        area = torch.empty_like(x0).uniform_(*scale)
        log_r = torch.empty_like(x0).uniform_(math.log(ratio[0]), math.log(ratio[1]))
        r = torch.exp(log_r)
        bw = (size * torch.sqrt(area * r)).clamp(max=size)
        bh = (size * torch.sqrt(area / r)).clamp(max=size)
        x0 = x0 + torch.rand_like(x0) * (size - bw)
        y0 = y0 + torch.rand_like(y0) * (size - bh)
    return torch.stack([frame, x0, y0, x0 + bw, y0 + bh], dim=1)


def extract_patches(frames: torch.Tensor, size: int, stride: int, jitter: bool = True, **jitter_kw) -> torch.Tensor:
    """Patches ``(N, P, C, size, size)`` of ``frames`` ``(N, C, H, W)``; bilinear resampling for jittered boxes.

    ``roi_align`` (torchvision) does crop + resize of every box in one batched call; with ``aligned=True`` and one
    sample per bin an un-jittered window is copied exactly.
    """
    N, C, H, W = frames.shape
    boxes = patch_boxes(N, H, W, size, stride, jitter=jitter, device=frames.device, **jitter_kw)
    out = roi_align(frames, boxes.to(frames.dtype), output_size=size, spatial_scale=1.0, sampling_ratio=1, aligned=True)
    return out.view(N, -1, C, size, size)


def cell_index(height: int, width: int, fh: int, fw: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Feature-map cell ``(H, W) long`` of every pixel: pixel row ``y`` lies in cell row ``y * fh // H``."""
    ys = torch.arange(height, device=device) * fh // height
    xs = torch.arange(width, device=device) * fw // width
    return ys[:, None] * fw + xs[None, :]


def superpixel_pool(
    feats: torch.Tensor, labels: torch.Tensor, num_nodes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-weighted superpixel embeddings.

    Args:
        feats: ``(N, D, h, w)`` feature maps of ``N`` frames.
        labels: ``(N, H, W)`` long superpixel labels, ``0 <= label < num_nodes``.
        num_nodes: ``M``, the padded node count (default: ``labels.max() + 1``).

    Returns:
        ``emb`` ``(N, M, D)`` (float32, or float64 for float64 ``feats``):
        ``sum_c a[m, c] f_c / sum_c a[m, c]``
        with ``a[m, c]`` the fraction of cell ``c``'s area covered by superpixel ``m``;
        zero for labels absent from a frame.
        ``area`` ``(N, M)``: pixels per superpixel (0 marks a padded / absent node).
    """
    N, D, fh, fw = feats.shape
    if labels.shape[0] != N or labels.ndim != 3:
        raise ValueError(f"labels must be (N, H, W) with N={N}, got {tuple(labels.shape)}")
    H, W = labels.shape[-2:]
    lo, hi = int(labels.min()), int(labels.max())
    M = hi + 1 if num_nodes is None else int(num_nodes)
    if lo < 0 or hi >= M:
        raise ValueError(f"superpixel labels must lie in 0..{M - 1}, got {lo}..{hi}")
    cells = fh * fw
    cell = cell_index(H, W, fh, fw, device=labels.device)
    dtype = torch.promote_types(feats.dtype, torch.float32)  # bf16 sums over many cells lose too much
    cell_area = torch.bincount(cell.flatten(), minlength=cells).to(dtype)

    frame = torch.arange(N, device=labels.device).view(N, 1, 1)
    key = ((frame * M + labels) * cells + cell).flatten()  # (frame, label, cell), cell fastest
    counts = torch.bincount(key, minlength=N * M * cells)
    pair = counts.nonzero().squeeze(1)  # the few (frame, label, cell) triples that occur
    node = pair // cells  # frame * M + label
    c = pair % cells
    weight = counts[pair].to(dtype) / cell_area[c]

    flat = feats.permute(0, 2, 3, 1).reshape(N * cells, D).to(dtype)
    src = flat[(node // M) * cells + c] * weight[:, None]
    emb = torch.zeros(N * M, D, device=feats.device, dtype=dtype).index_add(0, node, src)
    mass = torch.zeros(N * M, device=feats.device, dtype=dtype).index_add(0, node, weight)
    emb = emb / mass.clamp_min(1e-12)[:, None]
    area = torch.zeros(N * M, device=feats.device, dtype=dtype).index_add(0, node, counts[pair].to(dtype))
    return emb.view(N, M, D), area.view(N, M)
