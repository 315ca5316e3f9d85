"""The adversarial maths: objectives as small objects, and the loss object that owns each phase.

An objective maps raw discriminator outputs (logits or critic values, any
shape) to a scalar: `d_loss(real, fake)` for the discriminator step and
`g_loss(fake)` for the generator step. `score` turns raw outputs into the
figure logged as D(x) and D(G(z)): a probability where the objective reads D
as a classifier, the raw value otherwise.

`GANLoss` runs a whole phase on the nets it holds (after StyleGAN2's
`loss.accumulate_gradients`): it draws the noise, conditions G and D on
labels, reuses the fake batch, computes the penalties and, with a D that also
classifies (AC-GAN), the cross-entropy of its class head, and returns named
terms. The trainer weighs them by `loss.weights`, back-propagates and steps.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from multigan.config import LOSS_TERMS
from multigan.engine.penalties import gradient_penalty, r1_penalty


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


# The loss object ----------------------------------------------------------
class Noise:
    """The random draws of a step, made for the global batch and sliced to this rank's share.

    Every rank draws the same numbers from one generator, so N ranks see
    exactly what one process with the whole batch sees, and a resumed run
    draws what the uninterrupted one would have.
    """

    def __init__(self, generator: torch.Generator, batch_size: int, rank: int = 0, world_size: int = 1):
        self.generator, self.batch_size = generator, batch_size
        self.local = batch_size // world_size
        self.offset = rank * self.local

    def _mine(self, x: Tensor) -> Tensor:
        return x if self.local == self.batch_size else x[self.offset:self.offset + self.local]

    def normal(self, *dims: int) -> Tensor:
        """[local batch, *dims] ~ N(0, 1)."""
        return self._mine(torch.randn(self.batch_size, *dims, device=self.generator.device, generator=self.generator))

    def uniform(self, *dims: int) -> Tensor:
        """[local batch, *dims] ~ U[0, 1)."""
        return self._mine(torch.rand(self.batch_size, *dims, device=self.generator.device, generator=self.generator))

    def integers(self, high: int) -> Tensor:
        """[local batch] uniform in 0..high-1."""
        return self._mine(torch.randint(high, (self.batch_size,), device=self.generator.device, generator=self.generator))

    def labels(self, n_classes: int, mix: Tensor | None = None) -> Tensor:
        """[local batch] class labels: drawn with probabilities `mix` [n_classes], or uniformly when it is None."""
        if mix is None:
            return self.integers(n_classes)
        return self._mine(torch.multinomial(mix.to(self.generator.device), self.batch_size, replacement=True,
                                            generator=self.generator))


@dataclass(frozen=True)
class Phase:
    """One optimisation step of one network, as the trainer schedules it.

    It runs `repeats` times on steps where `step % every == 0`; a phase that
    runs every k steps has its terms scaled by k (lazy regularisation).
    """

    name: str  # "D", "D_reg", "G": what `GANLoss.accumulate` is asked for; also the log prefix
    net: str  # "D" or "G": the network this phase optimises
    repeats: int = 1
    every: int = 1
    data: bool = False  # takes a fresh data batch per repeat


def _call(net: Callable[..., Tensor], x: Tensor, y: Tensor | None) -> Tensor:
    """net(x), or net(x, y) for a class-conditional run."""
    return net(x) if y is None else net(x, y)


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


class GANLoss:
    """The terms of every phase of a GAN step, with its noise, labels, penalties and fake-batch reuse.

    G and D are the callables to train through (plain, DistributedDataParallel
    or compiled); `D_reg` is the D that the penalties differentiate twice
    (never a compiled one: compiled graphs have no double backward). Term
    names are the keys of `loss.weights` and of the log.
    """

    TERMS = {"D": ("d_adv", "gp", "r1", "d_cls"), "D_reg": ("gp", "r1"), "G": ("g_adv", "g_cls")}

    def __init__(self, objective: AdversarialLoss, G: Callable, D: Callable, noise: Noise, *, z_dim: int,
                 n_classes: int, weights: Mapping[str, float], n_critic: int = 1, reg_every: int = 1,
                 D_reg: Callable | None = None, augment: Callable[..., Tensor] | None = None, augment_p: float = 0.0,
                 classify: bool = False, label_mix: Tensor | None = None):
        self.objective, self.G, self.D, self.D_reg = objective, G, D, D_reg or D
        # AC-GAN: D(x, y, classify=True) also returns class logits [B, K]; its head learns real labels
        # only (d_cls), and G learns to have its samples assigned the labels it was given (g_cls).
        self.classify = classify and n_classes > 0
        # DiffAugment: D only ever sees batches through the adapter's differentiable augmentation.
        self.augment, self.augment_p = (augment, augment_p) if augment is not None and augment_p > 0 else (None, 0.0)
        self.noise, self.z_dim, self.n_classes = noise, z_dim, n_classes
        self.label_mix = label_mix  # [n_classes] probabilities of G's labels; None: uniform
        self.n_critic, self.reg_every = n_critic, reg_every
        self.penalties = tuple(k for k in ("gp", "r1") if weights.get(k, 0) > 0)
        self._fake: tuple[Tensor, Tensor | None] | None = None  # the last D step's fake batch, for the G step
        self._real: tuple[Tensor, Tensor | None] | None = None  # the last real batch, for lazy penalties

    def phases(self) -> list[Phase]:
        lazy = self.penalties and self.reg_every > 1
        return [Phase("D", "D", repeats=self.n_critic, data=True)] \
            + ([Phase("D_reg", "D", every=self.reg_every)] if lazy else []) + [Phase("G", "G")]

    def reset(self) -> None:
        """Forget held batches (after the trainer goes back to an earlier state)."""
        self._fake = self._real = None

    def accumulate(self, phase: str, real: Tensor | None = None, y_real: Tensor | None = None,
                   figures: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The named, unweighted terms of `phase`; scores for the log go into `figures` when it is given.

        real: [B, *shape] model-space data and y_real [B] its labels, for phases that take data.
        """
        if phase == "D":
            return self._d_main(real, y_real, figures)
        if phase == "D_reg":
            return self._lazy_regularise(*self._real)
        if phase == "G":
            return self._g_main()
        raise ValueError(f"GANLoss has no phase {phase!r}")

    def _judge(self, D: Callable, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """D's scores of x [B], and its class logits [B, K] when it classifies (None otherwise)."""
        return D(x, y, classify=True) if self.classify else (_call(D, x, y), None)

    def _aug(self, x: Tensor) -> Tensor:
        return x if self.augment is None else self.augment(x, self.augment_p, self.noise.uniform)

    def _latents(self) -> tuple[Tensor, Tensor | None]:
        """z [B, z_dim] and, for a conditional G, labels [B] drawn from `label_mix`."""
        z = self.noise.normal(self.z_dim)
        return z, (self.noise.labels(self.n_classes, self.label_mix) if self.n_classes else None)

    def _d_main(self, real: Tensor, y_real: Tensor | None, figures: dict[str, Tensor] | None) -> dict[str, Tensor]:
        penalise = self.penalties and self.reg_every == 1
        # R1 can share D's forward on real data when that forward is the twice-differentiable fp32 one.
        share_r1 = penalise and "r1" in self.penalties and self.D is self.D_reg and not _autocast_on(real.device.type)
        if share_r1:
            real.requires_grad_(True)
        z, y_fake = self._latents()
        if self.n_critic == 1:  # keep G's graph: the G step reuses this fake batch
            fake = _call(self.G, z, y_fake)
            self._fake = (fake, y_fake)
        else:
            with torch.no_grad():
                fake = _call(self.G, z, y_fake)
        out_real, logits = self._judge(self.D, self._aug(real), y_real)
        out_fake = _call(self.D, self._aug(fake.detach()), y_fake)
        terms = {"d_adv": self.objective.d_loss(out_real, out_fake)}
        if logits is not None:  # the class head learns real labels only
            terms["d_cls"] = F.cross_entropy(logits.float(), y_real)
        if figures is not None:
            figures["d_real"], figures["d_fake"] = self.objective.score(out_real), self.objective.score(out_fake)
        if penalise:
            terms.update(self._regularise(real, y_real, fake=fake, out_real=out_real if share_r1 else None))
        else:
            self._real = (real.detach(), y_real)
        return terms

    def _regularise(self, real: Tensor, y_real: Tensor | None, fake: Tensor | None,
                    out_real: Tensor | None = None) -> dict[str, Tensor]:
        """The penalties, in fp32 whatever the training precision."""
        terms = {}
        with torch.autocast(real.device.type, enabled=False):
            if "gp" in self.penalties:
                eps = self.noise.uniform()
                if fake is None:  # a lazy phase: a fresh fake batch
                    with torch.no_grad():
                        fake = _call(self.G, *self._latents())
                D = self.D_reg if y_real is None else (lambda x: self.D_reg(x, y_real))
                terms["gp"] = gradient_penalty(D, real.float(), fake.float(), eps=eps)
            if "r1" in self.penalties:
                x = real
                if out_real is None:
                    x = real.detach().float().requires_grad_(True)
                    out_real = _call(self.D_reg, self._aug(x), y_real)
                terms["r1"] = r1_penalty(out_real.float(), x)
        return terms

    def _lazy_regularise(self, real: Tensor, y_real: Tensor | None) -> dict[str, Tensor]:
        """The penalties in a phase of their own, on the last real batch."""
        x = real.detach().float().requires_grad_(True)
        with torch.autocast(real.device.type, enabled=False):
            out_real, logits = self._judge(self.D_reg, self._aug(x), y_real)
        terms = self._regularise(x, y_real, fake=None, out_real=out_real)
        # D's last bias has no gradient in a penalty on input gradients, nor has a class head;
        # DistributedDataParallel needs every parameter in the graph. Adding 0 x D(x) puts them
        # there (as StyleGAN2 does).
        first = next(iter(terms))
        terms[first] = terms[first] + 0.0 * out_real.float().mean()
        if logits is not None:
            terms[first] = terms[first] + 0.0 * logits.float().mean()
        return terms

    def _g_main(self) -> dict[str, Tensor]:
        if self._fake is not None:
            (fake, y_fake), self._fake = self._fake, None
        else:
            fake = _call(self.G, *(latents := self._latents()))
            y_fake = latents[1]
        out, logits = self._judge(self.D, self._aug(fake), y_fake)
        terms = {"g_adv": self.objective.g_loss(out)}
        if logits is not None:
            terms["g_cls"] = F.cross_entropy(logits.float(), y_fake)
        return terms

