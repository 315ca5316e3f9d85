"""Where names in the settings become objects: the library's registries.

The command line and the recipes call these functions; the engine below
them only ever receives objects.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multigan.config import AudioConfig, DataConfig, NetConfig
from multigan.engine.protocol import Modality
from multigan.errors import ConfigError
from multigan.modalities.image import ImageModality
from multigan.modalities.mel import MelModality
from multigan import assets
from multigan.nets import dcgan, resnet


def _image_data(cfg: DataConfig, progress: bool = True) -> tuple[torch.utils.data.Dataset, Modality]:
    if cfg.source == "mnist":
        from multigan.data.mnist import load_mnist

        if (cfg.channels, cfg.height, cfg.width) != (1, 28, 28):
            raise ConfigError("MNIST digits are 1x28x28: set data.channels=1, data.height=28, data.width=28, or use data.source=folder")
        dataset = load_mnist(cfg.root)
    elif cfg.source == "folder":
        from multigan.data.image_folder import labels_from_table, load_image_folder

        if not cfg.root:
            raise ConfigError("data.source=folder needs data.root, the folder of images (--data-root)")
        labels = labels_from_table(cfg.labels, label_field=cfg.label_field) if cfg.labels else None
        dataset = load_image_folder(cfg.root, channels=cfg.channels, height=cfg.height, width=cfg.width,
                                    background=cfg.background, labels=labels, progress=progress)
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
                               crop=audio.crop, progress=progress, min_source_rate=audio.min_source_rate,
                               max_source_rate=audio.max_source_rate, max_seconds=audio.max_seconds,
                               min_length=audio.min_length)
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
# (modality name, sample shape; None: any) -> the feature network in multigan/assets/ that evaluates
# such samples. The first match wins; a modality's first entry is its default when no shape is given.
FEATURE_NETS: dict[tuple[str, tuple[int | None, ...] | None], str] = {
    ("image", (1, 28, 28)): "digit-classifier.pt",
    ("image", (3, None, None)): "emoji-classifier.pt",  # any size: resized to its 64x64
    ("mel", None): "spoken-digit-classifier.pt",  # it analyses the decoded waveforms again
}
# modality name -> the kinds of input its feature networks read (a feature network file's `input.kind`)
FEATURE_INPUTS: dict[str, tuple[str, ...]] = {
    "image": ("image", "colour-image"),
    "mel": ("audio",),
}
# name -> builder of (G, D) for a sample shape
NETS: dict[str, Callable[[NetConfig, tuple[int, ...]], tuple[nn.Module, nn.Module]]] = {
    "dcgan": dcgan.build,
    "resnet": resnet.build,
}


def lookup(table: dict[str, Any], name: str, what: str):
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"unknown {what} {name!r}; known: {', '.join(sorted(table))}") from None


def load_data(cfg: DataConfig, progress: bool = True) -> tuple[torch.utils.data.Dataset, Modality]:
    """The dataset and the adapter that the data settings name."""
    return lookup(DATA, cfg.modality, "modality")(cfg, progress=progress)


# name -> check that the nets of these settings are of a buildable size, before any allocation
NET_SIZE_CHECKS: dict[str, Callable[[NetConfig, tuple[int, ...]], None]] = {
    "dcgan": dcgan.check_size,
    "resnet": resnet.check_size,
}


def build_nets(cfg: NetConfig, shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    return lookup(NETS, cfg.family, "network family")(cfg, tuple(shape))


def check_net_size(cfg: NetConfig, shape: tuple[int, ...]) -> None:
    """ConfigError when the nets of `cfg` would be absurdly large (a damaged or hostile checkpoint)."""
    lookup(NET_SIZE_CHECKS, cfg.family, "network family")(cfg, tuple(shape))


def modality_from_state(name: str, state: dict[str, Any]) -> Modality:
    """The adapter a checkpoint names, rebuilt from its saved state."""
    return lookup(MODALITIES, name, "modality").from_state(state)


def feature_net_path(modality_name: str, override: str | Path = "", shape: tuple[int, ...] | None = None) -> Path:
    """The feature network file that evaluates samples of a modality and `shape`: `override`, or the
    one in multigan/assets/ (without `shape`: the modality's first, e.g. the digit classifier)."""
    if override:
        path = Path(override).expanduser()
    else:
        found = [file for (name, pattern), file in FEATURE_NETS.items() if name == modality_name and (
            shape is None or pattern is None
            or (len(pattern) == len(shape) and all(p in (None, s) for p, s in zip(pattern, shape))))]
        if not found:
            what = modality_name + (f" samples of shape {'x'.join(map(str, shape))}" if shape else "")
            raise ConfigError(f"no feature network shipped for {what}: pass --features (eval.features), "
                              f"a network trained on such data (see recipes/*/train_classifier.py)")
        path = assets.path(found[0])
    if not path.is_file():
        raise ConfigError(f"feature network not found: {path}")
    return path
