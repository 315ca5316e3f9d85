"""Training feature networks: the loop and the augmentations the classifier recipes use.

The loop lives in the library rather than in a recipe because all three
classifier recipes (digits, emoji, spoken digits) run it unchanged; each
recipe brings its own data, augmentation and batches.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from multigan.metrics.feature_net import FeatureNet

log = logging.getLogger("multigan")


def fit_classifier(
    net: FeatureNet,
    batches: Callable[[int], Iterator[tuple[Tensor, Tensor]]],
    test: tuple[Tensor, Tensor],
    *,
    epochs: int,
    steps_per_epoch: int,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    label_smoothing: float = 0.0,
    progress: bool = True,
) -> float:
    """Train `net` with AdamW and a one-cycle schedule; returns the final test accuracy.

    `batches(epoch)` yields (inputs [B, C, H, W], labels [B]) for one epoch,
    augmented as the caller sees fit; `test` is (inputs, labels).
    """
    from multigan.console import Progress

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2)
    accuracy = 0.0
    for epoch in range(epochs):
        net.train()
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{epochs}", unit="batch", enabled=progress)
        for x, y in batches(epoch):
            loss = F.cross_entropy(net(x), y, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update(1)
        bar.close()
        accuracy = test_accuracy(net, *test)
        log.info("epoch %d/%d: test accuracy %.2f%%", epoch + 1, epochs, 100 * accuracy)
    return accuracy


@torch.no_grad()
def test_accuracy(net: FeatureNet, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Share of x [N, C, H, W] whose top class is y [N], with `net` put in eval mode."""
    net.eval()
    correct = sum(int((net(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum()) for i in range(0, len(x), batch_size))
    return correct / len(x)


def shift_images(x: Tensor, max_shift: int, generator: torch.Generator, fill: float | None = None) -> Tensor:
    """Each image of x [B, C, H, W] moved by a random whole-pixel offset in [-max_shift, max_shift].

    The uncovered border takes `fill`, by default the batch's minimum (the
    background of digits in [-1, 1]; pass 1.0 for pictures on white), not 0.
    """
    B, _, H, W = x.shape
    pad = F.pad(x, (max_shift,) * 4, value=float(x.min()) if fill is None else fill)
    dy = torch.randint(0, 2 * max_shift + 1, (B,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (B,), generator=generator)
    rows = (dy[:, None] + torch.arange(H))[:, None, :, None].expand(B, x.shape[1], H, W + 2 * max_shift)
    out = pad.gather(2, rows)
    cols = (dx[:, None] + torch.arange(W))[:, None, None, :].expand(B, x.shape[1], H, W)
    return out.gather(3, cols)


def split_by_group(groups: Sequence[str], test_fraction: float, seed: int = 0) -> Tensor:
    """A held-out mask [N], True for the items of a seeded `test_fraction` of the distinct groups.

    Items of one group (the skin-tone variants of one emoji, the takes of one
    speaker) fall on the same side, so the test never sees a near-copy of a
    training item.
    """
    distinct = sorted(set(groups))
    order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed)).tolist()
    held = {distinct[i] for i in order[:round(test_fraction * len(distinct))]}
    return torch.tensor([g in held for g in groups], dtype=torch.bool)


def mask_bands(x: Tensor, max_width: int, generator: torch.Generator) -> Tensor:
    """Each spectrogram of x [B, 1, n_mels, frames] with one random band of up to `max_width` mel bins
    and one of up to `max_width` frames set to 0 (the mean), as SpecAugment does (Park et al. 2019)."""
    B, _, H, W = x.shape
    out = x.clone()
    for size, axis in ((H, 2), (W, 3)):
        width = torch.randint(0, max_width + 1, (B,), generator=generator)
        start = (torch.rand(B, generator=generator) * (size - width + 1)).long()
        pos = torch.arange(size)
        band = (pos[None] >= start[:, None]) & (pos[None] < (start + width)[:, None])  # [B, size]
        shape = (B, 1, size, 1) if axis == 2 else (B, 1, 1, size)
        out = out.masked_fill(band.view(shape), 0.0)
    return out
