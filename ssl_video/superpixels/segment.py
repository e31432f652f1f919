"""Superpixels for packing and training: one entry point, ``segment(frames, algo, **params)``.

Algorithms: scikit-image's ``slic``, ``felzenszwalb``, ``quickshift`` (parameters are skimage's), and ``slic_fast``:
a batched torch SLIC (:func:`slic_fast`) that runs on CPU or CUDA from the same code, with skimage's parameters
(``n_segments``, ``compactness``, ``max_num_iter``, ``sigma``, ``enforce_connectivity``, ``min_size_factor``).
Output labels of :func:`segment` are ``uint16``, contiguous ``0..n-1`` per frame.

How ``slic_fast`` matches skimage's ``slic``: the same Lab conversion (sRGB D65, tested against ``rgb2lab``), the same
distance ``d_lab^2 / m^2 + d_xy^2 / S^2``, at most the same iteration count (skimage's first pass is a pure grid
partition because its centres start with zero colour; here that pass is the initialisation). Differences, all
measured by ``benchmarks/superpixels.py`` (docs/superpixels.md):
- the grid has ``rows x cols`` close to ``n_segments`` with near-square cells (:func:`grid`, fast-slic's rule:
  skimage's ``regular_grid`` gives 25 centres for 30 at 256x256) and ``S`` is the side of the mean cell;
- where superpixels are large (``S >= 16`` pixels: e.g. 256x256 with n_segments <= ~250) the frame is first averaged
  over 2x2 blocks (``downsample=2``), segmented, and each pixel takes its block's label (boundaries snap to even
  pixels: within the 1-pixel tolerance of boundary recall at 256x256); ``downsample=1`` turns this off;
- each pixel is compared with the centres of its own and the 8 neighbouring grid cells (SLIC's 2S x 2S window
  around centres that stay near their cell), not with every centre within +-2S as skimage does;
- the k-means iterations use every 2nd pixel in y and x (``subsample=2``; 1 turns this off); the labels come from a
  final assignment of every pixel (of the block-averaged frame);
- the iterations stop once at most ``tol`` (default 2%) of those pixels changed centre (skimage: none; ``tol=0``);
- small components (< ``min_size_factor`` x mean size) merge into the neighbour (larger than them) whose cluster colour
  is closest (a merged group keeps its root's colour: exact ties stay exact whatever the float rounding), repeatedly
  until none is left (skimage merges once into the previously scanned neighbour); skimage's
  splitting of components above ``max_size`` (a buffer limit of its breadth-first search) is not reproduced, so
  ``max_size_factor`` is accepted and ignored;
- ``sigma`` smooths the RGB frame (skimage smooths the Lab image).
On CPU, uint8 frames go to a C kernel (:mod:`ssl_video.superpixels.kernel`, ``_slic.c``) running these same steps
one frame at a time (same labels up to float ties, tested); the torch code below serves CUDA, float input, ``sigma``
and CPUs where the kernel was not built (:func:`~ssl_video.superpixels.kernel.cpu_kernel` says which runs).
Torch speed: pixels are laid out by grid cell so that one ``bmm`` gives every pixel's distance to its 9 candidates, the
argmin is one integer ``amin`` (slot in the low bits of the float), the update one ``bmm`` + ``index_add_``; tables
that depend only on the shape are cached (:func:`_layout`) and each iteration is ~25 tensor calls whatever the batch,
since a single frame on one CPU core is bound by the per-call overhead.
Connected components: ``skimage.measure.label`` on CPU; on CUDA a vectorised min-label propagation (same partition,
tested on CPU).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from ssl_video.superpixels import kernel
from ssl_video.superpixels.connectivity import _compact_clusters, _connectivity_merge

ALGOS = ("slic", "slic_fast", "felzenszwalb", "quickshift")
_FAST_PARAMS = ("n_segments", "compactness", "max_num_iter", "sigma", "enforce_connectivity", "min_size_factor",
                "max_size_factor", "start_label", "subsample", "downsample", "tol", "device", "backend")
_BIG = 1e30  # every coordinate of a missing (off-grid) candidate centre: never the nearest


def relabel_contiguous(labels: np.ndarray) -> np.ndarray:
    """Map the labels of one frame onto ``0..n-1`` in order of first appearance of their sorted values."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.uint16)


