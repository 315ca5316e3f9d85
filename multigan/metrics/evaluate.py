"""Evaluation of a generator against a reference dataset, on a feature network's features.

Generated samples go through the modality's own decoder (for sounds: inverse
mel and Griffin-Lim to waveforms) and then through the feature network's
input transform (for sounds: a fresh log-mel analysis), so the figures
measure the whole pipeline a listener hears.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from multigan.generate import labels_for, latents, synthesize
from multigan.metrics.distances import diversity, fid, kid, precision_recall, train_distance
from multigan.metrics.feature_net import FeatureExtractor
from multigan.metrics.scores import class_coverage, classifier_score
from multigan.engine.protocol import Modality

# name -> (label, lower is better); the order of tables and reports. FID and KID on a shipped
# classifier's features compare runs measured with the same network only, not published Inception FIDs.
METRICS: dict[str, tuple[str, bool]] = {
    "fid": ("classifier-feature FID", True),
    "kid": ("classifier-feature KID", True),
    "classifier_score": ("classifier score", False),
    "classes": ("classes", False),
    "class_entropy": ("class entropy (bits)", False),
    "precision": ("precision", False),
    "recall": ("recall", False),
    "diversity": ("diversity (NN distance)", False),
    "train_distance": ("distance to training set", False),
    "inception_fid": ("Inception FID", True),
    "inception_kid": ("Inception KID", True),
    "inception_score": ("Inception score", False),
}
# a metric's spread, printed beside it ("± ...") and stored under its own key
SPREADS = {"kid": "kid_std", "classifier_score": "classifier_score_se", "inception_kid": "inception_kid_std",
           "inception_score": "inception_score_std"}


def metric_label(key: str) -> str:
    """The words a table and evaluation.json show for a metric: "classifier-feature FID (lower is better)"."""
    label, lower = METRICS[key]
    return label + (" (lower is better)" if lower else "")


def metric_labels(figures: dict) -> dict[str, str]:
    """Metric key -> label, for the metrics in `figures`, in table order."""
    return {k: metric_label(k) for k in METRICS if k in figures}


@dataclass
class FeatureSet:
    """Features [N, F] and class probabilities [N, K] of one set of samples, on the CPU."""

    features: Tensor
    probs: Tensor

    def __len__(self) -> int:
        return len(self.features)

    @classmethod
    def join(cls, parts: list[tuple[Tensor, Tensor]]) -> FeatureSet:
        """One set from (features, probabilities) of consecutive batches."""
        return cls(torch.cat([f for f, _ in parts]), torch.cat([p for _, p in parts]))

    def subset(self, n: int, seed: int = 0) -> FeatureSet:
        """At most n rows, drawn without replacement (all rows, in order, when there are not more)."""
        if n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return FeatureSet(self.features[idx], self.probs[idx])


def measure(samples: FeatureSet, reference: FeatureSet, *, pr_max: int = 10_000,
            seed: int = 0) -> dict[str, float | None]:
    """Every metric of `samples` against `reference` (the training data, usually).

    Precision and recall compare at most `pr_max` rows of each set, since
    their k-NN radii cost N^2 distances. `kid_std` is None when both sets fit
    in one KID subset (no spread to measure).
    """
    kid_mean, kid_std = kid(samples.features, reference.features, generator=torch.Generator().manual_seed(seed))
    # Splits are contiguous: shuffle so that a set stored in class order (a dataset) is scored like a random one.
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))
    score, score_se = classifier_score(samples.probs[order])
    classes, entropy = class_coverage(samples.probs)
    precision, recall = precision_recall(reference.subset(pr_max, seed).features, samples.subset(pr_max, seed).features)
    return {
        "fid": fid(samples.features, reference.features),
        "kid": kid_mean, "kid_std": kid_std,
        "classifier_score": score, "classifier_score_se": score_se,
        "classes": classes, "class_entropy": entropy,
        "precision": precision, "recall": recall,
        "diversity": diversity(samples.features),
        "train_distance": train_distance(samples.features, reference.features),
    }


def reference_set(extractor: FeatureExtractor, dataset, *, cache_dir: str | os.PathLike | None = None,
                  batch_size: int = 500) -> FeatureSet:
    """Features of every item of `dataset`, computed once and cached.

    The cache key is the feature network's digest and a hash of the network
    inputs themselves, so any change of data, crop or analysis settings
    misses the cache instead of reading stale features.
    """
    inputs = list(extractor.input.dataset_batches(dataset, batch_size))
    digest = hashlib.sha256(extractor.digest.encode())
    for x in inputs:
        digest.update(x.detach().cpu().contiguous().numpy().tobytes())
    saved = cached_tensors(cache_dir, digest.hexdigest()[:24], lambda: _as_dict(
        FeatureSet.join([extractor.embed(x, batch_size) for x in inputs])))
    return FeatureSet(saved["features"], saved["probs"])


def _as_dict(s: FeatureSet) -> dict[str, Tensor]:
    return {"features": s.features, "probs": s.probs}


def cached_tensors(cache_dir: str | os.PathLike | None, key: str,
                   compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    """`compute()`, kept in `cache_dir/eval-reference/KEY.pt` and read from there while the file is sound.

    `key` must identify everything the tensors depend on (weights and data).
    """
    path = None if cache_dir is None else Path(cache_dir) / "eval-reference" / f"{key}.pt"
    if path is not None:
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # no cache yet, or a damaged one (the loader raises many kinds): compute again
            pass
    tensors = compute()
    if path is not None:
        from multigan.data.cache import write_cache_file

        write_cache_file(path, lambda f: torch.save(tensors, f), "the evaluation reference cache")
    return tensors


class Evaluator:
    """Measures a generator: n samples from fixed noise, decoded, embedded, compared with the reference.

    Calling it returns the figures of `measure`, plus `diversity_ratio` (the
    samples' diversity over that of as many reference items; near 0 means
    collapse), `n` and `seconds`. `truncation` measures the samples that
    `generate --truncation` writes (noise beyond +-psi redrawn). A
    conditional G is given every class in turn, or with `label_mix`
    [n_classes] the classes in those proportions (`labels_in_proportion`):
    when the classes are uneven, the mix G was trained with measures the
    distribution it was trained to match rather than a class-balanced one.
    """

    def __init__(self, modality: Modality, extractor: FeatureExtractor, reference: FeatureSet, *, n: int,
                 batch_size: int = 250, seed: int = 0, truncation: float | None = None):
        self.modality, self.extractor, self.reference = modality, extractor, reference
        self.n, self.batch_size, self.seed, self.truncation = n, batch_size, seed, truncation
        self.reference_diversity = diversity(reference.subset(n, seed).features)

    @torch.no_grad()
    def sample(self, G: nn.Module, label_mix: Tensor | None = None) -> FeatureSet:
        """Features of n samples of G (noise drawn on the CPU from the fixed seed; labels as the class says)."""
        z = latents(self.n, G.z_dim, self.seed, self.truncation)  # [n, z_dim]
        y = labels_for(G, self.n, mix=label_mix)
        parts = []
        for i in range(0, self.n, self.batch_size):
            x = synthesize(G, z[i:i + self.batch_size], None if y is None else y[i:i + self.batch_size], self.batch_size)
            parts.append(self.extractor.embed_artifacts(self.modality.decode(x)))
        return FeatureSet.join(parts)

    def __call__(self, G: nn.Module, label_mix: Tensor | None = None) -> dict[str, float]:
        t0 = time.perf_counter()
        was_training = G.training
        G.eval()
        try:
            figures = measure(self.sample(G, label_mix), self.reference, seed=self.seed)
        finally:
            G.train(was_training)
        figures["diversity_ratio"] = figures["diversity"] / max(self.reference_diversity, 1e-12)
        figures["n"] = self.n
        if self.truncation is not None:
            figures["truncation"] = self.truncation
        figures["seconds"] = time.perf_counter() - t0
        return figures


def format_table(columns: dict[str, dict[str, float]]) -> str:
    """Sets of figures (column label -> measure() output) as an aligned text table, one row per metric."""
    keys = [k for k in METRICS if any(k in c for c in columns.values())]
    head = ["metric"] + list(columns)
    body = [[metric_label(k)] + [_cell(c, k) for c in columns.values()] for k in keys]
    widths = [max(len(line[i]) for line in [head] + body) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [head] + body]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


_DECIMALS = {"fid": 2, "inception_fid": 2, "kid": 4, "inception_kid": 4, "classifier_score": 2, "inception_score": 2,
             "classes": 0}


def _cell(figures: dict[str, float], key: str) -> str:
    if key not in figures:
        return "-"
    decimals = _DECIMALS.get(key, 3)
    text = f"{figures[key]:.{decimals}f}"
    if key in SPREADS:
        spread = figures.get(SPREADS[key])  # None: one KID subset held every row, so there is no spread
        text += " ± " + ("n/a" if spread is None else f"{spread:.{decimals}f}")
    return text
