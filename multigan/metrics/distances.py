"""Distances between sets of features: FID, KID, nearest neighbours, precision/recall.

Every function takes feature tensors [N, F] on any device. Moments and
kernels are computed in float64; pairwise distances in the inputs' precision
(float64 for float64 inputs, else float32: four times faster on a CPU, and
plenty for ranking neighbours). Pairwise work runs in [chunk, chunk] blocks,
so memory stays bounded (128 MB at the default chunk of 4096) however many
rows the sets have.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from multigan.errors import DataError

_STATS_CHUNK = 8192  # rows per block when accumulating mean and covariance
_KID_CHUNK = 4096  # rows per kernel block inside one KID subset


def _check_features(f: Tensor, name: str, min_rows: int) -> None:
    if not isinstance(f, Tensor):
        raise DataError(f"{name} must be a torch tensor of features [N, F], got {type(f).__name__}")
    if f.ndim != 2:
        raise DataError(f"{name} must be features [N, F], got shape {list(f.shape)}")
    if f.shape[0] < min_rows:
        raise DataError(f"{name} has {f.shape[0]} rows; at least {min_rows} are needed")
    if f.shape[1] < 1:
        raise DataError(f"{name} has no feature columns")
    if not torch.isfinite(f).all():
        raise DataError(f"{name} contains NaN or infinite values")


def _check_widths(a: Tensor, b: Tensor, names: str) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise DataError(f"{names} have different feature widths: {a.shape[-1]} and {b.shape[-1]}")


def _check_chunk(chunk: int) -> None:
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, not {chunk}")


# Gaussian statistics and the Frechet distance -----------------------------------
def feature_stats(f: Tensor) -> tuple[Tensor, Tensor]:
    """Mean [F] and unbiased covariance [F, F] (divided by N - 1) of f [N, F], in float64."""
    _check_features(f, "features", 2)
    n = f.shape[0]
    mu = sum(f[i:i + _STATS_CHUNK].double().sum(0) for i in range(0, n, _STATS_CHUNK)) / n
    # Two passes (mean, then centred products) avoid the cancellation of E[x x^T] - mu mu^T.
    cov = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64, device=f.device)
    for i in range(0, n, _STATS_CHUNK):
        x = f[i:i + _STATS_CHUNK].double() - mu  # [chunk, F]
        cov += x.T @ x
    return mu, cov / (n - 1)


def _sqrtm_psd(s: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix [F, F]."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) between two Gaussians (Heusel et al. 2017)."""
    for name, mu, sigma in (("first", mu1, sigma1), ("second", mu2, sigma2)):
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise DataError(f"{name} Gaussian needs mean [F] and covariance [F, F], "
                            f"got {list(mu.shape)} and {list(sigma.shape)}")
        if not (torch.isfinite(mu).all() and torch.isfinite(sigma).all()):
            raise DataError(f"{name} Gaussian's mean or covariance contains NaN or infinite values")
    _check_widths(mu1, mu2, "the two Gaussians")
    mu1, mu2 = mu1.double(), mu2.double().to(mu1.device)
    s1, s2 = sigma1.double(), sigma2.double().to(mu1.device)
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    # S1 S2 = A (A S2) with A = S1^{1/2}, and A (A S2) has the eigenvalues of
    # (A S2) A = A S2 A, which is symmetric PSD: eigvalsh is stable where a
    # general sqrtm of the non-symmetric S1 S2 is not.
    a = _sqrtm_psd(s1)
    m = a @ s2 @ a
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    d = (mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt
    return max(float(d), 0.0)


def fid(f1: Tensor, f2: Tensor) -> float:
    """Frechet distance between the Gaussians fitted to feature sets f1 [N1, F] and f2 [N2, F]."""
    _check_features(f1, "first feature set", 2)
    _check_features(f2, "second feature set", 2)
    _check_widths(f1, f2, "the two feature sets")
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


# Kernel inception distance --------------------------------------------------------
def _poly_kernel_sum(x: Tensor, y: Tensor) -> Tensor:
    """Sum over all pairs of k(x_i, y_j) = (x_i . y_j / F + 1)^3; x: [n, F], y: [m, F] float64."""
    total = x.new_zeros(())
    for i in range(0, x.shape[0], _KID_CHUNK):
        for j in range(0, y.shape[0], _KID_CHUNK):
            total += (x[i:i + _KID_CHUNK] @ y[j:j + _KID_CHUNK].T / x.shape[1] + 1).pow(3).sum()
    return total


def kid(f1: Tensor, f2: Tensor, *, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float | None]:
    """Kernel inception distance (Binkowski et al. 2018): (mean, std) of the unbiased MMD^2 over subsets.

    Each subset draws min(subset_size, N1, N2) rows without replacement from
    each set. The std is the population std (ddof=0) over subsets, as in the
    reference implementations. It is None when there is no spread to
    measure: one subset, or both sets no larger than `subset_size`, when
    every subset holds all rows of both and gives the same value. The
    default generator is seeded with 0, so repeated calls agree.
    """
    _check_features(f1, "first feature set", 2)
    _check_features(f2, "second feature set", 2)
    _check_widths(f1, f2, "the two feature sets")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"KID needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    n1, n2 = f1.shape[0], f2.shape[0]
    m = min(subset_size, n1, n2)
    F = f1.shape[1]
    whole = m == n1 and m == n2  # every subset is both sets, permuted: one value, no spread
    mmds = []
    for _ in range(1 if whole else subsets):
        x = f1[torch.randperm(n1, generator=generator)[:m].to(f1.device)].double()  # [m, F]
        y = f2[torch.randperm(n2, generator=generator)[:m].to(f2.device)].double().to(x.device)
        # Unbiased: the diagonals k(x_i, x_i), k(y_i, y_i) are left out of the within-set means.
        kxx_diag = ((x * x).sum(1) / F + 1).pow(3).sum()
        kyy_diag = ((y * y).sum(1) / F + 1).pow(3).sum()
        mmd = ((_poly_kernel_sum(x, x) - kxx_diag + _poly_kernel_sum(y, y) - kyy_diag) / (m * (m - 1))
               - 2 * _poly_kernel_sum(x, y) / (m * m))
        mmds.append(mmd)
    mmds = torch.stack(mmds)
    return float(mmds.mean()), None if len(mmds) == 1 else float(mmds.std(correction=0))


# Nearest neighbours ---------------------------------------------------------------
def _pair_dtype(a: Tensor, b: Tensor) -> torch.dtype:
    return torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32


def _knn_sq(a: Tensor, b: Tensor | None, k: int, chunk: int) -> Tensor:
    """Squared distances [N, k], ascending, from each row of a to its k nearest rows of b.

    b None: neighbours among the other rows of a (a row is never its own
    neighbour, but an equal row elsewhere is, at distance 0).
    """
    exclude_self = b is None
    b = a if b is None else b.to(a.device)
    n, m = a.shape[0], b.shape[0]
    dtype = _pair_dtype(a, b)
    out = []
    for i in range(0, n, chunk):
        x = a[i:i + chunk].to(dtype)  # [c, F]
        xx = (x * x).sum(1)
        best = torch.full((x.shape[0], k), math.inf, dtype=dtype, device=a.device)
        for j in range(0, m, chunk):
            y = b[j:j + chunk].to(dtype)
            d2 = (xx[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T).clamp_(min=0)  # [c, c']
            if exclude_self and i == j:  # a and b are chunked alike: the block's diagonal is the row itself
                d2.diagonal().fill_(math.inf)
            best = torch.cat([best, d2], 1).topk(k, dim=1, largest=False).values
        out.append(best)
    return torch.cat(out)


def nn_distances(a: Tensor, b: Tensor | None = None, *, chunk: int = 4096) -> Tensor:
    """Euclidean distance [N] (float64) from each row of a [N, F] to its nearest row of b [M, F].

    With b None, to the nearest other row of a.
    """
    _check_chunk(chunk)
    _check_features(a, "a", 2 if b is None else 1)
    if b is not None:
        _check_features(b, "b", 1)
        _check_widths(a, b, "a and b")
    return _knn_sq(a, b, 1, chunk)[:, 0].double().sqrt()


def kth_nn_radius(f: Tensor, k: int, *, chunk: int = 4096) -> Tensor:
    """Distance [N] (float64) from each row of f [N, F] to its k-th nearest other row."""
    _check_chunk(chunk)
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")
    _check_features(f, "features", k + 1)
    return _knn_sq(f, None, k, chunk)[:, k - 1].double().sqrt()


def _share_inside(points: Tensor, centres: Tensor, radii_sq: Tensor, chunk: int) -> float:
    """Share of points [N, F] inside at least one ball (centres [M, F], squared radii [M])."""
    inside = []
    dtype = _pair_dtype(points, centres)
    for i in range(0, points.shape[0], chunk):
        x = points[i:i + chunk].to(dtype)
        xx = (x * x).sum(1)
        hit = torch.zeros(x.shape[0], dtype=torch.bool, device=points.device)
        for j in range(0, centres.shape[0], chunk):
            y = centres[j:j + chunk].to(dtype)
            d2 = (xx[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T).clamp_(min=0)
            hit |= (d2 <= radii_sq[j:j + chunk][None, :]).any(1)
            if hit.all():
                break
        inside.append(hit)
    return float(torch.cat(inside).double().mean())


def precision_recall(real: Tensor, fake: Tensor, *, k: int = 3, chunk: int = 4096) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of fake [N, F] against real [M, F].

    A set's manifold is the union of balls around its rows, each with radius
    the distance to that row's k-th nearest other row. Precision: share of
    fake rows inside the real manifold; recall: share of real rows inside the
    fake manifold. Points on a ball's surface count as inside.
    """
    _check_chunk(chunk)
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")
    _check_features(real, "real features", k + 1)
    _check_features(fake, "fake features", k + 1)
    _check_widths(real, fake, "real and fake features")
    fake = fake.to(real.device)
    # Radii stay squared and come from the same expansion as the distances they are compared with.
    real_r2 = _knn_sq(real, None, k, chunk)[:, k - 1]
    fake_r2 = _knn_sq(fake, None, k, chunk)[:, k - 1]
    return _share_inside(fake, real, real_r2, chunk), _share_inside(real, fake, fake_r2, chunk)


def diversity(fake: Tensor) -> float:
    """Mean distance from each row to its nearest other row (WaveGAN's D_self, Donahue et al. 2019)."""
    return float(nn_distances(fake).mean())


def train_distance(fake: Tensor, train: Tensor) -> float:
    """Mean distance from each fake row to its nearest training row (WaveGAN's D_train).

    Values well below the real data's own figure (e.g. held-out rows against
    the training set) point at memorisation.
    """
    return float(nn_distances(fake, train).mean())
