"""The training state: every object whose state a resume must restore, in one place.

`state_dict()` is what a checkpoint holds of a run (beside its settings and
the adapter's state); `load_state_dict()` puts it back, bit for bit. The
exact-resume guarantee lives here and nowhere else.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from multigan.engine import checkpoint as ckpt
from multigan.engine.optim import EMA

# Keys of a training state inside a checkpoint ("label_mix" is there too when G's labels follow the data's,
# and "class_names" when the data names its classes).
STATE_KEYS = ("step", "G", "D", "G_ema", "opt_G", "opt_D", "scaler_G", "scaler_D", "rng", "noise")


class TrainingState:
    """G, D, the EMA of G, both optimisers and grad scalers, the step, every RNG, and G's classes.

    `label_mix` [n_classes] holds the probabilities with which a conditional
    G's labels are drawn (the training set's class proportions); None draws
    them uniformly, as checkpoints from before it was kept did.
    `class_names` [n_classes] names each class for `generate --label NAME`;
    None where the data names none.

    G and D are the plain modules (never a DistributedDataParallel or
    compiled wrapper), so checkpoints hold plain state-dict keys.
    """

    def __init__(self, G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer, opt_D: torch.optim.Optimizer,
                 scaler_G: torch.amp.GradScaler, scaler_D: torch.amp.GradScaler, noise: torch.Generator,
                 G_ema: nn.Module | None = None):
        self.G, self.D, self.opt_G, self.opt_D = G, D, opt_G, opt_D
        self.scaler_G, self.scaler_D, self.noise = scaler_G, scaler_D, noise
        self.G_ema = G_ema if G_ema is not None else copy.deepcopy(G).eval().requires_grad_(False)
        self.step = 0
        self.label_mix: Tensor | None = None
        self.class_names: list[str] | None = None
        self.ema = EMA(self.G_ema, G)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (live tensors, not copies)."""
        return {
            "step": self.step,
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "scaler_G": self.scaler_G.state_dict(), "scaler_D": self.scaler_D.state_dict(),
            "rng": ckpt.rng_state(), "noise": self.noise.get_state(),
            **({} if self.label_mix is None else {"label_mix": self.label_mix}),
            **({} if self.class_names is None else {"class_names": list(self.class_names)}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.scaler_G.load_state_dict(state["scaler_G"])
        self.scaler_D.load_state_dict(state["scaler_D"])
        ckpt.set_rng_state(state["rng"])
        self.noise.set_state(state["noise"].cpu())
        self.step = int(state["step"])
        mix = state.get("label_mix")
        self.label_mix = None if mix is None else torch.as_tensor(mix, dtype=torch.float32).cpu()
        names = state.get("class_names")
        self.class_names = None if names is None else [str(name) for name in names]

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the state, held on the CPU (to go back to)."""
        return _cpu_copy(self.state_dict())

    def learning_rates(self) -> list[list[float]]:
        """The learning rate of every parameter group of G's, then D's optimiser."""
        return [[group["lr"] for group in opt.param_groups] for opt in (self.opt_G, self.opt_D)]

    def set_learning_rates(self, rates: list[list[float]]) -> None:
        for opt, new in zip((self.opt_G, self.opt_D), rates):
            for group, lr in zip(opt.param_groups, new):
                group["lr"] = lr

    def nets(self) -> tuple[nn.Module, ...]:
        return self.G, self.D, self.G_ema


def _cpu_copy(state: Any) -> Any:
    """A deep copy of a state (nested dicts and lists of tensors) held on the CPU."""
    if isinstance(state, Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _cpu_copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu_copy(v) for v in state)
    return copy.deepcopy(state)
