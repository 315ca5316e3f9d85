"""Every adversarial loss against its textbook formula."""
from __future__ import annotations

import pytest
import torch

from multigan.config import LOSS_KINDS, LOSS_TERMS
from multigan.engine.losses import LOSSES, Noise

# Raw D outputs [B]; include large magnitudes where a naive log(sigmoid) would be inexact.
REAL = torch.tensor([2.0, -1.0, 0.5, 3.0, -0.2], dtype=torch.float64)
FAKE = torch.tensor([-3.0, 0.0, 1.5, -0.7], dtype=torch.float64)


def _log_sigmoid(x):
    return torch.log(1 / (1 + torch.exp(-x)))


def _log_one_minus_sigmoid(x):
    return torch.log(1 - 1 / (1 + torch.exp(-x)))


# name -> (D loss, G loss), written from the papers' formulas
FORMULAS = {
    "minimax": (
        lambda r, f: -_log_sigmoid(r).mean() - _log_one_minus_sigmoid(f).mean(),
        lambda f: _log_one_minus_sigmoid(f).mean(),
    ),
    "nonsaturating": (
        lambda r, f: -_log_sigmoid(r).mean() - _log_one_minus_sigmoid(f).mean(),
        lambda f: -_log_sigmoid(f).mean(),
    ),
    "wasserstein": (
        lambda r, f: f.mean() - r.mean(),
        lambda f: -f.mean(),
    ),
    "lsgan": (
        lambda r, f: (0.5 * (r - 1) ** 2).mean() + (0.5 * f**2).mean(),
        lambda f: (0.5 * (f - 1) ** 2).mean(),
    ),
    "hinge": (
        lambda r, f: torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean(),
        lambda f: -f.mean(),
    ),
}


def test_every_configurable_loss_is_registered_and_checked_here():
    assert set(LOSSES) == set(LOSS_KINDS) == set(FORMULAS)


@pytest.mark.parametrize("kind", sorted(FORMULAS))
def test_loss_matches_formula(kind):
    loss = LOSSES[kind]()
    d_formula, g_formula = FORMULAS[kind]
    d, g = loss.d_loss(REAL, FAKE), loss.g_loss(FAKE)
    assert d.shape == () and g.shape == ()
    torch.testing.assert_close(d, d_formula(REAL, FAKE), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g_formula(FAKE), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(FORMULAS))
def test_loss_accepts_any_output_shape(kind):
    # D may return [B] or [B, 1]; the loss is a mean either way.
    loss = LOSSES[kind]()
    r, f = REAL[:4], FAKE
    torch.testing.assert_close(loss.d_loss(r[:, None], f[:, None]), loss.d_loss(r, f))
    torch.testing.assert_close(loss.g_loss(f[:, None]), loss.g_loss(f))


@pytest.mark.parametrize("kind", ["minimax", "nonsaturating"])
def test_classifier_losses_are_stable_for_large_logits(kind):
    loss = LOSSES[kind]()
    big = torch.tensor([80.0, -80.0, 200.0, -200.0])
    assert torch.isfinite(loss.d_loss(big, big)) and torch.isfinite(loss.g_loss(big))
    # D perfectly right: real logits +200, fake logits -200 -> D loss ~ 0.
    assert loss.d_loss(torch.full((3,), 200.0), torch.full((3,), -200.0)).item() == pytest.approx(0.0, abs=1e-6)


def test_minimax_saturates_where_nonsaturating_does_not():
    # Where D confidently rejects the fakes (D(G(z)) ~ 0, logit -8), the minimax G
    # gradient vanishes (-sigmoid(f)) while the non-saturating one stays ~ -1 (-sigmoid(-f)).
    def grad(kind, logit):
        f = torch.full((4,), logit, dtype=torch.float64, requires_grad=True)
        LOSSES[kind]().g_loss(f).backward()
        return f.grad * 4  # per-example gradient, undoing the mean

    mm, ns = grad("minimax", -8.0), grad("nonsaturating", -8.0)
    assert torch.all(mm.abs() < 1e-3)
    assert torch.all(ns.abs() > 0.99)
    torch.testing.assert_close(mm, -torch.sigmoid(torch.full((4,), -8.0, dtype=torch.float64)))
    torch.testing.assert_close(ns, -torch.sigmoid(torch.full((4,), 8.0, dtype=torch.float64)))
    # Both push the fake logits up (gradient descent raises f).
    assert torch.all(mm < 0) and torch.all(ns < 0)
    # Where D is fooled (logit +8) the roles swap.
    assert torch.all(grad("minimax", 8.0).abs() > 0.99)
    assert torch.all(grad("nonsaturating", 8.0).abs() < 1e-3)


@pytest.mark.parametrize("kind", ["minimax", "nonsaturating"])
def test_classifier_score_is_a_probability(kind):
    loss = LOSSES[kind]()
    out = torch.tensor([-50.0, -1.0, 0.0, 3.0, 50.0], requires_grad=True)
    s = loss.score(out)
    assert s.shape == () and not s.requires_grad
    assert 0.0 <= s.item() <= 1.0
    assert s.item() == pytest.approx(torch.sigmoid(out.detach()).mean().item())
    assert loss.score(torch.zeros(3)).item() == pytest.approx(0.5)


@pytest.mark.parametrize("kind", ["wasserstein", "lsgan", "hinge"])
def test_raw_score_is_the_mean_output(kind):
    out = torch.tensor([-5.0, 1.0, 7.0], requires_grad=True)
    s = LOSSES[kind]().score(out)
    assert not s.requires_grad
    assert s.item() == pytest.approx(1.0)


def test_every_term_the_loss_object_returns_is_a_weight_and_a_log_key():
    from multigan.engine.losses import GANLoss

    names = {t for terms in GANLoss.TERMS.values() for t in terms}
    assert names == set(LOSS_TERMS)


def test_unknown_loss_terms_are_refused_when_the_settings_are_made():
    from multigan.config import LossConfig
    from multigan.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown terms"):
        LossConfig(weights={"feature_matching": 1.0})


# Noise ---------------------------------------------------------------------------
def _draws(rank: int, world_size: int, mix=None) -> tuple[torch.Tensor, torch.Tensor]:
    noise = Noise(torch.Generator().manual_seed(5), 12, rank, world_size)
    return noise.normal(3), noise.labels(4, mix)


@pytest.mark.parametrize("mix", [None, torch.tensor([0.7, 0.1, 0.2, 0.0])], ids=["uniform", "mix"])
def test_ranks_draw_slices_of_what_one_process_draws(mix):
    z, y = _draws(0, 1, mix)
    parts = [_draws(rank, 3, mix) for rank in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), z) and torch.equal(torch.cat([p[1] for p in parts]), y)
    assert z.shape == (12, 3) and y.shape == (12,) and y.dtype == torch.long


def test_labels_follow_the_class_mix():
    noise = Noise(torch.Generator().manual_seed(0), 20_000)
    y = noise.labels(4, torch.tensor([0.6, 0.3, 0.1, 0.0]))
    shares = torch.bincount(y, minlength=4) / len(y)
    assert torch.allclose(shares, torch.tensor([0.6, 0.3, 0.1, 0.0]), atol=0.015) and shares[3] == 0
    uniform = torch.bincount(noise.labels(4), minlength=4) / 20_000
    assert torch.allclose(uniform, torch.full((4,), 0.25), atol=0.015)
