"""Superpixels for packing and training: one entry point, ``segment(frames, algo, **params)``.

Algorithms: scikit-image's ``slic``, ``felzenszwalb``, ``quickshift`` (parameters are skimage's), and ``slic_fast``:
a batched torch SLIC (:func:`slic_fast`) that runs on CPU or CUDA from the same code, with skimage's parameters
(``n_segments``, ``compactness``, ``max_num_iter``, ``sigma``, ``enforce_connectivity``, ``min_size_factor``).
Output labels of :func:`segment` are ``uint16``, contiguous ``0..n-1`` per frame.

How ``slic_fast`` matches skimage's ``slic``: the same Lab conversion (sRGB D65, tested against ``rgb2lab``), the same
grid of initial centres (``skimage.util.regular_grid``), the same distance ``d_lab^2 / m^2 + d_xy^2 / S^2`` with
``S = max grid step``, at most the same iteration count (skimage's first pass is a pure grid partition because its
centres start with zero colour; here that pass is the initialisation). Differences, all measured by the superpixel
benchmark and ``benchmarks/superpixels.py`` (boundary recall and ASA at least skimage's on the synthetic DAVIS set):
- where superpixels are large (``S >= 16`` pixels: e.g. 256x256 with n_segments <= ~250) the frame is first averaged
  over 2x2 blocks (``downsample=2``), segmented, and each pixel takes its block's label (boundaries snap to even
  pixels: within the 1-pixel tolerance of boundary recall at 256x256); ``downsample=1`` turns this off;
- each pixel is compared with the centres of its own and the 8 neighbouring grid cells (SLIC's 2S x 2S window
  around centres that stay near their cell), not with every centre within +-2S as skimage does;
- the k-means iterations use every 2nd pixel in y and x (``subsample=2``; 1 turns this off); the labels come from a
  final assignment of every pixel (of the block-averaged frame);
- the iterations stop once at most ``tol`` (default 2%) of those pixels changed centre (skimage: none; ``tol=0``);
- small components (< ``min_size_factor`` x mean size) merge into the neighbour (larger than them) whose cluster colour
  is closest, repeatedly until none is left (skimage merges once into the previously scanned neighbour); skimage's
  splitting of components above ``max_size`` (a buffer limit of its breadth-first search) is not reproduced, so
  ``max_size_factor`` is accepted and ignored;
- ``sigma`` smooths the RGB frame (skimage smooths the Lab image).
Connected components: ``skimage.measure.label`` on CPU; on CUDA a vectorised min-label propagation (same partition,
tested on CPU).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from ssl_video.superpixels.connectivity import _compact_clusters, _connectivity_merge

ALGOS = ("slic", "slic_fast", "felzenszwalb", "quickshift")
_FAST_PARAMS = ("n_segments", "compactness", "max_num_iter", "sigma", "enforce_connectivity", "min_size_factor",
                "max_size_factor", "start_label", "subsample", "downsample", "tol", "device")
_BIG = 1e30  # squared distance of a missing (off-grid) candidate centre: never the nearest


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
@functools.lru_cache(maxsize=64)
def grid(height: int, width: int, n_segments: int) -> tuple[int, int, int, int, float]:
    """skimage's centre grid for an ``height x width`` frame: ``(rows, cols, first_y, first_x, step)``."""
    from skimage.util import regular_grid

    _, sy, sx = regular_grid((1, height, width), n_segments)
    rows, cols = len(range(height)[sy]), len(range(width)[sx])
    step = float(max(1, sy.step or 1, sx.step or 1))  # skimage: max of the (z, y, x) steps
    return rows, cols, int(sy.start or 0), int(sx.start or 0), step


