"""Classifier score and class coverage on hand-built class probabilities."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from multigan.errors import DataError
from multigan.metrics.scores import class_coverage, classifier_score

K = 5


def _one_hot(classes) -> torch.Tensor:
    return F.one_hot(torch.as_tensor(classes), K).float()


# Classifier (Inception) score ---------------------------------------------------
def test_confident_predictions_spread_over_k_classes_score_k():
    probs = _one_hot(torch.arange(10 * K * 4) % K)  # each of the 10 splits sees every class 4 times
    mean, se = classifier_score(probs, splits=10)
    assert mean == pytest.approx(K, rel=1e-12)
    assert se == 0.0  # identical splits


def test_constant_one_hot_scores_one():
    assert classifier_score(_one_hot([2] * 40), splits=4) == (1.0, 0.0)


def test_uniform_probabilities_score_one():
    mean, se = classifier_score(torch.full((40, K), 1 / K), splits=4)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert se == pytest.approx(0.0, abs=1e-12)


def test_split_scores_and_their_standard_error_by_hand():
    # Split 1 (rows 0-3): one-hot over 2 classes -> exp(log 2) = 2. Split 2 (rows 4-7): one class -> 1.
    probs = _one_hot([0, 1, 0, 1, 3, 3, 3, 3])
    mean, se = classifier_score(probs, splits=2)
    assert mean == pytest.approx(1.5)
    assert se == pytest.approx(math.sqrt(0.5) / math.sqrt(2))  # std(ddof=1) of {2, 1} / sqrt(2)


def test_splits_are_clamped_to_the_number_of_rows():
    # 3 rows, 10 splits -> 3 splits of one row each; a single row always scores 1.
    assert classifier_score(_one_hot([0, 1, 2]), splits=10) == (1.0, 0.0)


@pytest.mark.parametrize("probs, message", [
    (torch.full((4, K), 0.3), "sum to 1"),
    (torch.full((K,), 1 / K), r"\[N, K\]"),
    (torch.tensor([[1.5, -0.5], [0.5, 0.5]]), "negative"),
    (torch.tensor([[math.nan, 1.0]]), "NaN"),
])
def test_bad_probabilities_are_rejected(probs, message):
    with pytest.raises(DataError, match=message):
        classifier_score(probs)
    with pytest.raises(DataError, match=message):
        class_coverage(probs)


# Class coverage ---------------------------------------------------------------------
def test_uniform_predictions_cover_every_class():
    covered, entropy = class_coverage(_one_hot(torch.arange(4 * K) % K))
    assert covered == K
    assert entropy == pytest.approx(math.log2(K))


def test_a_single_predicted_class_covers_one():
    assert class_coverage(_one_hot([4] * 12)) == (1, 0.0)


def test_coverage_of_a_mixed_histogram_by_hand():
    # 20 predictions over K = 5: counts 10, 5, 4, 1, 0 -> shares 1/2, 1/4, 1/5, 1/20, 0.
    # Uniform share 1/5; with min_share 0.5 a class needs >= 1/10 (2 predictions): three classes.
    classes = [0] * 10 + [1] * 5 + [2] * 4 + [3] * 1
    probs = _one_hot(classes) * 0.5 + 0.1  # argmax unchanged, rows still sum to 1
    covered, entropy = class_coverage(probs, min_share=0.5)
    shares = [0.5, 0.25, 0.2, 0.05]
    assert covered == 3
    assert entropy == pytest.approx(-sum(s * math.log2(s) for s in shares))
    # The default min_share 0.1 asks for >= 1/50 of the predictions: the single prediction of class 3 counts.
    assert class_coverage(probs)[0] == 4
    # Exactly on the threshold counts: class 1 has 5/20 = 1.25 x the uniform share.
    assert class_coverage(probs, min_share=1.25)[0] == 2
