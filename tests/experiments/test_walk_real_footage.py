"""walk_real_footage's node statistics: the collapse measure is the mean cosine between different nodes of a frame."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssl_video.experiments.walk_real_footage import node_stats


class _Fixed:
    """Stands in for a walk model: ``embed`` returns given node embeddings and mask."""

    def __init__(self, q: torch.Tensor, mask: torch.Tensor) -> None:
        self.q, self.mask = q, mask

    def choose_patches(self, batch_size: int, device) -> torch.Tensor:
        return torch.ones(batch_size, dtype=torch.bool)

    def embed(self, batch, clips, use_patch):
        return self.q, self.mask


def _batch() -> dict:
    return {"clips": torch.zeros(1, 1, 2, 3, 4, 4)}  # (B, V, T, C, H, W)


def test_collapsed_nodes_score_one_and_orthogonal_nodes_zero():
    same = F.normalize(torch.ones(1, 2, 5, 8), dim=-1)
    assert node_stats(_Fixed(same, torch.ones(1, 2, 5, dtype=torch.bool)), _batch()) == {"node_cos": 1.0, "nodes": 5.0}
    eye = torch.eye(4).expand(1, 2, 4, 4)
    assert node_stats(_Fixed(eye, torch.ones(1, 2, 4, dtype=torch.bool)), _batch())["node_cos"] == 0.0


def test_padded_nodes_are_left_out():
    q = torch.zeros(1, 1, 3, 2)
    q[..., 0, :] = torch.tensor([1.0, 0.0])
    q[..., 1, :] = torch.tensor([0.6, 0.8])  # cosine 0.6 with node 0; node 2 is padding (mask False)
    mask = torch.tensor([[[True, True, False]]])
    stats = node_stats(_Fixed(q, mask), _batch())
    assert abs(stats["node_cos"] - 0.6) < 1e-4 and stats["nodes"] == 2.0
