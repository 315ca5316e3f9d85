"""A trained generator and its adapter, rebuilt from a checkpoint alone."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multigan.config import RunConfig
from multigan.engine.checkpoint import latest_checkpoint, load_checkpoint
from multigan.engine.protocol import Modality
from multigan.errors import CheckpointError, ConfigError
from multigan.registry import build_nets, check_net_size, modality_from_state


@dataclass
class Restored:
    """What generation needs, rebuilt from a checkpoint alone."""

    config: RunConfig
    modality: Modality
    G: nn.Module  # the EMA generator, in eval mode
    step: int
    path: Path
    label_mix: torch.Tensor | None = None  # [n_classes]: the class shares G's labels were drawn with in training
    class_names: list[str] | None = None  # [n_classes]: each class's name in the training data


def restore(path: str | Path, device: str | torch.device = "cpu") -> Restored:
    """Rebuild the adapter and the EMA generator from a checkpoint, without any dataset."""
    from multigan.metrics.features import KIND as FEATURE_NET

    path = Path(path)
    if path.is_dir():
        path = latest_checkpoint(path)
    state = load_checkpoint(path)
    if state.get("kind") == FEATURE_NET:
        raise CheckpointError(f"{path} is a feature network (for --features), not a training checkpoint")
    try:
        cfg = RunConfig.from_json(state["config"])
        modality = modality_from_state(state["modality"]["name"], state["modality"]["state"])
    except ConfigError as e:  # settings out of bounds: damaged or hostile, not another version
        raise CheckpointError(f"{path} holds settings this version refuses: {e}") from None
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path} does not match this version of multigan: {str(e).splitlines()[0][:200]}") from None
    try:
        check_net_size(cfg.model, modality.shape)  # before anything is allocated
    except ConfigError as e:
        raise CheckpointError(f"{path} asks for networks too large to build: {e}") from None
    try:
        G, _ = build_nets(cfg.model, modality.shape)
        G.load_state_dict(state["G_ema"])
    except (KeyError, RuntimeError, ConfigError) as e:
        raise CheckpointError(f"{path} does not match this version of multigan: {str(e).splitlines()[0][:200]}") from None
    mix = state.get("label_mix")
    if mix is not None and (not isinstance(mix, torch.Tensor) or mix.shape != (getattr(G, "n_classes", 0),)):
        raise CheckpointError(f"{path} holds a class mix that does not fit its generator")
    names = state.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != getattr(G, "n_classes", 0)
                              or not all(isinstance(name, str) for name in names)):
        raise CheckpointError(f"{path} holds class names that do not fit its generator")
    return Restored(cfg, modality, G.to(device).eval(), int(state["step"]), path,
                    None if mix is None else mix.float().cpu(), names)


def describe(path: str | Path) -> dict[str, Any]:
    """What a checkpoint holds, as `multigan info` shows it: step, modality, sample shape, generator, settings."""
    r = restore(path)
    n_params = sum(p.numel() for p in r.G.parameters())
    return {
        "checkpoint": str(r.path),
        "step": r.step,
        "of_steps": r.config.train.steps,
        "modality": r.modality.name,
        "sample_shape": list(r.modality.shape),
        "generator": f"{r.config.model.family}, {n_params:,} parameters",
        "classes": _classes(r),
        "loss": r.config.loss.kind,
        "settings": r.config.to_dict(),
    }


def _classes(r: Restored) -> str:
    """How many classes G takes and in what mix training drew them, in words."""
    n = getattr(r.G, "n_classes", 0)
    if not n:
        return "none (unconditional)"
    names = r.class_names or [str(k) for k in range(n)]
    if r.label_mix is None:
        listed = ", ".join(names) if r.class_names else f"0..{n - 1}, unnamed"
        return f"{n} ({listed}), drawn uniformly in training"
    shares = ", ".join(f"{name} {share:.3f}" for name, share in zip(names, r.label_mix.tolist()))
    return f"{n}, drawn in the training data's proportions: {shares}"
