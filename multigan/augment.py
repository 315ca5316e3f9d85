"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) as plain functions on [B, C, H, W] batches.

D sees real and generated batches through the same random, differentiable
transforms, so it cannot memorise a small training set, and G's gradient
flows back through them. Each op takes the batch, a probability p that it
touches each example, and `rand(*dims)`, a source of uniform numbers
[B, *dims] (the engine's noise, which draws the same numbers on every rank).
The adapters pick the ops that suit their data.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Rand = Callable[..., Tensor]  # rand(*dims) -> U[0, 1) of shape [B, *dims]


def _chosen(rand: Rand, p: float, x: Tensor) -> Tensor:
    """[B, 1, 1, 1] mask: 1 for the examples this op touches."""
    return (rand(1) < p).to(x.dtype).view(-1, 1, 1, 1)


def translate(x: Tensor, p: float, rand: Rand, ratio: float = 0.125, time_only: bool = False) -> Tensor:
    """Shift each example by up to `ratio` of its height and width, filling with -1 (black or silence).

    With `time_only`, only along the last axis (a spectrogram's time).
    """
    B, _, H, W = x.shape
    u = rand(2)
    dy = torch.zeros(B, device=x.device, dtype=torch.long) if time_only else \
        ((u[:, 0] * 2 - 1) * ratio * H).round().long()
    dx = ((u[:, 1] * 2 - 1) * ratio * W).round().long()
    keep = _chosen(rand, p, x)
    dy, dx = dy * keep.view(-1).long(), dx * keep.view(-1).long()
    rows = torch.arange(H, device=x.device).view(1, H, 1) - dy.view(B, 1, 1)  # source row of each output row
    cols = torch.arange(W, device=x.device).view(1, 1, W) - dx.view(B, 1, 1)
    inside = ((rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)).unsqueeze(1)  # [B, 1, H, W]
    index = (rows.clamp(0, H - 1) * W + cols.clamp(0, W - 1)).view(B, 1, H * W).expand(-1, x.shape[1], -1)
    moved = x.flatten(2).gather(2, index).view_as(x)
    return torch.where(inside, moved, torch.full_like(x, -1.0))


def cutout(x: Tensor, p: float, rand: Rand, ratio: float = 0.5) -> Tensor:
    """Blank a rectangle of `ratio` times the height and width at a random place (DiffAugment's cutout)."""
    B, _, H, W = x.shape
    h, w = max(1, int(H * ratio + 0.5)), max(1, int(W * ratio + 0.5))
    u = rand(2)
    top = (u[:, 0] * (H - h + 1)).long().clamp(max=H - h).view(B, 1, 1)
    left = (u[:, 1] * (W - w + 1)).long().clamp(max=W - w).view(B, 1, 1)
    rows = torch.arange(H, device=x.device).view(1, H, 1)
    cols = torch.arange(W, device=x.device).view(1, 1, W)
    hole = ((rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)).unsqueeze(1)  # [B, 1, H, W]
    hole = hole & (_chosen(rand, p, x) > 0)
    return torch.where(hole, torch.full_like(x, -1.0), x)


def colour(x: Tensor, p: float, rand: Rand) -> Tensor:
    """Brightness, saturation (colour images only) and contrast, as in DiffAugment's `color`."""
    keep = _chosen(rand, p, x)
    u = rand(3)
    brightness = (u[:, 0] - 0.5).view(-1, 1, 1, 1)  # on [-1, 1] images, as DiffAugment
    x = x + keep * brightness
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = x + keep * (mean + (x - mean) * (u[:, 1] * 2).view(-1, 1, 1, 1) - x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return x + keep * (mean + (x - mean) * (u[:, 2] + 0.5).view(-1, 1, 1, 1) - x)


def band_mask(x: Tensor, p: float, rand: Rand, axis: int, ratio: float = 0.15) -> Tensor:
    """SpecAugment-style mask of up to `ratio` of one axis (-1: time frames, -2: mel bins), set to -1 (silence)."""
    size = x.shape[axis]
    u = rand(2)
    width = (u[:, 0] * ratio * size).long().view(-1, 1)
    start = (u[:, 1] * (size - width.view(-1) + 1)).long().view(-1, 1)
    pos = torch.arange(size, device=x.device).view(1, size)
    band = (pos >= start) & (pos < start + width)  # [B, size]
    band = band.view(x.shape[0], 1, size, 1) if axis == -2 else band.view(x.shape[0], 1, 1, size)
    band = band & (_chosen(rand, p, x) > 0)
    return torch.where(band, torch.full_like(x, -1.0), x)


def image_ops(x: Tensor, p: float, rand: Rand) -> Tensor:
    """Pictures: colour, translation, cutout (DiffAugment's 'color,translation,cutout')."""
    return cutout(translate(colour(x, p, rand), p, rand), p, rand)


def spectrogram_ops(x: Tensor, p: float, rand: Rand) -> Tensor:
    """Log-mel spectrograms [B, 1, mels, frames]: a time shift, then a time mask and a frequency mask."""
    x = translate(x, p, rand, time_only=True)
    return band_mask(band_mask(x, p, rand, axis=-1), p, rand, axis=-2)
