"""Optimisers and the exponential moving average of G."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from multigan.config import OptimConfig


def make_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """Adam, RMSprop or SGD; `weight_decay` is the L2 term added to the gradient."""
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def ema_beta(step: int, decay: float, rampup: int) -> float:
    """EMA decay at `step`: ramps from 0 towards `decay` so early averages forget the random init."""
    if rampup <= 0:
        return decay
    return min(decay, step / (step + rampup))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers (BN statistics) are copied."""
    ema_params = [p for p in ema.parameters()]
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
