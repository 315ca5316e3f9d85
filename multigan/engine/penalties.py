"""Gradient penalties on the discriminator."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def gradient_penalty(D: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, generator: torch.Generator | None = None,
                     eps: Tensor | None = None) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad_x D(x_hat)||_2 - 1)^2].

    x_hat = eps * real + (1 - eps) * fake, with one eps ~ U[0, 1] per example
    (not per pixel), so x_hat lies on the segment between a real and a fake.
    real, fake: [B, ...]; eps: [B], drawn from `generator` when not given.
    """
    if eps is None:
        eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype, generator=generator)
    eps = eps.to(real.dtype).reshape((real.shape[0],) + (1,) * (real.ndim - 1))
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def r1_penalty(real_out: Tensor, real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): E[||grad_x D(x)||^2] on real data.

    `real` must have had requires_grad set before D saw it; real_out = D(real).
    The 1/2 factor of the paper is left to the term's weight (gamma / 2).
    """
    (grad,) = torch.autograd.grad(real_out.sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(1).mean()
