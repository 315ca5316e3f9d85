"""Differentiable augmentation: every op keeps shapes, passes gradients, does nothing at p=0, and the adapters offer it."""
from __future__ import annotations

import pytest
import torch

from multigan import augment
from multigan.config import AudioConfig
from multigan.modalities.image import ImageModality
from multigan.modalities.mel import MelModality


def _rand(seed: int, batch: int):
    g = torch.Generator().manual_seed(seed)
    return lambda *dims: torch.rand(batch, *dims, generator=g)


OPS = {
    "translate": augment.translate,
    "translate-time": lambda x, p, r: augment.translate(x, p, r, time_only=True),
    "cutout": augment.cutout,
    "colour": augment.colour,
    "time-mask": lambda x, p, r: augment.band_mask(x, p, r, axis=-1),
    "mel-mask": lambda x, p, r: augment.band_mask(x, p, r, axis=-2),
    "image": augment.image_ops,
    "spectrogram": augment.spectrogram_ops,
}


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("shape", [(8, 1, 16, 16), (8, 3, 12, 20)])
def test_ops_keep_shape_pass_gradients_and_vanish_at_p0(name, shape):
    op = OPS[name]
    x = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
    y = op(x, 1.0, _rand(1, shape[0]))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.equal(y, x), "p=1 changes the batch"
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(op(x, 0.0, _rand(1, shape[0])), x), "p=0 leaves it alone"
    assert torch.equal(op(x, 1.0, _rand(7, shape[0])), op(x, 1.0, _rand(7, shape[0]))), "same numbers, same result"


def test_translation_moves_content_and_fills_with_black():
    x = torch.full((1, 1, 8, 8), -1.0)
    x[0, 0, 2, 3] = 1.0
    rand = lambda *dims: torch.tensor([[0.875, 1.0]]) if dims == (2,) else torch.zeros(1, *dims)  # dy=+1, dx=+1
    y = augment.translate(x, 1.0, rand, ratio=0.125)
    assert y[0, 0, 3, 4] == 1.0 and y.sum() == -62.0


def test_time_only_translation_keeps_the_frequency_axis():
    x = torch.randn(4, 1, 16, 32)
    y = augment.translate(x, 1.0, _rand(3, 4), time_only=True)
    # Every output frame is an input frame or silence: the mel bins of a frame stay together.
    for b in range(4):
        frames = {tuple(x[b, 0, :, t].tolist()) for t in range(32)} | {tuple([-1.0] * 16)}
        assert all(tuple(y[b, 0, :, t].tolist()) in frames for t in range(32))


@pytest.mark.parametrize("adapter", [ImageModality(3, 16, 16), MelModality(AudioConfig(n_mels=16, frames=16),
                                                                             torch.zeros(16), torch.ones(16))],
                         ids=["image", "mel"])
def test_adapters_offer_augmentation_in_model_space(adapter):
    x = torch.rand(6, *adapter.shape) * 2 - 1
    y = adapter.augment(x, 0.5, _rand(0, 6))
    assert y.shape == x.shape and torch.isfinite(y).all()
