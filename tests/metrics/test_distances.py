"""FID, KID, nearest neighbours and precision/recall against values worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from multigan.errors import DataError
from multigan.metrics.distances import (diversity, feature_stats, fid, frechet_distance, kid, kth_nn_radius,
                                        nn_distances, precision_recall, train_distance)

f64 = torch.float64


def _line(*xs) -> torch.Tensor:
    """Points on a line as features [N, 1]."""
    return torch.tensor(xs, dtype=f64)[:, None]


def _gaussian(n, mu, sigma, seed) -> torch.Tensor:
    """n samples [n, F] of N(mu, sigma)."""
    g = torch.Generator().manual_seed(seed)
    mu, sigma = torch.as_tensor(mu, dtype=f64), torch.as_tensor(sigma, dtype=f64)
    return mu + torch.randn(n, mu.shape[0], generator=g, dtype=f64) @ torch.linalg.cholesky(sigma).T


def _poly_kernel(x, y):  # [n, F], [m, F] -> [n, m]
    return (x @ y.T / x.shape[1] + 1) ** 3


# Gaussian statistics and FID ----------------------------------------------------
def test_feature_stats_match_numpy_mean_and_unbiased_covariance():
    f = _gaussian(300, [1.0, -2.0, 0.5], torch.eye(3), seed=0).float()
    mu, cov = feature_stats(f)
    assert mu.dtype == cov.dtype == f64
    x = f.double().numpy()
    np.testing.assert_allclose(mu.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(x, rowvar=False, ddof=1), rtol=1e-12)


def test_fid_of_a_set_with_itself_is_zero():
    f = _gaussian(500, torch.zeros(8), torch.eye(8) * 4 + 1, seed=1)
    scale = float(torch.trace(feature_stats(f)[1]))
    assert fid(f, f) <= 1e-6 * scale


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0], dtype=f64), torch.tensor([1.0, -1.0, 2.5], dtype=f64)
    s1, s2 = torch.tensor([1.0, 4.0, 0.25], dtype=f64), torch.tensor([9.0, 1.0, 0.25], dtype=f64)
    # ||mu1 - mu2||^2 = 1 + 4 + 0.25; per axis s1 + s2 - 2 sqrt(s1 s2) = (sqrt s1 - sqrt s2)^2 = 4, 1, 0.
    expected = 5.25 + 4 + 1 + 0
    assert frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_full_covariances_matches_scipy_sqrtm():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(5, 5, generator=g, dtype=f64), torch.randn(5, 5, generator=g, dtype=f64)
    s1, s2 = a @ a.T + 0.1 * torch.eye(5, dtype=f64), b @ b.T
    mu1, mu2 = torch.randn(5, generator=g, dtype=f64), torch.randn(5, generator=g, dtype=f64)
    covmean = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = float(((mu1 - mu2) ** 2).sum()) + np.trace(s1.numpy() + s2.numpy() - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_singular_covariances_is_finite_and_nonnegative():
    s = torch.zeros(3, 3, dtype=f64)
    s[0, 0] = 2.0  # rank 1
    mu = torch.zeros(3, dtype=f64)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-12)
    assert frechet_distance(mu, s, mu, torch.zeros(3, 3, dtype=f64)) == pytest.approx(2.0, rel=1e-12)


def test_fid_of_large_samples_approaches_the_closed_form(one_thread):
    mu1, mu2 = torch.tensor([0.0, 0.0, 0.0, 0.0]), torch.tensor([1.0, 0.5, 0.0, -1.0])
    s1 = torch.diag(torch.tensor([1.0, 2.0, 0.5, 1.0]))
    s2 = torch.diag(torch.tensor([4.0, 0.5, 0.5, 1.0]))
    # 2.25 + (1 - 2)^2 + (sqrt 2 - sqrt 0.5)^2 + 0 + 0 = 2.25 + 1 + 0.5
    expected = 3.75
    values = [fid(_gaussian(2000, mu1, s1, seed=2 * i), _gaussian(2000, mu2, s2, seed=2 * i + 1)) for i in range(10)]
    # One estimate at N = 2000 has a standard deviation of about 0.14 here (measured over 300 seeds; the
    # bias, about (tr S1 + tr S2) / N = 0.005, is negligible), so the mean of 10 about 0.045: allow 4 of those.
    assert sum(values) / len(values) == pytest.approx(expected, abs=0.18)
    assert max(values) - min(values) > 0.05  # the estimates really are independent


def test_fid_is_symmetric():
    f1 = _gaussian(200, torch.zeros(3), torch.eye(3), seed=5)
    f2 = _gaussian(300, torch.ones(3), torch.eye(3) * 2, seed=6)
    assert fid(f1, f2) == pytest.approx(fid(f2, f1), rel=1e-9)


@pytest.mark.parametrize("f1, f2, message", [
    (torch.zeros(10), torch.zeros(10, 3), "shape"),
    (torch.randn(10, 3), torch.randn(10, 4), "widths"),
    (torch.randn(1, 3), torch.randn(10, 3), "rows"),
    (torch.full((10, 3), math.nan), torch.randn(10, 3), "NaN"),
])
def test_fid_rejects_bad_features(f1, f2, message):
    with pytest.raises(DataError, match=message):
        fid(f1, f2)


# KID ------------------------------------------------------------------------------
def test_kid_is_unbiased_where_the_v_statistic_is_not(one_thread):
    pairs, m, F = 200, 40, 4
    g = torch.Generator().manual_seed(7)
    u, v = [], []
    for i in range(pairs):
        x, y = torch.randn(m, F, generator=g, dtype=f64), torch.randn(m, F, generator=g, dtype=f64)
        u.append(kid(x, y, subsets=1, subset_size=m)[0])
        # The biased V-statistic keeps k(x_i, x_i) and k(y_i, y_i) in the within-set means.
        v.append(float(_poly_kernel(x, x).mean() + _poly_kernel(y, y).mean() - 2 * _poly_kernel(x, y).mean()))
    u, v = torch.tensor(u), torch.tensor(v)
    se = float(u.std() / math.sqrt(pairs))
    assert abs(float(u.mean())) < 3 * se
    assert float(v.mean()) > 20 * se


def test_kid_of_different_distributions_is_positive():
    x = _gaussian(300, torch.zeros(4), torch.eye(4), seed=8)
    y = _gaussian(300, torch.full((4,), 1.0), torch.eye(4), seed=9)
    mean, std = kid(x, y, subsets=20, subset_size=100)
    assert mean > 5 * std > 0


def test_kid_of_a_set_with_itself_follows_the_formula():
    # With subset_size >= N both subsets are all of x (permuted), so with K the
    # kernel matrix, S its sum and T its trace:
    # (S - T) / (m (m - 1)) * 2 - 2 S / m^2 = 2 (S - m T) / (m^2 (m - 1)), negative for a PSD kernel.
    x = _gaussian(30, torch.zeros(3), torch.eye(3), seed=10)
    K = _poly_kernel(x, x)
    m, S, T = 30, float(K.sum()), float(K.trace())
    expected = 2 * (S - m * T) / (m * m * (m - 1))
    mean, std = kid(x, x, subsets=5, subset_size=100)
    assert mean == pytest.approx(expected, rel=1e-9)
    assert expected < 0
    assert std is None, "every subset is the same: there is no spread to report"


def test_kid_spread_is_none_only_when_every_subset_is_the_same():
    x = _gaussian(40, torch.zeros(3), torch.eye(3), seed=13)
    y = _gaussian(60, torch.ones(3), torch.eye(3), seed=14)
    assert kid(x, y[:40], subsets=10, subset_size=100)[1] is None  # both sets fit in one subset
    assert kid(x, y, subsets=1, subset_size=20)[1] is None  # a single subset
    _, std = kid(x, y, subsets=10, subset_size=100)  # x whole every time, y's rows differ: a real spread
    assert std is not None and std > 0


def test_kid_is_deterministic_under_the_same_generator():
    x = _gaussian(200, torch.zeros(3), torch.eye(3), seed=11)
    y = _gaussian(150, torch.ones(3), torch.eye(3), seed=12)
    a = kid(x, y, subsets=5, subset_size=50, generator=torch.Generator().manual_seed(3))
    b = kid(x, y, subsets=5, subset_size=50, generator=torch.Generator().manual_seed(3))
    c = kid(x, y, subsets=5, subset_size=50, generator=torch.Generator().manual_seed(4))
    assert a == b
    assert a != c
    assert kid(x, y, subsets=5, subset_size=50) == kid(x, y, subsets=5, subset_size=50)


def test_kid_rejects_mismatched_widths():
    with pytest.raises(DataError, match="widths"):
        kid(torch.randn(10, 3), torch.randn(10, 2))


# Nearest neighbours ---------------------------------------------------------------
def test_nn_distances_on_a_line_exclude_the_row_itself():
    a = _line(0, 1, 3, 7)
    torch.testing.assert_close(nn_distances(a), torch.tensor([1.0, 1.0, 2.0, 4.0], dtype=f64))
    # An equal row elsewhere is a neighbour at distance 0; only the row itself is excluded.
    torch.testing.assert_close(nn_distances(_line(0, 0, 5)), torch.tensor([0.0, 0.0, 5.0], dtype=f64))


def test_nn_distances_to_another_set():
    torch.testing.assert_close(nn_distances(_line(0, 1, 3, 7), _line(2, 10)), torch.tensor([2.0, 1.0, 1.0, 3.0], dtype=f64))
    # In 2-D: 3-4-5 triangles.
    a = torch.tensor([[0.0, 0.0], [6.0, 8.0]])
    b = torch.tensor([[3.0, 4.0], [100.0, 0.0]])
    torch.testing.assert_close(nn_distances(a, b), torch.tensor([5.0, 5.0], dtype=f64))


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_chunking_gives_the_same_neighbours(chunk):
    a, b = _line(0, 1, 3, 7, 8), _line(2, 10, -1)
    torch.testing.assert_close(nn_distances(a, chunk=chunk), nn_distances(a))
    torch.testing.assert_close(nn_distances(a, b, chunk=chunk), nn_distances(a, b))
    torch.testing.assert_close(kth_nn_radius(a, 2, chunk=chunk), kth_nn_radius(a, 2))


def test_chunking_gives_the_same_neighbours_on_random_features(one_thread):
    a = _gaussian(300, torch.zeros(8), torch.eye(8), seed=13)
    b = _gaussian(200, torch.zeros(8), torch.eye(8), seed=14)
    torch.testing.assert_close(nn_distances(a, chunk=64), nn_distances(a))
    torch.testing.assert_close(nn_distances(a, b, chunk=64), nn_distances(a, b))
    torch.testing.assert_close(kth_nn_radius(a, 3, chunk=64), kth_nn_radius(a, 3))
    torch.testing.assert_close(nn_distances(a, b), torch.cdist(a, b).min(1).values)


def test_kth_nn_radius_on_a_line():
    # 2nd nearest other point: 0 -> {1, 3}: 3; 1 -> {1, 2}: 2; 3 -> {2, 3}: 3; 10 -> {1, 3}: 3; ...
    torch.testing.assert_close(kth_nn_radius(_line(0, 1, 3, 10, 11, 13), 2),
                               torch.tensor([3.0, 2.0, 3.0, 3.0, 2.0, 3.0], dtype=f64))
    with pytest.raises(DataError, match="rows"):
        kth_nn_radius(_line(0, 1, 3), 3)


def test_diversity_and_train_distance_on_a_line():
    assert diversity(_line(0, 1, 3, 7)) == pytest.approx((1 + 1 + 2 + 4) / 4)
    assert train_distance(_line(0, 1, 3, 7), _line(2, 10)) == pytest.approx((2 + 1 + 1 + 3) / 4)
    assert train_distance(_line(2, 10), _line(2, 10)) == 0.0  # memorised training rows
    with pytest.raises(DataError, match="rows"):
        diversity(_line(5))


# Precision and recall ---------------------------------------------------------------
def test_precision_recall_of_identical_sets_is_one():
    f = _gaussian(200, torch.zeros(3), torch.eye(3), seed=15)
    assert precision_recall(f, f.clone()) == (1.0, 1.0)


def test_precision_recall_of_a_far_away_set_is_zero():
    real = _gaussian(200, torch.zeros(3), torch.eye(3), seed=16)
    fake = _gaussian(200, torch.full((3,), 100.0), torch.eye(3), seed=17)
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_precision_recall_of_a_fake_set_covering_one_of_two_modes(one_thread):
    a = _gaussian(500, [0.0, 0.0], torch.eye(2), seed=18)
    b = _gaussian(500, [100.0, 0.0], torch.eye(2), seed=19)
    real = torch.cat([a, b])
    fake = _gaussian(500, [0.0, 0.0], torch.eye(2), seed=20)  # fresh samples of mode a only
    precision, recall = precision_recall(real, fake, k=3)
    # A few fake samples in the tails fall outside the real balls, and a few real samples of mode a outside the fake ones.
    assert precision >= 0.95
    assert 0.45 <= recall <= 0.5


def test_precision_recall_on_a_line_by_hand():
    real = _line(0, 1, 3, 10, 11, 13)
    fake = _line(0.5, 1.5, 2.5, 6, 30, 31, 32, 33)
    # k = 2. Real radii 3, 2, 3, 3, 2, 3: real manifold [-3, 6] u [7, 16]. Fake 0.5, 1.5, 2.5 and 6
    # (exactly on the ball around 3) are inside: precision 4 / 8.
    # Fake radii 2, 1, 2, 4.5, 2, 1, 1, 2: fake manifold [-1.5, 10.5] u [28, 35]. Real 0, 1, 3, 10 inside: recall 4 / 6.
    precision, recall = precision_recall(real, fake, k=2)
    assert precision == 0.5
    assert recall == pytest.approx(4 / 6)
    assert precision_recall(real, fake, k=2, chunk=3) == (precision, recall)
    # Swapping the sets swaps precision and recall.
    assert precision_recall(fake, real, k=2) == (recall, precision)
