"""Optimisers and the exponential moving average of G."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from multigan.config import OptimConfig


def make_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig, lr: float, fused: bool = False) -> torch.optim.Optimizer:
    """Adam, RMSprop or SGD; `weight_decay` is the L2 term added to the gradient.

    `fused` (CUDA): Adam's update as one kernel for all parameters, where
    the default launches several per tensor group.
    """
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **({"fused": True} if fused else {}))
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def ema_beta(step: int, decay: float, rampup: int) -> float:
    """EMA decay at `step`: ramps from 0 towards `decay` so early averages forget the random init."""
    if rampup <= 0:
        return decay
    return min(decay, step / (step + rampup))


class EMA:
    """The exponential moving average of a model's weights, updated with one foreach kernel per tensor kind."""

    def __init__(self, ema: nn.Module, model: nn.Module):
        self.ema_params, self.params = list(ema.parameters()), [p.detach() for p in model.parameters()]
        self.ema_buffers, self.buffers = list(ema.buffers()), list(model.buffers())

    @torch.no_grad()
    def update(self, beta: float) -> None:
        """ema <- beta * ema + (1 - beta) * model for parameters; buffers (BN statistics) are copied."""
        torch._foreach_lerp_(self.ema_params, self.params, 1.0 - beta)
        if self.buffers:
            torch._foreach_copy_(self.ema_buffers, self.buffers)


def ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers (BN statistics) are copied."""
    EMA(ema, model).update(beta)


@torch.no_grad()
def standing_stats(model: nn.Module, inputs: Iterable[tuple[Tensor, ...]]) -> None:
    """Set `model`'s batch-norm statistics to the average of its own batch statistics over `inputs`.

    BigGAN's "standing statistics". The EMA of G averages the weights but can
    only copy the live G's running statistics, which describe the live G's
    activations, not the average's; measured on FSDD after 1,450 steps, the
    mismatch cost 3 points of FID. Each item of `inputs` is one call's arguments.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta, was_training = [m.momentum for m in norms], model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calls
    model.train()
    try:
        for args in inputs:
            model(*args)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
