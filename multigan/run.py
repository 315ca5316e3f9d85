"""Runs: train from settings (data, nets, evaluation, resume), evaluate a checkpoint.

This is where the pieces meet: the registries turn settings into a dataset,
an adapter and nets; the engine trains them. Recipes and the command line
call these functions.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from multigan.config import EvalConfig, RunConfig
from multigan.engine import distributed
from multigan.engine.protocol import Modality
from multigan.errors import ConfigError
from multigan.registry import (FEATURE_INPUTS, build_nets, check_net_size, feature_net_path, load_data,
                               modality_from_state)
from multigan.restore import restore

log = logging.getLogger("multigan")


def count_classes(dataset) -> int:
    """Number of classes of a dataset's labels (sub-folders, file names, MNIST digits), 0 without labels."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return 0
    names = getattr(dataset, "class_names", None)
    return len(names) if names else int(labels.max()) + 1


def resolve(cfg: RunConfig, dataset) -> RunConfig:
    """The settings with everything that depends on the data settled: `model.n_classes=-1` becomes a count."""
    if cfg.model.n_classes >= 0:
        return cfg
    cfg = cfg.override("model.n_classes", count_classes(dataset))
    log.info("model.n_classes=-1: %s", f"conditioned on {cfg.model.n_classes} classes of the data's labels"
             if cfg.model.n_classes else "the data has no labels, so the networks are unconditional")
    return cfg


def train_run(cfg: RunConfig, out_dir: str | Path, *, resume: str | Path | None = None, progress: bool = True) -> Path | None:
    """Load the data, build the networks and train; returns the last checkpoint (None on ranks other than 0).

    A resumed run keeps the adapter of its checkpoint (for sounds: the mel
    statistics it trained with), whatever data it is pointed at now.
    """
    from multigan.engine.checkpoint import load_checkpoint
    from multigan.engine.maintenance import RunFolder
    from multigan.engine.trainer import refuse_existing, train

    world = distributed.current()
    # The folder first: another run in it, or checkpoints without --resume, are refused before the data loads.
    folder = RunFolder(out_dir, writer=world.is_main)
    folder.acquire()
    try:
        refuse_existing(folder, resume)
        dataset, modality = load_data(cfg.data, progress=progress and world.is_main)
        if resume is not None:
            saved = load_checkpoint(resume)["modality"]
            if saved["name"] == modality.name:
                modality = modality_from_state(saved["name"], saved["state"])
        cfg = resolve(cfg, dataset)
        check_net_size(cfg.model, modality.shape)  # before the evaluator computes its reference features
        evaluate = None
        if cfg.eval.every and world.is_main:  # evaluation runs on rank 0 while the others wait
            evaluate = make_evaluator(cfg.eval, modality, dataset, device=distributed.pick_device(cfg.train.device, world))
        if cfg.model.n_classes:
            from multigan.data.tensors import Labelled

            dataset = Labelled(dataset, cfg.model.n_classes)
        torch.manual_seed(cfg.train.seed)  # the initial weights follow the seed too
        G, D = build_nets(cfg.model, modality.shape)
        return train(cfg, modality, G, D, dataset, folder, resume=resume, progress=progress, evaluate=evaluate)
    finally:
        folder.close(remove_if_unused=True)  # a failed start leaves no empty folder behind


def make_evaluator(cfg: EvalConfig, modality: Modality, dataset, *, device: str | torch.device = "cpu", seed: int = 0):
    """An `Evaluator` of generators of `modality` against `dataset` (its features are cached).

    The feature network is `cfg.features`, or the shipped one for the adapter's
    modality and sample shape; a warning is logged when the reference data
    looks unlike what that network was trained on.
    """
    from multigan.data.cache import default_cache_dir
    from multigan.metrics.evaluate import Evaluator, reference_set
    from multigan.metrics.features import load_feature_net, mismatch_warning

    path = feature_net_path(modality.name, cfg.features, modality.shape)
    extractor = load_feature_net(path, device=device)
    kind = extractor.input.kind
    if kind not in FEATURE_INPUTS.get(modality.name, (kind,)):
        raise ConfigError(f"{path} is a feature network for {kind} inputs; it cannot evaluate the {modality.name} modality")
    log.info("evaluation features: %s (trained on %s)", path.name, extractor.trained_on or "?")
    reference = reference_set(extractor, dataset, cache_dir=default_cache_dir(), batch_size=max(cfg.batch_size, 500))
    warning = mismatch_warning(extractor, reference.probs, path.name)
    if warning:
        log.warning(warning)
    return Evaluator(modality, extractor, reference, n=cfg.n, batch_size=cfg.batch_size, seed=seed)


def evaluate_checkpoint(path: str | Path, *, n: int = 2000, data_root: str | None = None, features: str = "",
                        device: str | torch.device = "cpu", seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Figures of a checkpoint's EMA generator against the data it was trained on (or `data_root`),
    with the feature network used and, when the data looks unlike its training data, a warning."""
    from multigan.metrics.features import mismatch_warning

    restored = restore(path, device=device)
    data = restored.config.data if data_root is None else dataclasses.replace(restored.config.data, root=data_root)
    dataset, _ = load_data(data, progress=progress)
    evaluator = make_evaluator(EvalConfig(n=n, features=features), restored.modality, dataset, device=device, seed=seed)
    figures = evaluator(restored.G)
    features_path = feature_net_path(restored.modality.name, features, restored.modality.shape)
    return {
        "checkpoint": str(restored.path.resolve()),
        "step": restored.step,
        **figures,
        "seed": seed,
        "reference_items": len(evaluator.reference),
        "reference_data": str(data.root or data.source),
        "features": str(features_path),
        "features_test_accuracy": evaluator.extractor.test_accuracy,
        "features_warning": mismatch_warning(evaluator.extractor, evaluator.reference.probs, features_path.name),
    }
