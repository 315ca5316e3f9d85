"""Runs: train from settings (data, nets, evaluation, resume), evaluate a checkpoint.

This is where the pieces meet: the registries turn settings into a dataset,
an adapter and nets; the engine trains them. Recipes and the command line
call these functions.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch

from multigan.config import EvalConfig, RunConfig
from multigan.engine import distributed
from multigan.engine.protocol import Modality
from multigan.engine.checkpoint import latest_checkpoint, load_checkpoint
from multigan.errors import CheckpointError, ConfigError
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


def start_settings(base: RunConfig, out_dir: str | Path, resume: str | Path | None) -> tuple[RunConfig, Path | None]:
    """The settings a run starts from, and the checkpoint it continues (None: a fresh run).

    `resume` is None, "latest" (the newest checkpoint in `out_dir`) or a
    checkpoint file. A resumed run goes on with its checkpoint's settings,
    not `base`: the caller's flags then go on top of them.
    """
    if resume is None:
        return base, None
    path = latest_checkpoint(out_dir) if str(resume) == "latest" else Path(resume)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    return RunConfig.from_json(load_checkpoint(path)["config"]), path


def evaluation_path(checkpoint: str | Path, out: str | Path | None = None) -> Path:
    """Where `evaluate` writes its figures: `out` if given, else RUN/evaluation.json for a run folder or a
    checkpoint in RUN/checkpoints/, else NAME-evaluation.json beside any other checkpoint file."""
    if out is not None:
        return Path(out)
    path = Path(checkpoint)
    if path.is_dir():
        return path / "evaluation.json"
    if path.parent.name == "checkpoints":
        return path.parent.parent / "evaluation.json"
    return path.with_name(f"{path.stem}-evaluation.json")


def train_run(cfg: RunConfig, out_dir: str | Path, *, resume: str | Path | None = None, progress: bool = True) -> Path | None:
    """Load the data, build the networks and train; returns the last checkpoint (None on ranks other than 0).

    The run stores its settings with absolute paths. A resumed run keeps the
    adapter of its checkpoint (for sounds: the mel statistics it trained
    with), whatever data it is pointed at now. A run that fails before its
    first record leaves no folder behind, nor the parents it made.
    """
    from multigan.engine.maintenance import RunFolder
    from multigan import tensorboard
    from multigan.engine.trainer import refuse_existing, train

    cfg = cfg.with_absolute_paths()
    world = distributed.current()
    out_dir = Path(out_dir)
    made = _missing(Path(os.path.abspath(out_dir)).parents)  # what acquire() creates above the folder, deepest first
    # The folder first: another run in it, or checkpoints without --resume, are refused before the data loads.
    folder = RunFolder(out_dir, writer=world.is_main)
    try:
        folder.acquire()
        refuse_existing(folder, resume)
        if cfg.train.tensorboard:
            tensorboard.require()  # a missing package is said before the data loads
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
        if world.is_main and not out_dir.exists():
            for parent in made:
                try:
                    parent.rmdir()
                except OSError:  # not empty (another run's), or gone
                    break


def _missing(parents) -> list[Path]:
    """The leading run of `parents` (deepest first) that do not exist yet."""
    missing = []
    for parent in parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def train_and_sample(cfg: RunConfig, out_dir: str | Path, *, n_samples: int, resume: str | Path | None = None,
                     progress: bool = True) -> tuple[Path | None, list[Path]]:
    """A recipe's run: train (as `train_run`), then write `n_samples` samples from the last checkpoint into
    OUT/samples. Returns the last checkpoint and the files written (None and none on ranks other than 0,
    which neither hold the checkpoint's path nor write)."""
    from multigan.generate import generate

    if cfg.data.audio is not None:
        a = cfg.data.audio
        log.info("%s: clips resampled to %d Hz, %d mels x %d frames (%.2f s); WAVs are written at %d Hz",
                 cfg.name, a.sample_rate, a.n_mels, a.frames, a.length / a.sample_rate, a.sample_rate)
    last = train_run(cfg, out_dir, resume=resume, progress=progress)
    if last is None:
        return None, []
    return last, generate(restore(last), n_samples, Path(out_dir) / "samples", seed=0)


def make_evaluator(cfg: EvalConfig, modality: Modality, dataset, *, device: str | torch.device = "cpu", seed: int = 0,
                   truncation: float | None = None):
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
    return Evaluator(modality, extractor, reference, n=cfg.n, batch_size=cfg.batch_size, seed=seed, truncation=truncation)


def evaluate_checkpoint(path: str | Path, *, n: int = 2000, data_root: str | None = None, features: str = "",
                        device: str | torch.device = "cpu", seed: int = 0, progress: bool = True,
                        truncation: float | None = None) -> dict[str, Any]:
    """Figures of a checkpoint's EMA generator against the data it was trained on (or `data_root`),
    with the feature network used and, when the data looks unlike its training data, a warning.
    `truncation`: measure the samples `generate --truncation` writes."""
    from multigan.metrics.features import mismatch_warning

    restored = restore(path, device=device)
    data = restored.config.data if data_root is None else dataclasses.replace(restored.config.data, root=data_root)
    dataset, _ = load_data(data, progress=progress)
    evaluator = make_evaluator(EvalConfig(n=n, features=features), restored.modality, dataset, device=device, seed=seed,
                               truncation=truncation)
    figures = evaluator(restored.G, restored.label_mix)
    features_path = feature_net_path(restored.modality.name, features, restored.modality.shape)
    return {
        "checkpoint": str(restored.path.resolve()),
        "step": restored.step,
        **figures,
        "seed": seed,
        # How a conditional G was given its classes: in the mix its checkpoint keeps, or every class in turn.
        "label_draw": ("data" if restored.label_mix is not None else "in turn") if getattr(restored.G, "n_classes", 0) else None,
        "reference_items": len(evaluator.reference),
        "reference_data": str(data.root or data.source),
        "features": str(features_path),
        "features_test_accuracy": evaluator.extractor.test_accuracy,
        "features_warning": mismatch_warning(evaluator.extractor, evaluator.reference.probs, features_path.name),
    }
