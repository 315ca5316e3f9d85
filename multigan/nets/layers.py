"""Layers that more than one network family uses."""
from __future__ import annotations

from torch import Tensor, nn


class ConditionalBatchNorm(nn.Module):
    """BatchNorm2d whose scale and shift are learned per class; plain affine batch norm when `n_classes` is 0."""

    def __init__(self, channels: int, n_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=not n_classes)
        self.n_classes = n_classes
        if n_classes:
            self.gamma = nn.Embedding(n_classes, channels)
            self.beta = nn.Embedding(n_classes, channels)
            # A label embedding that collapsed to one image per class (recall 0.0) is what
            # gamma ~ 0 gives: every BN then outputs beta(y), a constant per class, and z
            # is multiplied away. So gamma = 1 + embedding, initialised small: z keeps its
            # full say at the start and weight decay pulls towards identity, not towards
            # zero. Small but non-zero, so the label changes G from step 0. The statistics
            # are class-independent (affine=False before the class scale): the EMA G's
            # running statistics in eval do not depend on a batch's mix of classes.
            nn.init.normal_(self.gamma.weight, 0.0, 0.02)
            nn.init.normal_(self.beta.weight, 0.0, 0.02)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        x = self.bn(x)  # x: [B, C, H, W]
        if not self.n_classes:
            return x
        gamma, beta = 1 + self.gamma(y), self.beta(y)  # [B, C]
        return x * gamma[:, :, None, None] + beta[:, :, None, None]
