"""Connectivity enforcement for :func:`ssl_video.superpixels.segment.slic_fast`: connected components of the cluster
maps, components under a minimum size merged into the larger neighbour closest in cluster colour, labels made
contiguous per frame. CPU components come from skimage (C); the torch path (CUDA) is the same result, vectorised.
"""

from __future__ import annotations

import numpy as np
import torch


def _components_cpu(labels: torch.Tensor) -> torch.Tensor:
    """4-connected components of a label map ``(N, H, W)``: ids unique over the batch, frame by frame in order."""
    from skimage.measure import label as cc

    n = labels.shape[0]
    offset = labels.to(torch.int32) + (torch.arange(n, dtype=torch.int32).view(n, 1, 1) * (int(labels.max()) + 1) + 1)
    offset = offset.numpy()
    return torch.from_numpy(cc(offset, background=0, connectivity=1).astype(np.int64, copy=False)).sub_(1)


def _components_torch(labels: torch.Tensor) -> torch.Tensor:
    """Same as :func:`_components_cpu` by min-index propagation with pointer jumping (vectorised, for CUDA)."""
    n, h, w = labels.shape
    ids = torch.arange(n * h * w, device=labels.device).view(n, h, w)
    same_x = labels[:, :, 1:] == labels[:, :, :-1]
    same_y = labels[:, 1:] == labels[:, :-1]
    while True:
        new = ids.clone()
        new[:, :, 1:] = torch.where(same_x, torch.minimum(new[:, :, 1:], ids[:, :, :-1]), new[:, :, 1:])
        new[:, :, :-1] = torch.where(same_x, torch.minimum(new[:, :, :-1], ids[:, :, 1:]), new[:, :, :-1])
        new[:, 1:] = torch.where(same_y, torch.minimum(new[:, 1:], ids[:, :-1]), new[:, 1:])
        new[:, :-1] = torch.where(same_y, torch.minimum(new[:, :-1], ids[:, 1:]), new[:, :-1])
        flat = new.view(-1)
        for _ in range(4):  # pointer jumping: an id is a pixel of the same component with a smaller id
            flat = flat[flat]
        new = flat.view(n, h, w)
        if torch.equal(new, ids):
            break
        ids = new
    _, dense = torch.unique(ids, return_inverse=True)  # sorted: frame order is kept
    return dense.view(n, h, w)


def _merge_small(comp: torch.Tensor, min_size: int, colour: torch.Tensor | None = None,
                 max_rounds: int = 64) -> torch.Tensor:
    """Merge components smaller than ``min_size`` into a larger 4-neighbour, repeatedly. Vectorised.

    Returns the map ``(num_components,)`` from each component to the one it ends up in.

    The neighbour is the one whose root is closest in ``colour`` ``(num_components, C)`` (the root's own colour: it
    is the largest member of its group) or the largest one without colour, among neighbours larger than the
    component (ties by id): a strict order, so merges never form a cycle.
    """
    dev = comp.device
    num = int(comp.max()) + 1
    ids = torch.arange(num, device=dev)
    parent = ids.clone()
    flat = comp.reshape(-1)
    base = torch.bincount(flat, minlength=num)
    sizes = base
    small0 = base < min_size
    if not bool(small0.any()):
        return parent
    src, dst = [], []
    _, h, w = comp.shape
    x_edge = (comp[:, :, :-1] != comp[:, :, 1:]).view(-1).nonzero().squeeze(1)  # index in the (N, H, W-1) layout
    y_edge = (comp[:, :-1] != comp[:, 1:]).view(-1).nonzero().squeeze(1)  # in the (N, H-1, W) layout
    for p, step in ((x_edge + x_edge // max(w - 1, 1), 1), (y_edge + y_edge // max((h - 1) * w, 1) * w, w)):
        a, b = flat[p], flat[p + step]  # the few pixel pairs across a component boundary (flat gathers are fast)
        for u, v in ((a, b), (b, a)):
            hit = small0[u]  # only edges leaving an initially small component matter: small roots have small members
            src.append(u[hit])
            dst.append(v[hit])
    src, dst = torch.cat(src), torch.cat(dst)
    for _ in range(max_rounds):
        small = (sizes < min_size) & (sizes > 0)
        if not bool(small.any()):
            break
        key = sizes * num + ids
        ra, rb = parent[src], parent[dst]
        keep = small[ra] & (key[rb] > key[ra])
        ra, rb = ra[keep], rb[keep]
        if ra.numel() == 0:
            break  # the small components left have no larger neighbour (e.g. the whole frame)
        if colour is None:
            score = -key[rb].double()
        else:  # the roots' own colours, not the merged groups' means: exact ties (pieces of one cluster) stay exact,
            # so the order by id decides them, as it does in the C kernel whose float sums round differently
            score = (colour[ra] - colour[rb]).abs().sum(-1).double()  # L1, as slic_fast's distance
        low = torch.full((num,), float("inf"), dtype=torch.float64, device=dev).scatter_reduce_(
            0, ra, score, reduce="amin")
        target = torch.full((num,), -1, dtype=torch.long, device=dev).scatter_reduce_(
            0, ra[score == low[ra]], rb[score == low[ra]], reduce="amax")
        step = torch.where(target >= 0, target, ids)
        while True:  # pointer jumping to the root of each merge chain
            nxt = step[step]
            if torch.equal(nxt, step):
                break
            step = nxt
        parent = step[parent]
        sizes = torch.zeros_like(base).index_add_(0, parent, base)
    return parent


def _contiguous_per_frame(comp: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """Component ids ``comp`` (raster-ordered over the batch, so each frame holds an id block) mapped through
    ``root`` -> labels ``0..n_f-1`` per frame, with one gather over the pixels."""
    num = root.numel()
    is_root = torch.zeros(num, dtype=torch.long, device=comp.device)
    is_root[root] = 1
    before = is_root.cumsum(0) - is_root  # roots with a smaller id
    first = comp[:, 0, 0].contiguous()  # the smallest id of each frame
    frame = torch.searchsorted(first, torch.arange(num, device=comp.device), right=True) - 1
    return (before[root] - before[first][frame])[comp]


def _compact_clusters(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Cluster ids ``0..k-1`` per frame, some unused -> labels ``0..n_f-1`` per frame."""
    n = labels.shape[0]
    ids = labels + torch.arange(n, device=labels.device).view(n, 1, 1) * k
    used = (torch.bincount(ids.reshape(-1), minlength=n * k).view(n, k) > 0).long()
    return (used.cumsum(1) - used).view(-1)[ids]


def _connectivity_merge(labels: torch.Tensor, centres: torch.Tensor, min_size: int) -> torch.Tensor:
    """Connected components, those under ``min_size`` merged into the larger neighbour closest in cluster colour
    (:func:`_merge_small`). Labels ``0..n_f-1`` per frame."""
    comp = (_components_torch(labels) if labels.is_cuda else _components_cpu(labels)).to(labels.device)
    # a component's colour: its cluster's mean colour; cluster and frame per component without a pixel-sized temporary
    num = int(comp.max()) + 1
    cluster = torch.zeros(num, dtype=torch.long, device=comp.device).scatter_(0, comp.view(-1), labels.reshape(-1))
    frame = torch.searchsorted(comp[:, 0, 0].contiguous(), torch.arange(num, device=comp.device), right=True) - 1
    colour = centres[frame, cluster, :3]
    return _contiguous_per_frame(comp, _merge_small(comp, min_size, colour))
