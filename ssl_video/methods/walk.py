"""Contrastive random walk (Jabri, Owens & Efros 2020) on patches, superpixels, or both.

Three registered methods share one implementation (:class:`Walk`); they differ only in how frames become nodes:

- ``walk_patch`` (the reference method): every frame is cut into a grid of ``patch_size`` patches at ``patch_stride``
  (64 at 32 on 256² frames: 7×7 = 49 nodes), each with its own spatial jitter; every patch is encoded as an image
  and its feature map mean-pooled.
- ``walk_superpixel``: every frame is encoded once; a superpixel's embedding is the mean of the feature-map cells
  weighted by the fraction of each cell's area it covers (:func:`ssl_video.methods.walk_nodes.superpixel_pool`).
  Superpixels smaller than a cell are kept (they get the features of the cells they touch). Frames have different
  node counts: nodes are padded to the batch maximum and masked.
- ``walk_mixed``: per clip, patches with probability ``patch_prob`` (0.7, as in the study) else superpixels; the two
  kinds are padded to a common node count in one batch and walked together.

Encoder: ``backbone`` (``resnet18_s8``, stride 8, full map) → linear head to ``embed_dim`` (128) → L2 normalisation.
The head is applied per feature cell *before* pooling; pooling weights sum to one and the head is affine, so this
equals pooling first (as videowalk does) while pooling 128-d instead of 512-d vectors.

The walk (:func:`walk_loss`), for a clip of ``T`` frames with node embeddings ``q_t`` (rows L2-normalised):

- transitions between adjacent frames only: ``F_t = softmax(q_t q_{t+1}ᵀ / τ)`` (row ``i`` of frame ``t`` → frame
  ``t+1``), and backwards ``B_t = softmax(q_{t+1} q_tᵀ / τ)``; τ = ``temperature`` (0.05; videowalk's paper says
  0.07, its README says the fixed code needs 0.01–0.05). Padded target nodes get logit −∞, so exactly zero mass.
- edge dropout: in training each edge of every ``F_t`` and ``B_t`` is dropped independently with probability
  ``edge_dropout`` (logit −1e20, a finite value so a row whose edges all drop becomes uniform instead of NaN). One
  draw per step is shared by all sub-cycles, as in the reference. (The reference writes the drop into the affinity
  in place, so its backward drops include its forward drops; here they are independent.)
- cycles: for every ``k`` in ``shortest_cycle .. T-1`` the palindrome ``0 → k → 0``:
  ``P_k = F_0 F_1 … F_{k-1} B_{k-1} … B_1 B_0`` (right multiplication, so row ``i`` of ``P_k`` is the distribution
  of a walker that starts at node ``i`` of frame 0). This is the order after videowalk's bug fix (its default,
  ``flip=False``: ``aar = aar @ a``); the paper's numbers came from the left-multiplied product, which shuffles
  transitions. Prefixes and suffixes are built incrementally, three matrix products per ``k``.
  ``shortest_cycle`` = 1 (default) includes ``0 → 1 → 0``; videowalk's code starts at ``k = 2``
  (``range(1, len(A12s))``): set ``shortest_cycle: 2`` to reproduce it.
- loss of cycle ``k``: cross-entropy of returning home, ``−log P_k[i, i]``, averaged over the valid start nodes of
  the whole batch (padded start nodes never enter). The total loss is the **mean** over the sub-cycles, as in the
  reference (``sum(xents) / len(xents)``): it keeps the loss scale, and so the effective learning rate, independent
  of the clip length.
- walk accuracy ``acc_k``: the fraction of valid start nodes whose most probable end node (argmax of ``P_k``'s row)
  is themselves; ``walk_acc`` is that of the longest cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ssl_video.methods.base import Method, MethodConfig
from ssl_video.methods.walk_nodes import extract_patches, superpixel_pool
from ssl_video.models.backbones import build_backbone

EPS = 1e-20
DROPPED = -1e20


@dataclass
class WalkConfig(MethodConfig):
    """``method`` section of walk_patch / walk_superpixel / walk_mixed (see ssl_video/configs/method/walk_*.yaml)."""

    name: str = "walk_superpixel"
    embed_dim: int = 128
    temperature: float = 0.05
    edge_dropout: float = 0.1
    shortest_cycle: int = 1  # cycles 0→k→0 for k in shortest_cycle..T-1 (videowalk's code: 2)
    patch_size: int = 64
    patch_stride: int = 32
    patch_jitter: bool = True
    jitter_scale: list[float] = field(default_factory=lambda: [0.7, 0.9])  # area fraction kept
    jitter_ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333333])
    patch_prob: float = 0.7  # walk_mixed: probability that a clip uses patches (else superpixels)
    pad_nodes: int = 0  # pad node counts to at least this (a fixed shape for torch.compile); 0: batch maximum


@dataclass
class WalkOutput:
    """What :func:`walk_loss` computes; matrices are ``(B, M, M)``."""

    loss: torch.Tensor
    xent: dict[int, torch.Tensor]
    acc: dict[int, torch.Tensor]
    forward: list[torch.Tensor]
    cycles: dict[int, torch.Tensor]


def transition(sim: torch.Tensor, target_mask: torch.Tensor, temperature: float, edge_dropout: float = 0.0):
    """Row-stochastic ``softmax(sim / τ)`` ``(B, M, M)``; columns where ``target_mask`` ``(B, M)`` is False get 0."""
    logits = sim / temperature
    if edge_dropout > 0:
        logits = logits.masked_fill(torch.rand_like(logits) < edge_dropout, DROPPED)
    logits = logits.masked_fill(~target_mask[:, None, :], float("-inf"))
    return logits.softmax(dim=-1)


def walk_loss(
    q: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 0.05,
    edge_dropout: float = 0.0,
    shortest_cycle: int = 1,
) -> WalkOutput:
    """Palindrome cycle-consistency loss of node embeddings ``q`` ``(B, T, M, D)`` with ``mask`` ``(B, T, M)``.

    ``mask`` is True for real nodes; padded nodes receive no transition mass and never start a walk. Cycles and
    reductions are described in the module docstring. Computed in float32 whatever the input dtype.
    """
    if q.ndim != 4 or mask.shape != q.shape[:3]:
        raise ValueError(f"walk_loss needs q (B,T,M,D) and mask (B,T,M), got {tuple(q.shape)} and {tuple(mask.shape)}")
    B, T, M, _ = q.shape
    if not 1 <= shortest_cycle <= T - 1:
        raise ValueError(f"shortest_cycle={shortest_cycle} leaves no cycle in a clip of {T} frames")
    if not bool(mask.any(dim=-1).all()):
        raise ValueError("a frame has no valid node (empty superpixel map?)")
    q = q.float().masked_fill(~mask[..., None], 0.0)
    sims = torch.einsum("btnd,btmd->btnm", q[:, :-1], q[:, 1:])  # frame t -> t+1
    fwd = [transition(sims[:, t], mask[:, t + 1], temperature, edge_dropout) for t in range(T - 1)]
    bwd = [transition(sims[:, t].transpose(1, 2), mask[:, t], temperature, edge_dropout) for t in range(T - 1)]

    start = mask[:, 0]
    n_start = start.sum().clamp_min(1)
    home = torch.arange(M, device=q.device)
    xent, acc, cycles = {}, {}, {}
    prefix = suffix = None
    for k in range(1, T):
        prefix = fwd[k - 1] if prefix is None else prefix @ fwd[k - 1]  # F_0 … F_{k-1}
        suffix = bwd[k - 1] if suffix is None else bwd[k - 1] @ suffix  # B_{k-1} … B_0
        if k < shortest_cycle:
            continue
        P = prefix @ suffix
        nll = -torch.log(P.diagonal(dim1=-2, dim2=-1) + EPS)
        xent[k] = torch.where(start, nll, torch.zeros_like(nll)).sum() / n_start
        acc[k] = ((P.argmax(dim=-1) == home) & start).sum() / n_start
        cycles[k] = P
    loss = torch.stack(list(xent.values())).mean()
    return WalkOutput(loss=loss, xent=xent, acc=acc, forward=fwd, cycles=cycles)


def _pad_nodes(x: torch.Tensor, m: int, value=0) -> torch.Tensor:
    """Pad dim 2 (nodes) of ``(B, T, M, ...)`` to ``m``."""
    if x.shape[2] >= m:
        return x
    pad = [0, 0] * (x.ndim - 3) + [0, m - x.shape[2]]
    return F.pad(x, pad, value=value)


def _heat(x: torch.Tensor) -> torch.Tensor:
    """``(h, w)`` in [0, 1] → ``(3, h, w)`` black-red-yellow-white (no matplotlib dependency)."""
    x = x.clamp(0, 1)
    return torch.stack([(3 * x).clamp(0, 1), (3 * x - 1).clamp(0, 1), (3 * x - 2).clamp(0, 1)])


class Walk(Method):
    """Contrastive random walk; ``nodes`` is ``patch``, ``superpixel`` or ``mixed`` (set by the registered name)."""

    nodes = "superpixel"
    config_class = WalkConfig

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        m = cfg.method
        self.backbone = build_backbone(cfg.backbone)
        if getattr(self.backbone, "input_kind", "frames") != "frames":
            raise ValueError(f"{m.name} needs a per-frame feature-map backbone (resnet18_s8), got {cfg.backbone.name}")
        self.head = nn.Linear(self.backbone.out_dim, m.embed_dim)
        if not 0 <= m.edge_dropout < 1:
            raise ValueError(f"method.edge_dropout must be in [0, 1), got {m.edge_dropout}")
        if m.temperature <= 0:
            raise ValueError(f"method.temperature must be positive, got {m.temperature}")
        clip_len = cfg.data.clip_len if "data" in cfg else None
        if clip_len is not None and not 1 <= m.shortest_cycle <= clip_len - 1:
            raise ValueError(f"method.shortest_cycle={m.shortest_cycle} leaves no cycle with data.clip_len={clip_len}")

    # ------------------------------------------------------------------------------------------------ nodes
    def _feature_map(self, frames: torch.Tensor) -> torch.Tensor:
        fmap = self.backbone(frames)
        if fmap.ndim != 4:
            raise ValueError(f"{self.cfg.method.name} needs a backbone returning feature maps, got {tuple(fmap.shape)}")
        return fmap

    def embed_patches(self, clips: torch.Tensor, jitter: bool) -> torch.Tensor:
        """``clips`` ``(B, T, C, H, W)`` → node embeddings ``(B, T, P, D)`` (L2-normalised, float32)."""
        m = self.cfg.method
        B, T = clips.shape[:2]
        patches = extract_patches(
            clips.flatten(0, 1), m.patch_size, m.patch_stride, jitter=jitter,
            scale=tuple(m.jitter_scale), ratio=tuple(m.jitter_ratio),
        )  # (B*T, P, C, p, p)
        P = patches.shape[1]
        pooled = self._feature_map(patches.flatten(0, 1)).mean(dim=(-2, -1))
        return F.normalize(self.head(pooled).float(), dim=-1).view(B, T, P, -1)

    def embed_superpixels(
        self, clips: torch.Tensor, labels: torch.Tensor, num_nodes: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``clips`` ``(B, T, C, H, W)``, ``labels`` ``(B, T, H, W)`` → ``(B, T, M, D)`` embeddings and mask."""
        B, T = clips.shape[:2]
        fmap = self._feature_map(clips.flatten(0, 1))  # (B*T, 512, h, w)
        cells = self.head(fmap.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # head per cell, see module docstring
        emb, area = superpixel_pool(cells, labels.flatten(0, 1).long(), num_nodes)
        emb = F.normalize(emb, dim=-1)
        return emb.view(B, T, *emb.shape[1:]), (area > 0).view(B, T, -1)

    def _check_superpixels(self, batch: dict, clips: torch.Tensor) -> torch.Tensor:
        if batch.get("superpixels") is None:
            raise ValueError(f"{self.cfg.method.name} needs batch['superpixels']: set data.superpixels (e.g. slic)")
        labels = batch["superpixels"]
        if labels.shape != clips.shape[:2] + clips.shape[-2:]:
            raise ValueError(f"superpixels {tuple(labels.shape)} do not match clips {tuple(clips.shape)} (B,T,H,W)")
        if "num_superpixels" in batch:
            over = labels.amax(dim=(-2, -1)) >= batch["num_superpixels"].to(labels.device)
            if bool(over.any()):
                raise ValueError("superpixel labels reach num_superpixels: labels must be contiguous 0..n-1")
        return labels

    def embed(self, batch: dict, clips: torch.Tensor, use_patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Node embeddings ``(B, T, M, D)`` and mask for clips choosing patches (``use_patch``) or superpixels."""
        jitter = self.training and self.cfg.method.patch_jitter
        B, T = clips.shape[:2]
        parts = []
        if bool(use_patch.all()):
            q = self.embed_patches(clips, jitter)
            parts.append((None, q, torch.ones(q.shape[:3], dtype=torch.bool, device=q.device)))
        elif not bool(use_patch.any()):
            labels = self._check_superpixels(batch, clips)
            parts.append((None, *self.embed_superpixels(clips, labels)))
        else:
            labels = self._check_superpixels(batch, clips)
            idx_p, idx_s = use_patch.nonzero().squeeze(1), (~use_patch).nonzero().squeeze(1)
            q = self.embed_patches(clips[idx_p], jitter)
            parts.append((idx_p, q, torch.ones(q.shape[:3], dtype=torch.bool, device=q.device)))
            parts.append((idx_s, *self.embed_superpixels(clips[idx_s], labels[idx_s])))
        M = max([p[1].shape[2] for p in parts] + [self.cfg.method.pad_nodes])
        if len(parts) == 1:
            return _pad_nodes(parts[0][1], M), _pad_nodes(parts[0][2], M, False)
        q = clips.new_zeros(B, T, M, parts[0][1].shape[-1], dtype=torch.float32)
        mask = torch.zeros(B, T, M, dtype=torch.bool, device=clips.device)
        for idx, qi, mi in parts:
            q[idx] = _pad_nodes(qi, M)
            mask[idx] = _pad_nodes(mi, M, False)
        return q, mask

    def choose_patches(self, batch_size: int, device) -> torch.Tensor:
        """Per clip: True where the clip's nodes are patches."""
        if self.nodes == "patch":
            return torch.ones(batch_size, dtype=torch.bool, device=device)
        if self.nodes == "superpixel":
            return torch.zeros(batch_size, dtype=torch.bool, device=device)
        return torch.rand(batch_size, device=device) < self.cfg.method.patch_prob

    # ------------------------------------------------------------------------------------------------ loss
    def _walk(self, batch: dict, dropout: bool) -> tuple[WalkOutput, torch.Tensor, torch.Tensor]:
        clips = batch["clips"]
        if clips.ndim != 6:
            raise ValueError(f"clips must be (B, V, T, C, H, W), got {tuple(clips.shape)}")
        clips = clips[:, 0]
        m = self.cfg.method
        use_patch = self.choose_patches(clips.shape[0], clips.device)
        q, mask = self.embed(batch, clips, use_patch)
        with torch.autocast(device_type=clips.device.type, enabled=False):  # τ = 0.05 softmax needs float32
            out = walk_loss(q, mask, m.temperature, m.edge_dropout if dropout else 0.0, m.shortest_cycle)
        return out, mask, use_patch

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out, mask, use_patch = self._walk(batch, dropout=self.training)
        logs = {"loss": out.loss, "walk_acc": out.acc[max(out.acc)].detach()}
        for k in out.xent:
            logs[f"xent_k{k}"] = out.xent[k].detach()
            logs[f"acc_k{k}"] = out.acc[k].detach()
        logs["nodes_per_frame"] = mask.sum(-1).float().mean()
        logs["patch_fraction"] = use_patch.float().mean()
        return logs

    @torch.no_grad()
    def visualize(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """First clip: ``F_0`` (frame 0 → 1, rows = start nodes) beside the longest cycle ``P_k``, valid nodes only.

        Each row is scaled by its maximum; a sharp diagonal in ``P_k`` means walkers return home.
        """
        out, mask, _ = self._walk({k: v[:1] for k, v in batch.items() if torch.is_tensor(v)}, dropout=False)
        m0, m1 = mask[0, 0], mask[0, 1]
        pics = [out.forward[0][0][m0][:, m1], out.cycles[max(out.cycles)][0][m0][:, m0]]
        size = 256
        tiles = []
        for p in pics:
            p = p / p.amax(dim=1, keepdim=True).clamp_min(1e-12)
            tiles.append(F.interpolate(_heat(p)[None], size=(size, size), mode="nearest")[0])
        gap = torch.ones(3, size, 8, device=tiles[0].device)
        return {"walk/transition_and_cycle": torch.cat([tiles[0], gap, tiles[1]], dim=2).cpu()}


class WalkPatch(Walk):
    nodes = "patch"


class WalkSuperpixel(Walk):
    nodes = "superpixel"


class WalkMixed(Walk):
    nodes = "mixed"
