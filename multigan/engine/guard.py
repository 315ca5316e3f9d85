"""The divergence guard: notices a run that has gone bad and takes it back to its last good state.

Bad means a non-finite loss since the last check, non-finite weights, or
values far past anything a working run reaches: a loss above `max_loss` or a
weight above `max_weight` in absolute value (Adam at a huge learning
rate sends G's loss to 1e11 and weights to 1e24 while everything stays
finite). The check costs one device-to-host read; under torchrun every rank
takes the same decision.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from multigan.engine.distributed import World
from multigan.engine.state import TrainingState
from multigan.errors import TrainingDiverged

log = logging.getLogger("multigan")

_REASONS = ("non-finite losses", "non-finite weights", "losses beyond train.max_loss", "weights beyond train.max_weight")


class DivergenceGuard:
    """Watches the losses of every step; `check()` says what went wrong, `recover()` goes back."""

    def __init__(self, *, retries: int, lr_factor: float, max_loss: float, max_weight: float,
                 world: World = World()):
        self.retries, self.lr_factor = retries, lr_factor
        self.max_loss, self.max_weight = max_loss, max_weight
        self.world = world
        self.failures = 0
        self.good: dict[str, Any] | None = None  # the last state known to be good, on the CPU
        self._totals: list[Tensor] = []

    def watch(self, total: Tensor) -> None:
        """Keep a step's loss for the next check (no device sync here)."""
        self._totals.append(total.detach())

    def check(self, nets: Iterable[nn.Module]) -> str | None:
        """None when every watched loss and every weight is sane on every rank; else what is wrong."""
        params = [p.detach() for m in nets for p in m.parameters()]
        device = params[0].device if params else torch.device("cpu")
        losses = torch.stack(self._totals).float() if self._totals else torch.zeros(1, device=device)
        # The largest |weight| of each tensor: unlike a 2-norm it cannot overflow on finite weights.
        norms = torch.stack(torch._foreach_norm(params, math.inf)).float() if params else torch.zeros(1, device=device)
        finite_losses, finite_norms = losses.isfinite().all(), norms.isfinite().all()
        flags = torch.stack([
            ~finite_losses,
            ~finite_norms,
            finite_losses & (losses.abs().max() > self.max_loss),
            finite_norms & (norms.max() > self.max_weight),
        ]).to(torch.int32)
        self._totals.clear()
        if self.world.size > 1:
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        bad = [reason for reason, flag in zip(_REASONS, flags.tolist()) if flag]
        return " and ".join(bad) if bad else None

    def remember(self, state: TrainingState) -> None:
        self.good = state.snapshot()

    def recover(self, state: TrainingState, reason: str, last_checkpoint: str | None) -> str:
        """Back to the last good state with lower learning rates; returns the message. Raises
        TrainingDiverged after `retries` recoveries."""
        self.failures += 1
        bad_step = state.step
        if self.failures > self.retries or self.good is None:
            raise TrainingDiverged(
                f"training diverged: {reason} at step {bad_step}, {self.failures - 1} restart(s) with lower learning "
                f"rates did not help; the last good state is step {self.good['step'] if self.good else 0}"
                + (f" ({last_checkpoint})" if last_checkpoint else "") + "; try lower optim.lr_g/lr_d or another loss.kind")
        rates = [[lr * self.lr_factor for lr in group] for group in state.learning_rates()]
        state.load_state_dict(self.good)
        state.set_learning_rates(rates)
        self._totals.clear()
        return (f"{reason} at step {bad_step}: back to step {state.step}, learning rates x{self.lr_factor:g} "
                f"(now G {rates[0][0]:.3g}, D {rates[1][0]:.3g}); restart {self.failures} of {self.retries}")

