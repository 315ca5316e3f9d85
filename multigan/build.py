"""Where names in the settings become objects: the library's one registry.

The command line and the recipes call these functions; the engine below them
only ever receives objects.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multigan.config import AudioConfig, DataConfig, EvalConfig, NetConfig, RunConfig
from multigan.errors import CheckpointError, ConfigError
from multigan.modalities.base import Modality
from multigan.modalities.image import ImageModality
from multigan.modalities.mel import MelModality
from multigan.nets import dcgan

log = logging.getLogger("multigan")


def _image_data(cfg: DataConfig, progress: bool = True) -> tuple[torch.utils.data.Dataset, Modality]:
    if cfg.source == "mnist":
        from multigan.data.mnist import load_mnist

        if (cfg.channels, cfg.height, cfg.width) != (1, 28, 28):
            raise ConfigError("MNIST digits are 1x28x28: set data.channels=1, data.height=28, data.width=28, or use data.source=folder")
        dataset = load_mnist(cfg.root)
    elif cfg.source == "folder":
        from multigan.data.image_folder import load_image_folder

        if not cfg.root:
            raise ConfigError("data.source=folder needs data.root, the folder of images (--data-root)")
        dataset = load_image_folder(cfg.root, channels=cfg.channels, height=cfg.height, width=cfg.width,
                                    progress=progress)
    else:
        raise ConfigError(f"unknown image source {cfg.source!r}; known: mnist, folder")
    return dataset, ImageModality(cfg.channels, cfg.height, cfg.width)


def _mel_data(cfg: DataConfig, progress: bool = True) -> tuple[torch.utils.data.Dataset, Modality]:
    from multigan.data.audio_folder import load_clip_folder
    from multigan.data.cache import default_cache_dir
    if cfg.source != "folder":
        raise ConfigError(f"the mel modality reads a folder of clips: set data.source=folder, not {cfg.source!r}")
    if not cfg.root:
        raise ConfigError("the mel modality needs data.root, a folder of audio clips (--data-root)")
    audio = cfg.audio or AudioConfig()
    dataset = load_clip_folder(cfg.root, sample_rate=audio.sample_rate, length=audio.length, trim_db=audio.trim_db,
                               crop="random", progress=progress)
    key = json.dumps([[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in dataset.paths])
    modality = MelModality.fit(audio, dataset.waveforms, cache_dir=default_cache_dir(), cache_key=key)
    return dataset, modality


# name -> loader of (dataset, adapter) from the data settings
DATA: dict[str, Callable[..., tuple[torch.utils.data.Dataset, Modality]]] = {
    "image": _image_data,
    "mel": _mel_data,
}
# name -> adapter class, rebuilt from the state a checkpoint holds
MODALITIES: dict[str, Any] = {
    "image": ImageModality,
    "mel": MelModality,
}
# modality name -> its feature network in assets/, for evaluation
FEATURE_NETS: dict[str, str] = {
    "image": "digit-classifier.pt",
    "mel": "spoken-digit-classifier.pt",
}
# modality name -> the kind of input its feature networks read (a feature network file's `input.kind`)
FEATURE_INPUTS: dict[str, str] = {
    "image": "image",
    "mel": "audio",
}
ASSETS = Path(__file__).resolve().parents[1] / "assets"
# name -> builder of (G, D) for a sample shape
NETS: dict[str, Callable[[NetConfig, tuple[int, ...]], tuple[nn.Module, nn.Module]]] = {
    "dcgan": dcgan.build,
}


def _lookup(table: dict[str, Any], name: str, what: str):
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"unknown {what} {name!r}; known: {', '.join(sorted(table))}") from None


def load_data(cfg: DataConfig, progress: bool = True) -> tuple[torch.utils.data.Dataset, Modality]:
    """The dataset and the adapter that the data settings name."""
    return _lookup(DATA, cfg.modality, "modality")(cfg, progress=progress)


def build_nets(cfg: NetConfig, shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    return _lookup(NETS, cfg.family, "network family")(cfg, tuple(shape))


def train_run(cfg: RunConfig, out_dir: str | Path, *, resume: str | Path | None = None, progress: bool = True) -> Path:
    """Load the data, build the networks and train; returns the last checkpoint."""
    from multigan.engine.trainer import pick_device, train

    dataset, modality = load_data(cfg.data, progress=progress)
    evaluate = None
    if cfg.eval.every:
        evaluate = make_evaluator(cfg.eval, modality, dataset, device=pick_device(cfg.train.device))
    if cfg.model.n_classes < 0:
        cfg = cfg.override("model.n_classes", count_classes(dataset))
        log.info("model.n_classes=-1: %s", f"conditioned on {cfg.model.n_classes} classes of the data's labels"
                 if cfg.model.n_classes else "the data has no labels, so the networks are unconditional")
    if cfg.model.n_classes:
        from multigan.data.tensors import Labelled

        dataset = Labelled(dataset, cfg.model.n_classes)
    torch.manual_seed(cfg.train.seed)  # the initial weights follow the seed too
    G, D = build_nets(cfg.model, modality.shape)
    return train(cfg, modality, G, D, dataset, out_dir, resume=resume, progress=progress, evaluate=evaluate)


def count_classes(dataset) -> int:
    """Number of classes of a dataset's labels (sub-folders, file names, MNIST digits), 0 without labels."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return 0
    names = getattr(dataset, "class_names", None)
    return len(names) if names else int(labels.max()) + 1


