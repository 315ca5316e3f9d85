"""WGAN-GP and R1 against gradients computed by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from multigan.engine.penalties import gradient_penalty, r1_penalty

B, SHAPE = 6, (2, 3, 3)


class LinearD(nn.Module):
    """D(x) = w . x per example; grad_x D = w everywhere."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):  # x: [B, C, H, W] -> [B]
        return (x * self.w).flatten(1).sum(1)


class SquareD(nn.Module):
    """D(x) = sum(w * x^2) per example; grad_x D = 2 w x."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        return (self.w * x**2).flatten(1).sum(1)


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn((B,) + SHAPE, generator=g, dtype=torch.float64)
    fake = torch.randn((B,) + SHAPE, generator=g, dtype=torch.float64)
    w = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    return real, fake, w


# WGAN-GP ----------------------------------------------------------------------
def test_gp_of_a_linear_critic_is_the_norm_of_its_weights():
    real, fake, w = _data()
    D = LinearD(w)
    gp = gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(1))
    norm = w.norm()
    torch.testing.assert_close(gp, (norm - 1) ** 2)
    # Differentiable w.r.t. D's parameters: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||.
    gp.backward()
    torch.testing.assert_close(D.w.grad, 2 * (norm - 1) * w / norm)


def test_gp_of_a_nonlinear_critic_matches_hand_computed_gradients():
    real, fake, w = _data(1)
    D = SquareD(w)
    gp = gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(7))

    eps = torch.rand((B, 1, 1, 1), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x_hat = eps * real + (1 - eps) * fake
    norms = (2 * w * x_hat).flatten(1).norm(dim=1)  # per-example ||grad D(x_hat)||
    expected = ((norms - 1) ** 2).mean()
    torch.testing.assert_close(gp, expected)

    # Gradient w.r.t. w by hand: d norm_i / dw = 4 w x_hat_i^2 / norm_i.
    gp.backward()
    dw = sum(2 * (norms[i] - 1) * 4 * w * x_hat[i] ** 2 / norms[i] for i in range(B)) / B
    torch.testing.assert_close(D.w.grad, dw)


def test_gp_eps_is_per_example_not_per_pixel():
    seen = []

    def D(x):
        seen.append(x.detach().clone())
        return x.flatten(1).sum(1)

    real, fake = torch.ones((B,) + SHAPE), torch.zeros((B,) + SHAPE)
    gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(3))
    (x_hat,) = seen
    per_example = x_hat.flatten(1)  # x_hat_i = eps_i everywhere
    assert torch.equal(per_example, per_example[:, :1].expand_as(per_example))
    assert per_example[:, 0].unique().numel() == B  # a different eps for each example
    assert torch.all((per_example >= 0) & (per_example <= 1))
    eps = torch.rand((B, 1, 1, 1), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(per_example[:, 0], eps.flatten())


def test_gp_does_not_backpropagate_into_real_or_fake():
    real, fake, w = _data(2)
    fake.requires_grad_(True)
    gp = gradient_penalty(SquareD(w), real, fake, generator=torch.Generator().manual_seed(0))
    gp.backward()
    assert fake.grad is None


def test_gp_is_zero_for_a_unit_gradient_critic():
    real, fake, w = _data(3)
    gp = gradient_penalty(LinearD(w / w.norm()), real, fake)
    assert gp.item() == pytest.approx(0.0, abs=1e-12)


# R1 ---------------------------------------------------------------------------
class HalfSquareD(nn.Module):
    """D(x) = a * sum(x^2) / 2 per example; grad_x D = a x."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, x):
        return self.a * x.flatten(1).pow(2).sum(1) / 2


def test_r1_matches_hand_computed_gradients():
    real, _, _ = _data(4)
    real.requires_grad_(True)
    D = HalfSquareD(1.0)
    r1 = r1_penalty(D(real), real)
    sq_norms = real.detach().flatten(1).pow(2).sum(1)  # ||grad||^2 = ||x||^2 per example
    torch.testing.assert_close(r1, sq_norms.mean())


def test_r1_is_differentiable_in_D_parameters():
    real, _, _ = _data(5)
    real.requires_grad_(True)
    D = HalfSquareD(1.5)
    r1 = r1_penalty(D(real), real)  # = a^2 mean ||x||^2
    sq_mean = real.detach().flatten(1).pow(2).sum(1).mean()
    torch.testing.assert_close(r1, 1.5**2 * sq_mean)
    r1.backward()
    torch.testing.assert_close(D.a.grad, 2 * 1.5 * sq_mean)


def test_r1_of_a_linear_critic():
    real, _, w = _data(6)
    real.requires_grad_(True)
    r1 = r1_penalty(LinearD(w)(real), real)
    torch.testing.assert_close(r1, w.pow(2).sum())
