"""The feature network: a small classifier whose penultimate layer gives features, and its pairing with an input transform.

Inception features mean nothing for spectrograms and need a download, so
evaluation runs by default on domain classifiers kept in `assets/`: the
penultimate layer gives the features for Frechet and kernel distances, the
softmax the classifier score. Figures on these features compare runs
measured with the same network; they are not comparable with published
Inception FIDs (see `multigan.metrics.inception` for those).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from multigan.metrics.feature_inputs import ColourImages, DigitImages, LogMelClips


class FeatureNet(nn.Module):
    """A small CNN classifier of [B, in_channels, H, W] inputs.

    Three conv stages (one, two and two 3x3 convs with batch norm and ReLU,
    each followed by 2x2 max pooling),
    global average pool, then `feature_dim` ReLU units (the features) and the
    class logits.
    """

    def __init__(self, n_classes: int = 10, width: int = 32, feature_dim: int = 128, dropout: float = 0.3,
                 in_channels: int = 1):
        super().__init__()
        self.n_classes, self.width, self.feature_dim, self.in_channels = n_classes, width, feature_dim, in_channels

        def stage(c_in: int, c_out: int, convs: int) -> list[nn.Module]:
            layers: list[nn.Module] = []
            for i in range(convs):
                layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                           nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            return layers + [nn.MaxPool2d(2)]

        # one conv at full resolution keeps the cost low; the deeper stages carry the capacity
        self.body = nn.Sequential(*stage(in_channels, width, 1), *stage(width, 2 * width, 2), *stage(2 * width, 4 * width, 2),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(4 * width, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, n_classes))

    def features(self, x: Tensor) -> Tensor:
        """x [B, C, H, W] -> penultimate features [B, feature_dim]."""
        return self.embed(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, H, W] -> logits [B, n_classes]."""
        return self.head(self.features(x))

    def spec(self) -> dict[str, int]:
        spec = {"n_classes": self.n_classes, "width": self.width, "feature_dim": self.feature_dim}
        # grey nets leave it out: their files are as they were before colour inputs
        return spec if self.in_channels == 1 else {**spec, "in_channels": self.in_channels}


@dataclass
class FeatureExtractor:
    """A trained feature network with its input transform."""

    net: FeatureNet  # in eval mode
    input: DigitImages | ColourImages | LogMelClips
    class_names: list[str]
    test_accuracy: float
    digest: str  # identifies the weights, for caches of reference features
    trained_on: str = ""

    @torch.no_grad()
    def embed(self, x: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
        """Network inputs [N, C, H, W] -> (features [N, F], class probabilities [N, K]) on the CPU."""
        device = next(self.net.parameters()).device
        feats, probs = [], []
        for i in range(0, len(x), batch_size):
            f = self.net.features(x[i:i + batch_size].to(device))
            feats.append(f.float().cpu())
            probs.append(self.net.head(f).float().softmax(-1).cpu())
        return torch.cat(feats), torch.cat(probs)

    def embed_artifacts(self, artifacts) -> tuple[Tensor, Tensor]:
        return self.embed(self.input.from_artifacts(artifacts))

    def to(self, device) -> FeatureExtractor:
        self.net.to(device)
        return self


# On data like its own, a classifier's mean top-class probability is about its held-out accuracy.
# Data it gives a mean more than its error rate (and at least 3 points) below that is something else.
# Measured: the digit classifier (floor 0.96) gives MNIST 0.99, typed digits 0.99, emoji in grey 0.93,
# typed letters 0.79; the emoji classifier (floor 0.63) gives emoji 0.80 (on black too: 0.78), MNIST
# digits 0.55; the spoken-digit classifier (floor 0.97) gives FSDD 0.99.
CONFIDENCE_MARGIN = 0.03


def mismatch_warning(extractor: FeatureExtractor, probs: Tensor, name: str) -> str | None:
    """A one-line warning when the class probabilities [N, K] of the reference data show that the
    feature network `name` was not trained on data like it (a digit classifier on letters); else None."""
    confidence = float(probs.max(1).values.mean())
    accuracy = extractor.test_accuracy
    floor = accuracy - max(1.0 - accuracy, CONFIDENCE_MARGIN)
    if confidence >= floor:
        return None
    return (f"features of {name} (trained on {extractor.trained_on or 'other data'}) are meaningful for such data "
            f"only: its mean confidence on this data is {confidence:.2f}, below {floor:.2f}; pass --features "
            f"(eval.features) a network trained on data like this")