# ---------------------------------------------------------------------------------------------------------- colour
@functools.lru_cache(maxsize=8)
def _srgb_table(device: str) -> torch.Tensor:
    """Linear-light value of each uint8 sRGB code (skimage's curve), float32 on ``device``."""
    c = torch.arange(256, dtype=torch.float64) / 255.0
    return torch.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92).to(device, torch.float32)


@functools.lru_cache(maxsize=8)
def _xyz_matrix(device: str) -> torch.Tensor:
    """sRGB-linear -> XYZ divided by the D65 white point (skimage's constants), float32 on ``device``."""
    from skimage.color.colorconv import xyz_from_rgb, xyz_tristimulus_values

    white = torch.as_tensor(xyz_tristimulus_values(illuminant="D65", observer="2"), dtype=torch.float64)
    return (torch.as_tensor(xyz_from_rgb, dtype=torch.float64) / white[:, None]).to(device, torch.float32)


def _lab_into(rgb: torch.Tensor, out: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Write ``scale`` x CIE Lab of planar sRGB ``rgb`` ``(B, 3, P)`` into ``out[:, :3]`` ``(B, >=3, P)`` float32."""
    if rgb.dtype == torch.uint8:  # exact 256-entry table instead of a per-pixel power
        lin = _srgb_table(str(rgb.device)).index_select(0, rgb.reshape(-1).int()).view(rgb.shape)  # int32: fastest
    else:
        c = rgb.float()
        lin = torch.where(c > 0.04045, ((c + 0.055) / 1.055).clamp_min(0) ** 2.4, c / 12.92)
    xyz = torch.matmul(_xyz_matrix(str(lin.device)), lin)
    linear = torch.mul(xyz, 7.787).add_(16.0 / 116.0)
    # f = cbrt(t) above 0.008856 else the linear part, which is cbrt's tangent there: cbrt is concave, so
    # f = min(cbrt(max(t, 0.008856)), linear) exactly, without a mask; exp(log/3) is ~3x faster than pow on CPU
    f = torch.minimum(xyz.clamp_min_(0.008856).log_().div_(3.0).exp_(), linear)
    fx, fy, fz = f.unbind(1)
    torch.mul(fy, 116.0 * scale, out=out[:, 0]).sub_(16.0 * scale)
    torch.sub(fx, fy, out=out[:, 1]).mul_(500.0 * scale)
    torch.sub(fy, fz, out=out[:, 2]).mul_(200.0 * scale)
    return out


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65, 2° observer, skimage's constants) of ``(..., 3)`` sRGB: uint8, or float in ``[0, 1]``.

    Hand-written because ``skimage.color.rgb2lab`` is numpy-only; this one runs on CUDA. Returns float32.
    """
    planar = rgb.reshape(-1, 3).T[None]
    out = _lab_into(planar, torch.empty(1, 3, planar.shape[-1], device=rgb.device))
    return out[0].T.reshape(rgb.shape)


# ------------------------------------------------------------------------------------------------------ clustering
def grid(height: int, width: int, n_segments: int) -> tuple[int, int, float]:
    """The centre grid for an ``height x width`` frame: ``(rows, cols, step)``, ``rows * cols`` close to
    ``n_segments`` with near-square cells (fast-slic's rule; skimage's ``regular_grid`` often gives far fewer, e.g.
    25 for 30 at 256x256) and ``step`` the side of a square of the mean cell area."""
    rows = max(1, min(height, round(math.sqrt(n_segments * height / width))))
    cols = max(1, min(width, round(n_segments / rows)))
    return rows, cols, math.sqrt(height * width / (rows * cols))


@functools.lru_cache(maxsize=32)
def _layout(h: int, w: int, rows: int, cols: int, step: float, frames: int,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-shape constants, cached (building them was a third of a single frame's time). Pixels are laid out by
    grid cell (``K = rows * cols`` blocks of ``P`` pixels, the frame padded to whole cells):
    ``(K, 3, P)`` each pixel's ``[y / step, x / step, weight]`` (weight 0 on padding);
    ``(frames*K, 9)`` the centres a cell's pixels are compared with (its own and the 8 neighbouring cells': SLIC's
    2S x 2S window around centres that stay near their cell), numbered over the batch with ``K+1`` per frame (``K``:
    off the grid); ``(frames*K, 9)`` the same numbered within the frame; ``(1, 9, P)`` the one-hot of the own cell."""
    ch, cw = -(-h // rows), -(-w // cols)
    k = rows * cols
    y = torch.arange(rows * ch, device=device).view(rows, ch, 1, 1).expand(-1, -1, cols, cw)
    x = torch.arange(cols * cw, device=device).view(1, 1, cols, cw).expand(rows, ch, -1, -1)
    yx = torch.stack([y, x]).permute(1, 3, 0, 2, 4).reshape(k, 2, ch * cw).float()  # (K, 2, P) by cell
    weight = ((yx[:, :1] < h) & (yx[:, 1:] < w)).float()
    pos = torch.cat([yx / step, torch.ones_like(weight)], 1) * weight
    idx = torch.arange(k, device=device, dtype=torch.float32).view(1, 1, rows, cols)
    local = F.unfold(F.pad(idx, (1, 1, 1, 1), value=float(k)), 3).view(9, k).T.contiguous().long()  # (K, 9)
    batched = (local + torch.arange(frames, device=device).view(-1, 1, 1) * (k + 1)).reshape(frames * k, 9)
    first = (torch.arange(9, device=device) == 4).float().view(1, 9, 1).expand(1, 9, ch * cw)
    return pos, batched, local.repeat(frames, 1), first


def _features(rgb: torch.Tensor, compactness: float, rows: int, cols: int, step: float) -> torch.Tensor:
    """``(N*K, 6, P)``: per grid cell and pixel [L/m, a/m, b/m, y/S, x/S, weight] of ``rgb``
    ``(N, H, W, 3)``, which is padded to whole cells with pixels of no weight."""
    n, h, w, _ = rgb.shape
    ch, cw = -(-h // rows), -(-w // cols)
    k, p = rows * cols, ch * cw
    pos = _layout(h, w, rows, cols, step, n, rgb.device)[0]
    rgb = F.pad(rgb.permute(0, 3, 1, 2), (0, cols * cw - w, 0, rows * ch - h))  # (N, 3, Hp, Wp), cheap in uint8
    planar = rgb.reshape(n, 3, rows, ch, cols, cw).permute(0, 2, 4, 1, 3, 5).reshape(n * k, 3, p)
    out = torch.empty(n, k, 6, p, device=rgb.device)
    _lab_into(planar, out.view(n * k, 6, p), 1.0 / compactness)  # black padding: Lab 0 (and no weight)
    out[:, :, 3:6] = pos
    out = out.view(n * k, 6, p)
    return out


def _nearest(feats: torch.Tensor, cand: torch.Tensor, dist: torch.Tensor, slot: torch.Tensor,
             scratch: torch.Tensor) -> torch.Tensor:
    """Per pixel of ``feats`` ``(B, 6, P)``, its L1 distance ``|d_lab| / m + |d_xy| / S`` to the nearest of its cell's
    9 candidates ``cand`` ``(B, 9, 5)``, with the candidate's slot 0..8 in the low 4 bits of the float, ``(B, P)``.
    ``dist`` and ``scratch`` are ``(B, 9, P)`` buffers. Padding pixels (weight 0) get distance 0 to every candidate:
    slot 0, whatever the centres do."""
    # feature by feature into (B, 9, P): a (B, 9, 5, P) difference would be 5x the memory (GiBs for a GPU batch)
    torch.sub(feats[:, None, 0], cand[:, :, 0, None], out=dist).abs_()
    for i in range(1, 5):  # summed over the 5 features in order, as the C kernel
        dist.add_(torch.sub(feats[:, None, i], cand[:, :, i, None], out=scratch).abs_())
    dist.mul_(feats[:, None, 5])
    # argmin over 9 as one integer min: non-negative floats order like their bits; the slot goes in the low bits
    bits = dist.view(torch.int32)
    bits.bitwise_and_(~15).bitwise_or_(slot)
    return bits.amin(1)


class _Centres:
    """The ``K`` centres of ``n`` frames, ``(n, K, 5)`` (colour first), with the buffers that update them from the
    pixels' assignments and lay them out as each block's 9 candidates, allocated once per call:
    each SLIC iteration is ~20 tensor operations whatever the frame count (a single frame is overhead-bound)."""

    def __init__(self, n: int, k: int, blocks: int, dest: torch.Tensor, device: torch.device):
        self.n, self.k, self.dest = n, k, dest
        self.table = torch.zeros(n, k + 1, 5, device=device)  # row K: off-grid, never nearest
        self.table[:, k] = _BIG
        self.flat_table = self.table.view(-1, 5)
        self.own = self.table[:, :k]  # a view made once: each costs a call
        self.cand = torch.empty(blocks, 9, 5, device=device)
        self.cand_flat = self.cand.view(-1, 5)
        self.part = torch.empty(blocks, 9, 6, device=device)
        self.part_flat = self.part.view(-1, 6)
        self.acc = torch.empty(n * (k + 1), 6, device=device)
        sums = self.acc.view(n, k + 1, 6)[:, :k]
        self.total, self.count = sums[..., :5], sums[..., 5:]
        self.values = torch.zeros(n, k, 5, device=device)

    def update(self, onehot: torch.Tensor, pixels_t: torch.Tensor, active: torch.Tensor | None) -> None:
        """Centres <- mean of their pixels (``onehot`` ``(B, 9, P)`` over each block's candidates); a centre without
        pixels, or of a frame no longer ``active``, stays."""
        torch.bmm(onehot, pixels_t, out=self.part)
        self.acc.zero_().index_add_(0, self.dest, self.part_flat)
        keep = self.count > 0 if active is None else (self.count > 0) & active
        self.values = torch.where(keep, self.total / self.count.clamp_min(1e-6), self.values)

    def candidates(self) -> torch.Tensor:
        """``(B, 9, 5)`` each cell's candidate centres for :func:`_nearest`."""
        self.own.copy_(self.values)
        torch.index_select(self.flat_table, 0, self.dest, out=self.cand_flat)
        return self.cand


def _cluster(feats: torch.Tensor, n: int, rows: int, cols: int, layout: tuple, iters: int,
             cell: tuple[int, int], subsample: int = 1, tol: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """SLIC k-means on cell blocks: each pixel's centre ``(B, P)`` (numbered ``0..K-1`` per frame) and the
    centres ``(N, K, 5)`` (colour first).

    ``feats`` ``(B, 6, P)`` from :func:`_features`, ``layout`` from :func:`_layout`. The iterations use every
    ``subsample``-th pixel of a block in y and x; the labels come from a final assignment of every pixel. A frame
    stops once at most a fraction ``tol`` of its pixels changed centre (0: none, as skimage); its centres then stay
    as they are, so that a frame's result does not depend on the batch it came in.
    """
    b, _, p = feats.shape
    dev = feats.device
    _, table, local, first = layout
    sub = feats.view(b, 6, *cell)[:, :, ::subsample, ::subsample].reshape(b, 6, -1) if subsample > 1 else feats
    sub_t = sub[:, :6].transpose(1, 2).contiguous()  # (B, P', 6): bmm with a contiguous right side is ~1.5x faster
    centres = _Centres(n, rows * cols, b, table.view(-1), dev)
    centres.update(first[:, :, :sub.shape[-1]].expand(b, -1, -1), sub_t, None)  # first pass: the grid cells
    slot = torch.arange(9, dtype=torch.int32, device=dev).view(1, 9, 1)
    dist = torch.empty(b, 9, sub.shape[-1], device=dev)
    dist_bits = dist.view(torch.int32)
    onehot = torch.empty_like(dist)
    limit = tol * sub.shape[-1] * (b // n)  # changed pixels per frame under which a frame has converged
    prev, active = None, None if n == 1 else torch.ones(n, 1, 1, dtype=torch.bool, device=dev)
    for _ in range(iters - 1):
        best = _nearest(sub, centres.candidates(), dist, slot, onehot)  # onehot: free until below
        now = best & 15
        if prev is not None:
            moved = (now != prev).view(n, -1).sum(1)
            if active is None:
                if int(moved) <= limit:
                    break
            else:
                active &= (moved > limit).view(n, 1, 1)
                if not bool(active.any()):
                    break
        prev = now
        # one-hot of the nearest slot: the packed values are unique per pixel
        torch.eq(dist_bits, best.unsqueeze(1), out=onehot)
        centres.update(onehot, sub_t, active)
    del dist, dist_bits, onehot  # the full assignment's buffers are larger
    full_dist = torch.empty(b, 9, p, device=dev)
    full = _nearest(feats, centres.candidates(), full_dist, slot, torch.empty_like(full_dist))
    return local.gather(1, (full & 15).long()), centres.values


# ------------------------------------------------------------------------------------------------------------ SLIC
def slic_fast(frames: torch.Tensor, n_segments: int = 100, compactness: float = 10.0, max_num_iter: int = 10,
              sigma: float = 0.0, enforce_connectivity: bool = True, min_size_factor: float = 0.5,
              max_size_factor: float = 3.0, start_label: int = 0, subsample: int = 2,
              downsample: int = 2, tol: float = 0.02, backend: str = "auto") -> torch.Tensor:
    """Batched SLIC superpixels on the frames' device (CPU or CUDA).

    uint8 frames on CPU (``sigma`` 0) go to the C kernel (:mod:`ssl_video.superpixels.kernel`, the same steps one
    frame at a time) where it was built; everything else, and ``backend="torch"``, to the torch code below.

    Args:
        frames: ``(N, H, W, 3)`` or ``(N, 3, H, W)`` RGB, uint8 or float in ``[0, 1]``.
        n_segments, compactness, max_num_iter, sigma, min_size_factor: as ``skimage.segmentation.slic``.
        enforce_connectivity: relabel connected components, merging those under ``min_size_factor`` x mean size.
        max_size_factor: accepted for skimage compatibility, unused (see the module docstring).
        start_label: 0 or 1; added to the labels.
        subsample: the k-means iterations use every ``subsample``-th pixel in y and x (centres are means over ~S^2/4
            pixels at 2, plenty); the final assignment uses every pixel. 1: every iteration on every pixel.
        downsample: segment the frame averaged over ``f x f`` blocks and give each pixel its block's label, with
            ``f = min(downsample, S // 8)`` (blocks only where a superpixel stays >= 8 blocks wide; 1: off).
        tol: stop iterating once at most this fraction of the sampled pixels changed centre (0: skimage's rule).
        backend: ``"auto"``, ``"c"`` (the C kernel; an error where it cannot run) or ``"torch"``.
    Returns:
        ``(N, H, W)`` long labels, contiguous ``start_label..start_label+n-1`` per frame.
    """
    if frames.ndim != 4 or 3 not in (frames.shape[1], frames.shape[-1]):
        raise ValueError(f"frames must be (N, H, W, 3) or (N, 3, H, W), got {tuple(frames.shape)}")
    if compactness <= 0 or n_segments < 1:
        raise ValueError(f"slic_fast needs compactness > 0 and n_segments >= 1, got {compactness}, {n_segments}")
    if start_label not in (0, 1):
        raise ValueError(f"start_label must be 0 or 1, got {start_label}")
    if backend not in ("auto", "c", "torch"):
        raise ValueError(f"backend must be auto, c or torch, got {backend!r}")
    rgb = frames if frames.shape[-1] == 3 else frames.permute(0, 2, 3, 1)
    in_c = frames.device.type == "cpu" and frames.dtype == torch.uint8 and sigma <= 0
    if backend == "c" and not (in_c and kernel.available()):
        raise ValueError("slic_fast backend='c' needs uint8 frames on CPU, sigma 0 and the built kernel; here: "
                         f"{frames.device.type}, {frames.dtype}, sigma {sigma}, {kernel.cpu_kernel()}")
    n, full_h, full_w, _ = rgb.shape
    rows, cols, full_step = grid(full_h, full_w, n_segments)
    f = max(1, min(int(downsample), int(full_step) // 8))
    if backend != "torch" and in_c and kernel.available():
        return kernel.slic_cpu(rgb, (rows, cols, full_step), f, compactness, max_num_iter, subsample, tol,
                               enforce_connectivity, min_size_factor, start_label)
    if sigma > 0:
        rgb = _smooth(rgb, sigma)
    if f > 1:
        rgb = _block_mean(rgb, f)
    n, h, w, _ = rgb.shape
    step = full_step / f
    ch, cw = -(-h // rows), -(-w // cols)  # cell size; the frame is padded to a whole number of cells
    feats = _features(rgb, compactness, rows, cols, step)
    layout = _layout(h, w, rows, cols, step, n, feats.device)
    assign, centres = _cluster(feats, n, rows, cols, layout, max_num_iter, (ch, cw), subsample, tol)
    labels = assign.view(n, rows, cols, ch, cw).permute(0, 1, 3, 2, 4).reshape(n, rows * ch, cols * cw)[:, :h, :w]
    if not enforce_connectivity:
        return _upsample(_compact_clusters(labels, rows * cols) + start_label, f, full_h, full_w)
    out = _connectivity_merge(labels, centres, int(min_size_factor * h * w / (rows * cols)))
    return _upsample(out.add_(start_label) if start_label else out, f, full_h, full_w)


def _smooth(rgb: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian-smoothed ``(N, H, W, 3)`` frames as float in ``[0, 1]``. skimage smooths the Lab image (reflect
    padding, truncate 4); smoothing RGB first is close."""
    from torchvision.transforms.v2.functional import gaussian_blur

    k = 2 * min(int(4 * sigma + 0.5), min(rgb.shape[1:3]) - 1) + 1  # reflect padding needs k//2 < size
    scale = 255.0 if rgb.dtype == torch.uint8 else 1.0
    return gaussian_blur(rgb.permute(0, 3, 1, 2).float() / scale, [k, k], [sigma, sigma]).permute(0, 2, 3, 1)


def _block_mean(rgb: torch.Tensor, f: int) -> torch.Tensor:
    """``(N, H, W, 3)`` -> mean over ``f x f`` blocks (edge pixels replicated to whole blocks), rounded for uint8."""
    n, h, w, _ = rgb.shape
    if rgb.dtype != torch.uint8 or h % f or w % f:  # the general case, in float
        x = F.avg_pool2d(F.pad(rgb.permute(0, 3, 1, 2).float(), (0, -w % f, 0, -h % f), mode="replicate"), f)
        return (x.round_().to(torch.uint8) if rgb.dtype == torch.uint8 else x).permute(0, 2, 3, 1)
    rows = rgb.reshape(n, h // f, f, w * 3)  # uint8: summed in int16 (exact up to f = 16), no float copy of the frame
    acc = sum((rows[:, :, i] for i in range(1, f)), rows[:, :, 0].to(torch.int16)).view(n, h // f, w // f, f, 3)
    out = sum((acc[:, :, :, i] for i in range(1, f)), acc[:, :, :, 0]).add_(f * f // 2)
    if f & (f - 1) == 0:  # a power of two: a shift (integer division is several times slower)
        return out.bitwise_right_shift_(2 * (f.bit_length() - 1)).to(torch.uint8)
    return out.div_(f * f, rounding_mode="floor").to(torch.uint8)


def _upsample(labels: torch.Tensor, f: int, h: int, w: int) -> torch.Tensor:
    """Each pixel of the ``h x w`` frame takes the label of its ``f x f`` block."""
    if f == 1:
        return labels
    n, lh, lw = labels.shape
    return labels[:, :, None, :, None].expand(n, lh, f, lw, f).reshape(n, lh * f, lw * f)[:, :h, :w]


# --------------------------------------------------------------------------------------------------- entry point
def _segment_one(frame: np.ndarray, algo: str, params: dict) -> np.ndarray:
    from skimage import segmentation

    if algo == "slic":
        return segmentation.slic(frame, channel_axis=-1, **params)
    if algo == "felzenszwalb":
        return segmentation.felzenszwalb(frame, channel_axis=-1, **params)
    if algo == "quickshift":
        return segmentation.quickshift(frame, channel_axis=-1, **params)
    raise ValueError(f"unknown superpixel algorithm '{algo}'; choose from {', '.join(ALGOS)}")


def segment(frames: np.ndarray, algo: str = "slic", **params) -> np.ndarray:
    """Superpixels of ``frames`` ``(N, H, W, 3) uint8`` -> ``(N, H, W) uint16`` contiguous labels per frame.

    ``slic_fast`` takes :func:`slic_fast`'s keywords plus ``device`` (e.g. ``"cuda"``; default CPU) and segments the
    whole batch at once.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3), got {tuple(frames.shape)}")
    if algo == "slic_fast":
        unknown = sorted(set(params) - set(_FAST_PARAMS))
        if unknown:
            raise ValueError(f"slic_fast got unknown parameters {unknown}; known: {', '.join(_FAST_PARAMS)}")
        params = {**params, "start_label": 0}
        device = params.pop("device", None) or "cpu"
        labels = slic_fast(torch.from_numpy(np.ascontiguousarray(frames)).to(device), **params)
        if labels.numel() and int(labels.max()) >= np.iinfo(np.uint16).max:
            raise ValueError("slic_fast produced more than 65535 segments in one frame; lower n_segments")
        return labels.cpu().numpy().astype(np.uint16)
    out = np.empty(frames.shape[:3], dtype=np.uint16)
    for i, frame in enumerate(frames):
        labels = relabel_contiguous(_segment_one(frame, algo, params))
        if labels.max() >= np.iinfo(np.uint16).max:
            raise ValueError(f"{algo} produced more than 65535 segments in one frame; lower n_segments/scale")
        out[i] = labels
    return out
