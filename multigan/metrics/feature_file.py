"""The feature network file: weights, the network's shape, its input transform and what it was trained on.

A feature network file is usable on its own (for sounds it holds the
analysis settings and the per-bin statistics). It is a dict of tensors and
plain values written and read by `multigan.engine.checkpoint`, so loading
goes through `torch.load(..., weights_only=True)` and never unpickles objects.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from multigan.errors import CheckpointError, DataError
from multigan.metrics.feature_inputs import INPUTS, ColourImages, DigitImages, LogMelClips
from multigan.metrics.feature_net import FeatureExtractor, FeatureNet

KIND = "feature-net"  # tells a feature network file from a training checkpoint


def save_feature_net(path: str | Path, net: FeatureNet, transform: DigitImages | ColourImages | LogMelClips, *,
                     class_names: list[str], test_accuracy: float, trained_on: str) -> Path:
    from multigan.engine.checkpoint import save_checkpoint

    state = {
        "kind": KIND,
        "input": {"kind": transform.kind, "state": transform.state_dict()},
        "net": net.spec(),
        "weights": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "class_names": list(class_names),
        "test_accuracy": float(test_accuracy),
        "trained_on": trained_on,
    }
    return save_checkpoint(state, Path(path))


def load_feature_net(path: str | Path, device: str | torch.device = "cpu") -> FeatureExtractor:
    """A feature network file (weights only, never unpickled objects) -> FeatureExtractor."""
    from multigan.engine.checkpoint import load_checkpoint

    path = Path(path)
    state = load_checkpoint(path)  # torch.load(..., weights_only=True)
    if state.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a multigan feature network")
    try:
        net = FeatureNet(**state["net"])
        net.load_state_dict(state["weights"])
        transform = INPUTS[state["input"]["kind"]].from_state(state["input"]["state"])
    except (KeyError, RuntimeError, TypeError, ValueError, DataError) as e:
        raise CheckpointError(f"{path} does not match this version of multigan: {str(e).splitlines()[0][:200]}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return FeatureExtractor(net.to(device).eval(), transform, list(state["class_names"]),
                            float(state["test_accuracy"]), digest, str(state.get("trained_on", "")))
