"""The Python interface: train, restore, generate, evaluate.

Thin wrappers over the library (multigan.run, multigan.restore,
multigan.generate), importing it only when called, so `import multigan`
stays cheap.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multigan.config import RunConfig
    from multigan.generate import Samples
    from multigan.restore import Restored


def train(recipe: str | RunConfig, out: str | os.PathLike, *, settings: dict[str, Any] | None = None,
          resume: str | os.PathLike | None = None, progress: bool = True) -> Path | None:
    """Train from a recipe name ("mnist-quick", "voice-quick", ...) or a RunConfig; returns the last checkpoint.

    `settings` overrides any setting by its dotted key, e.g. {"train.steps": 500, "data.root": "data"}.
    """
    from multigan.config import RunConfig
    from multigan.errors import ConfigError
    from multigan.presets import PRESETS
    from multigan.run import train_run

    if isinstance(recipe, str):
        if recipe not in PRESETS:
            raise ConfigError(f"{recipe!r} is not a recipe ({', '.join(PRESETS)})")
        recipe = PRESETS[recipe]()
    if not isinstance(recipe, RunConfig):
        raise ConfigError(f"train expects a recipe name or a RunConfig, got {type(recipe).__name__}")
    for key, value in (settings or {}).items():
        recipe = recipe.override(key, value)
    return train_run(recipe, out, resume=resume, progress=progress)


def restore(checkpoint: str | os.PathLike, device: str = "cpu") -> Restored:
    """The EMA generator and the adapter of a checkpoint (or of a run folder's latest one), without any dataset."""
    from multigan.restore import restore as _restore

    return _restore(checkpoint, device=device)


def generate(checkpoint: str | os.PathLike | Restored, n: int = 16, *, seed: int = 0, label: int | str | None = None,
             truncation: float | None = None, interpolate: int = 0, device: str = "cpu") -> Samples:
    """Samples of a checkpoint (a path, a run folder, or what `restore` returned).

    `label`: only that class, by number or name (conditional runs); `truncation`: redraw noise
    values beyond +-truncation; `interpolate`: K > 0 gives `n` latent walks of
    K steps instead. The result shows itself in a notebook (pictures, audio
    players) and writes its files with `.save(folder)`.
    """
    from multigan.generate import interpolate as walk, sample
    from multigan.restore import Restored

    restored = checkpoint if isinstance(checkpoint, Restored) else restore(checkpoint, device=device)
    if interpolate:
        return walk(restored, interpolate, walks=n, seed=seed, label=label, truncation=truncation, device=device)
    return sample(restored, n, seed=seed, label=label, truncation=truncation, device=device)


def evaluate(checkpoint: str | os.PathLike, n: int = 2000, *, data_root: str | None = None, features: str = "",
             seed: int = 0, device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """FID, KID, classifier score, precision, recall... of a checkpoint against its training data (or `data_root`)."""
    from multigan.run import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, n=n, data_root=data_root, features=features, device=device, seed=seed,
                               progress=progress)