def _neighbour_table(rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """``(rows*cols, 9)`` index of the 3x3 neighbouring grid cells of each cell; ``rows*cols`` where off the grid."""
    idx = torch.arange(rows * cols, device=device).view(1, 1, rows, cols).float()
    pad = F.pad(idx, (1, 1, 1, 1), value=float(rows * cols))
    return F.unfold(pad, 3).view(9, rows * cols).T.long()


def _planar_blocks(rgb: torch.Tensor, compactness: float, step: float, rows: int, cols: int, ch: int,
                   cw: int) -> torch.Tensor:
    """``(N*rows*cols, 7, ch*cw)``: per grid cell and pixel [L/m, a/m, b/m, y/S, x/S, 1, |.|^2], y and x relative to
    the cell; the frame ``rgb`` ``(N, H, W, 3)`` is padded to whole cells with all-zero pixels (no weight)."""
    n, h, w, _ = rgb.shape
    dev = rgb.device
    rgb = F.pad(rgb.permute(0, 3, 1, 2), (0, cols * cw - w, 0, rows * ch - h))  # (N, 3, Hp, Wp), cheap in uint8
    planar = rgb.view(n, 3, rows, ch, cols, cw).permute(0, 2, 4, 1, 3, 5).reshape(n * rows * cols, 3, ch * cw)
    out = torch.empty(n * rows * cols, 7, ch * cw, device=dev)
    _lab_into(planar, out, 1.0 / compactness)
    yx = torch.stack(torch.meshgrid(torch.arange(ch, device=dev), torch.arange(cw, device=dev), indexing="ij"))
    rest = torch.cat([yx.float().view(1, 2, -1) / step, torch.ones(1, 1, ch * cw, device=dev)], 1)
    out = out.view(n, rows * cols, 7, ch * cw)
    if rows * ch != h or cols * cw != w:  # padded pixels: no features, no weight
        valid = torch.ones(rows, cols, ch, cw, device=dev)
        for r in range(rows):  # the last row / column of cells may hang over the frame
            valid[r, :, max(0, h - r * ch):] = 0
        for c in range(cols):
            valid[:, c, :, max(0, w - c * cw):] = 0
        out[:, :, :3] *= valid.view(1, rows * cols, 1, -1)
        out[:, :, 3:6] = rest * valid.view(rows * cols, 1, -1)
    else:
        out[:, :, 3:6] = rest
    out = out.view(n * rows * cols, 7, ch * cw)
    torch.sum(out[:, :5] * out[:, :5], 1, out=out[:, 6])
    return out


def _cluster(pd: torch.Tensor, origin: torch.Tensor, rows: int, cols: int, iters: int, cell: tuple[int, int],
             subsample: int = 1, tol: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """SLIC k-means on cell blocks: each pixel's centre ``(B, P)`` among the ``rows*cols`` of its frame, and the
    centres ``(N, rows*cols, 5)`` (colour first).

    ``pd`` ``(B, 7, P)`` from :func:`_planar_blocks`; ``origin`` ``(rows*cols, 2)`` each cell's corner (y/S, x/S).
    The iterations use every ``subsample``-th pixel of a cell in y and x; the labels come from a final assignment
    of every pixel. They stop when at most a fraction ``tol`` of the pixels changed centre (0: none, as skimage).
    """
    k = rows * cols
    b, _, p = pd.shape
    d = 5
    n = b // k
    dev = pd.device
    table = _neighbour_table(rows, cols, dev)  # (K, 9)
    origin = torch.cat([origin, origin.new_zeros(1, 2)])  # row k: the off-grid candidate
    shift = origin[table] - origin[:k, None]  # (K, 9, 2) candidate's origin minus the cell's
    pd_all = pd
    if subsample > 1:
        pd = pd.view(b, 7, *cell)[:, :, ::subsample, ::subsample].reshape(b, 7, -1)
    sums = pd[:, :6].sum(2).view(n, k, d + 1)  # first pass: each pixel in its own grid cell (skimage's first)
    centres = sums[..., :d] / sums[..., d:].clamp_min(1)  # (N, K, 5), y/x relative to the centre's own cell
    slot = torch.arange(9, dtype=torch.int32, device=dev).view(1, 9, 1)

    def nearest(pd: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        """Per pixel, its squared distance to the nearest candidate with the slot 0..8 in the low 4 bits."""
        c = torch.cat([centres, centres.new_zeros(n, 1, d)], 1)[:, table]  # (N, K, 9, 5) each cell's candidates
        c = torch.cat([c[..., :3], c[..., 3:] + shift], -1).reshape(b, 9, d)
        cand = torch.cat([-2 * c, (c * c).sum(-1, keepdim=True), torch.ones_like(c[..., :1])], -1)  # (B, 9, 7)
        cand.view(n, k, 9, d + 2)[:, table == k, d] = _BIG  # off-grid candidates are never nearest
        torch.bmm(cand, pd, out=dist)  # |c|^2 - 2 p.c + |p|^2 = squared SLIC distance, (B, 9, P)
        # argmin over 9 as one integer min: non-negative floats order like their bits; the slot goes in the low bits.
        # Only a distance that is 0 up to rounding can come out negative, and it is then the nearest (or a tie) anyway
        bits = dist.view(torch.int32)
        bits.bitwise_and_(~15).bitwise_or_(slot)
        return bits.amin(1)  # (B, P)

    dist = torch.empty(b, 9, pd.shape[-1], device=dev)
    onehot = torch.empty_like(dist)
    pd_t = pd[:, :6].transpose(1, 2).contiguous()  # (B, P, 6): bmm with a contiguous right side is ~1.5x faster
    prev, active = None, torch.ones(n, 1, 1, dtype=torch.bool, device=dev)
    for _ in range(max(iters - 1, 1)):
        best = nearest(pd, dist)
        if prev is not None:  # skimage stops when no pixel changes its centre (tol = 0); per frame, so that a frame's
            moved = ((best & 15) != prev).view(n, -1).sum(1)  # result does not depend on its batch: a converged
            active &= (moved > tol * (best.numel() // n)).view(n, 1, 1)  # frame's centres stay as they are
            if not bool(active.any()):
                break
        prev = best & 15
        # one-hot of the nearest slot; comparing the packed values as floats is bit-exact and vectorises best
        torch.eq(dist, best.view(torch.float32)[:, None], out=onehot)
        part = torch.bmm(onehot, pd_t).view(n, rows, cols, 9, d + 1)  # per (cell, candidate)
        part[..., 3:5] -= part[..., 5:6] * shift.view(1, rows, cols, 9, 2)  # into the candidate's coordinates
        acc = part.new_zeros(n, rows + 2, cols + 2, d + 1)
        for j in range(9):  # candidate j of cell (r, c) is centre (r + j//3 - 1, c + j%3 - 1)
            acc[:, j // 3:j // 3 + rows, j % 3:j % 3 + cols] += part[..., j, :]
        acc = acc[:, 1:-1, 1:-1].reshape(n, k, d + 1)
        centres = torch.where((acc[..., d:] > 0) & active, acc[..., :d] / acc[..., d:].clamp_min(1), centres)
    if subsample > 1 or prev is None:
        prev = nearest(pd_all, torch.empty(b, 9, p, device=dev)) & 15
    return table.repeat(n, 1).gather(1, prev.long()), centres


# ------------------------------------------------------------------------------------------------------------ SLIC
def slic_fast(frames: torch.Tensor, n_segments: int = 100, compactness: float = 10.0, max_num_iter: int = 10,
              sigma: float = 0.0, enforce_connectivity: bool = True, min_size_factor: float = 0.5,
              max_size_factor: float = 3.0, start_label: int = 0, subsample: int = 2,
              downsample: int = 2, tol: float = 0.02) -> torch.Tensor:
    """Batched SLIC superpixels on the frames' device (CPU or CUDA).

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
    Returns:
        ``(N, H, W)`` long labels, contiguous ``start_label..start_label+n-1`` per frame.
    """
    if frames.ndim != 4 or 3 not in (frames.shape[1], frames.shape[-1]):
        raise ValueError(f"frames must be (N, H, W, 3) or (N, 3, H, W), got {tuple(frames.shape)}")
    if compactness <= 0 or n_segments < 1:
        raise ValueError(f"slic_fast needs compactness > 0 and n_segments >= 1, got {compactness}, {n_segments}")
    if start_label not in (0, 1):
        raise ValueError(f"start_label must be 0 or 1, got {start_label}")
    rgb = frames if frames.shape[-1] == 3 else frames.permute(0, 2, 3, 1)
    if sigma > 0:  # skimage smooths the Lab image (reflect padding, truncate 4); smoothing RGB first is close
        from torchvision.transforms.v2.functional import gaussian_blur

        k = 2 * int(4 * sigma + 0.5) + 1
        was_uint8 = rgb.dtype == torch.uint8
        rgb = gaussian_blur(rgb.permute(0, 3, 1, 2).float() / (255.0 if was_uint8 else 1.0), [k, k], [sigma, sigma])
        rgb = rgb.permute(0, 2, 3, 1)
    n, full_h, full_w, _ = rgb.shape
    f = max(1, min(int(downsample), int(grid(full_h, full_w, n_segments)[4]) // 8))
    if f > 1:
        rgb = _block_mean(rgb, f)
    n, h, w, _ = rgb.shape
    rows, cols, _, _, step = grid(h, w, n_segments)
    ch, cw = -(-h // rows), -(-w // cols)  # cell size; the frame is padded to a whole number of cells
    cells = torch.stack(torch.meshgrid(torch.arange(rows) * ch, torch.arange(cols) * cw, indexing="ij"), -1)
    pd = _planar_blocks(rgb, compactness, step, rows, cols, ch, cw)
    origin = cells.view(-1, 2).to(pd.device) / step
    assign, centres = _cluster(pd, origin, rows, cols, max_num_iter, (ch, cw), subsample, tol)
    labels = assign.view(n, rows, cols, ch, cw).permute(0, 1, 3, 2, 4).reshape(n, rows * ch, cols * cw)[:, :h, :w]
    if not enforce_connectivity:
        return _upsample(_compact_clusters(labels, rows * cols) + start_label, f, full_h, full_w)
    out = _connectivity_merge(labels, centres, int(min_size_factor * h * w / (rows * cols)))
    return _upsample(out.add_(start_label) if start_label else out, f, full_h, full_w)


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