def feature_net_path(modality_name: str, override: str | Path = "") -> Path:
    """The feature network file that evaluates a modality: `override`, or the one in assets/."""
    if override:
        path = Path(override).expanduser()
    else:
        path = ASSETS / _lookup(FEATURE_NETS, modality_name, "modality with a feature network")
    if not path.is_file():
        raise ConfigError(f"feature network not found: {path}")
    return path


def make_evaluator(cfg: EvalConfig, modality: Modality, dataset, *, device: str | torch.device = "cpu", seed: int = 0):
    """An `Evaluator` of generators of `modality` against `dataset` (its features are cached)."""
    from multigan.data.cache import default_cache_dir
    from multigan.metrics.evaluate import Evaluator, reference_set
    from multigan.metrics.features import load_feature_net

    path = feature_net_path(modality.name, cfg.features)
    extractor = load_feature_net(path, device=device)
    kind = extractor.input.kind
    if kind != FEATURE_INPUTS.get(modality.name, kind):
        raise ConfigError(f"{path} is a feature network for {kind} inputs; it cannot evaluate the {modality.name} modality")
    reference = reference_set(extractor, dataset, cache_dir=default_cache_dir(), batch_size=max(cfg.batch_size, 500))
    return Evaluator(modality, extractor, reference, n=cfg.n, batch_size=cfg.batch_size, seed=seed)


@dataclass
class Restored:
    """What generation needs, rebuilt from a checkpoint alone."""

    config: RunConfig
    modality: Modality
    G: nn.Module  # the EMA generator, in eval mode
    step: int
    path: Path


def restore(path: str | Path, device: str | torch.device = "cpu") -> Restored:
    """Rebuild the adapter and the EMA generator from a checkpoint, without any dataset."""
    from multigan.engine.checkpoint import latest_checkpoint, load_checkpoint
    from multigan.metrics.features import KIND as FEATURE_NET

    path = Path(path)
    if path.is_dir():
        path = latest_checkpoint(path)
    state = load_checkpoint(path)
    if state.get("kind") == FEATURE_NET:
        raise CheckpointError(f"{path} is a feature network (for --features), not a training checkpoint")
    try:
        cfg = RunConfig.from_json(state["config"])
        modality = _lookup(MODALITIES, state["modality"]["name"], "modality").from_state(state["modality"]["state"])
        G, _ = build_nets(cfg.model, modality.shape)
        G.load_state_dict(state["G_ema"])
    except (KeyError, RuntimeError, ConfigError) as e:
        raise CheckpointError(f"{path} does not match this version of multigan: {str(e).splitlines()[0][:200]}") from None
    return Restored(cfg, modality, G.to(device).eval(), int(state["step"]), path)


def evaluate_checkpoint(path: str | Path, *, n: int = 2000, data_root: str | None = None, features: str = "",
                        device: str | torch.device = "cpu", seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Figures of a checkpoint's EMA generator against the data it was trained on (or `data_root`)."""
    import dataclasses

    restored = restore(path, device=device)
    data = restored.config.data if data_root is None else dataclasses.replace(restored.config.data, root=data_root)
    dataset, _ = load_data(data, progress=progress)
    evaluator = make_evaluator(EvalConfig(n=n, features=features), restored.modality, dataset, device=device, seed=seed)
    figures = evaluator(restored.G)
    return {
        "checkpoint": str(restored.path.resolve()),
        "step": restored.step,
        **figures,
        "seed": seed,
        "reference_items": len(evaluator.reference),
        "reference_data": str(data.root or data.source),
        "features": str(feature_net_path(restored.modality.name, features)),
        "features_test_accuracy": evaluator.extractor.test_accuracy,
    }
