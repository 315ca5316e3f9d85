"""Scores from a classifier's class probabilities on generated samples."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from multigan.errors import DataError

_SUM_TOL = 1e-3  # rows of float16/float32 softmax outputs sum to 1 within this


def _check_probs(probs: Tensor) -> Tensor:
    """Validated class probabilities [N, K] in float64."""
    if not isinstance(probs, Tensor):
        raise DataError(f"class probabilities must be a torch tensor [N, K], got {type(probs).__name__}")
    if probs.ndim != 2 or probs.shape[0] < 1 or probs.shape[1] < 1:
        raise DataError(f"class probabilities must be [N, K] with N, K >= 1, got shape {list(probs.shape)}")
    p = probs.double()
    if not torch.isfinite(p).all():
        raise DataError("class probabilities contain NaN or infinite values")
    if (p < 0).any():
        raise DataError("class probabilities contain negative values (logits instead of softmax outputs?)")
    worst = float((p.sum(1) - 1).abs().max())
    if worst > _SUM_TOL:
        raise DataError(f"rows of class probabilities must sum to 1; one is off by {worst:.3g}")
    return p


def classifier_score(probs: Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception score (Salimans et al. 2016) of class probabilities p(y|x) [N, K]: (mean, standard error).

    The rows are cut into `splits` contiguous parts (clamped to N; sizes
    differ by at most one row when N is not a multiple). Per part:
    exp(mean_x KL(p(y|x) || p(y))) with p(y) the part's mean row. The
    standard error is std (ddof=1) / sqrt(splits), and 0 for one split.
    """
    p = _check_probs(probs)
    if splits < 1:
        raise ValueError(f"splits must be >= 1, not {splits}")
    n = p.shape[0]
    splits = min(splits, n)
    scores = []
    for s in range(splits):
        part = p[s * n // splits:(s + 1) * n // splits]  # [n_s, K]
        py = part.mean(0, keepdim=True)  # [1, K]
        # xlogy(0, .) = 0, so zero probabilities need no epsilon; where p(y|x) > 0, p(y) > 0 too.
        kl = (torch.xlogy(part, part) - torch.xlogy(part, py)).sum(1)  # [n_s]
        scores.append(kl.mean().exp())
    scores = torch.stack(scores)
    se = float(scores.std(correction=1)) / math.sqrt(splits) if splits > 1 else 0.0
    return float(scores.mean()), se


def class_coverage(probs: Tensor, *, min_share: float = 0.1) -> tuple[int, float]:
    """(classes predicted at least min_share / K of the time, entropy in bits of the predicted-class histogram).

    Predictions are the argmax of probs [N, K]. Uniform predictions over K
    classes give (K, log2 K); a single class gives (1, 0.0).
    """
    p = _check_probs(probs)
    if min_share <= 0:
        raise ValueError(f"min_share must be > 0, not {min_share}")
    n, K = p.shape
    counts = torch.bincount(p.argmax(1), minlength=K).double()  # [K]
    covered = int((counts * K >= min_share * n).sum())  # counts / n >= min_share / K, without dividing
    share = counts / n
    entropy = -float(torch.xlogy(share, share).sum()) / math.log(2)
    return covered, entropy + 0.0  # + 0.0 turns -0.0 into 0.0
