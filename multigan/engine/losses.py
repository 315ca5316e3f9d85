"""Adversarial losses as small objects.

Each loss maps raw discriminator outputs (logits or critic values, any shape)
to a scalar: `d_loss(real, fake)` for the discriminator step and
`g_loss(fake)` for the generator step. `score` turns raw outputs into the
figure logged as D(x) and D(G(z)): a probability where the loss reads D as a
classifier, the raw value otherwise.
"""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


class AdversarialLoss(Protocol):
    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor: ...
    def g_loss(self, fake: Tensor) -> Tensor: ...
    def score(self, out: Tensor) -> Tensor: ...


class _Classifier:
    """D outputs logits of 'real'; scores are probabilities."""

    def score(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out.detach().float()).mean()

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        # -log D(x) - log(1 - D(G(z)))
        return F.softplus(-real).mean() + F.softplus(fake).mean()


class Minimax(_Classifier):
    """The original min-max value function (Goodfellow et al. 2014): G minimises log(1 - D(G(z)))."""

    def g_loss(self, fake: Tensor) -> Tensor:
        return -F.softplus(fake).mean()


class NonSaturating(_Classifier):
    """G maximises log D(G(z)) instead, for strong gradients early on (Goodfellow et al. 2014)."""

    def g_loss(self, fake: Tensor) -> Tensor:
        return F.softplus(-fake).mean()


class _Raw:
    def score(self, out: Tensor) -> Tensor:
        return out.detach().float().mean()


class Wasserstein(_Raw):
    """WGAN critic loss (Arjovsky et al. 2017); pair it with the gradient penalty."""

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return fake.mean() - real.mean()

    def g_loss(self, fake: Tensor) -> Tensor:
        return -fake.mean()


class LeastSquares(_Raw):
    """LSGAN with targets a=0 (fake), b=1 (real), c=1 (Mao et al. 2017)."""

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()

    def g_loss(self, fake: Tensor) -> Tensor:
        return 0.5 * ((fake - 1) ** 2).mean()


class Hinge(_Raw):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018)."""

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()

    def g_loss(self, fake: Tensor) -> Tensor:
        return -fake.mean()


LOSSES: dict[str, type] = {
    "minimax": Minimax,
    "nonsaturating": NonSaturating,
    "wasserstein": Wasserstein,
    "lsgan": LeastSquares,
    "hinge": Hinge,
}
