"""ssl_video.normalise: ImageNet normalisation against the formula, and its inverse."""

from __future__ import annotations

import torch

from ssl_video.normalise import IMAGENET_MEAN, IMAGENET_STD, denormalise, normalise


def test_normalise_is_the_imagenet_formula_for_uint8_and_unit_floats():
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8, generator=g)
    expected = torch.empty(2, 3, 5, 7, dtype=torch.float64)
    for c in range(3):  # per channel, in float64
        expected[:, c] = (frames[:, c].double() / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    out = normalise(frames)
    assert out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)
    unit = frames.float() / 255
    torch.testing.assert_close(normalise(unit).double(), expected, rtol=0, atol=1e-5)
    assert torch.equal(unit, frames.float() / 255)  # the input is not modified


def test_denormalise_inverts_normalise_and_clamps():
    x = torch.rand(4, 3, 6, 6)
    torch.testing.assert_close(denormalise(normalise(x)), x, rtol=0, atol=1e-6)
    assert denormalise(torch.full((3, 2, 2), 100.0)).max() == 1.0
