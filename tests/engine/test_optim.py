"""Optimiser construction and the EMA of G."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from multigan.config import OptimConfig
from multigan.engine.optim import ema_beta, ema_update, make_optimizer, standing_stats


def _params():
    return nn.Linear(3, 2).parameters()


def test_adam():
    opt = make_optimizer(_params(), OptimConfig(name="adam", betas=(0.0, 0.99), weight_decay=1e-3), lr=3e-4)
    assert type(opt) is torch.optim.Adam
    (group,) = opt.param_groups
    assert group["lr"] == 3e-4 and group["betas"] == (0.0, 0.99) and group["weight_decay"] == 1e-3
    assert len(group["params"]) == 2


@pytest.mark.parametrize("name, cls", [("rmsprop", torch.optim.RMSprop), ("sgd", torch.optim.SGD)])
def test_rmsprop_and_sgd(name, cls):
    opt = make_optimizer(_params(), OptimConfig(name=name, momentum=0.9, weight_decay=2e-4), lr=5e-5)
    assert type(opt) is cls
    (group,) = opt.param_groups
    assert group["lr"] == 5e-5 and group["momentum"] == 0.9 and group["weight_decay"] == 2e-4


def test_lr_argument_wins_over_the_config():
    # G and D share one OptimConfig but have their own learning rates.
    cfg = OptimConfig(lr_g=1e-4, lr_d=4e-4)
    assert make_optimizer(_params(), cfg, cfg.lr_d).param_groups[0]["lr"] == 4e-4
    assert make_optimizer(_params(), cfg, cfg.lr_g).param_groups[0]["lr"] == 1e-4


# EMA -------------------------------------------------------------------------
def test_ema_beta_ramps_up_and_caps():
    decay, rampup = 0.999, 100
    betas = [ema_beta(s, decay, rampup) for s in range(0, 100_000, 7)]
    assert betas[0] == 0.0  # step 0: the EMA takes G's weights
    assert all(a <= b for a, b in zip(betas, betas[1:]))
    assert max(betas) == decay
    assert ema_beta(100, decay, rampup) == pytest.approx(0.5)  # step / (step + rampup)
    assert ema_beta(10**9, decay, rampup) == decay


def test_ema_beta_without_rampup_and_disabled_ema():
    assert ema_beta(0, 0.99, 0) == 0.99
    assert ema_beta(5, 0.0, 100) == 0.0  # decay 0: the EMA is a copy of G


def _net(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    net(torch.randn(8, 4))  # moves BN statistics away from their init
    return net


def test_ema_update_is_the_formula_and_copies_buffers():
    ema, model = _net(0).eval().requires_grad_(False), _net(1)
    before = copy.deepcopy(ema.state_dict())
    beta = 0.75
    ema_update(ema, model, beta)
    for name, p in ema.named_parameters():
        expected = beta * before[name] + (1 - beta) * model.state_dict()[name]
        torch.testing.assert_close(p, expected)
    for name, b in ema.named_buffers():
        assert torch.equal(b, model.state_dict()[name]), name
    assert not torch.equal(before["1.running_mean"], model.state_dict()["1.running_mean"])


def test_ema_update_extremes_and_model_untouched():
    ema, model = _net(0), _net(1)
    ref = copy.deepcopy(model.state_dict())
    ema_update(ema, model, 0.0)
    for name, t in ema.state_dict().items():
        assert torch.equal(t, ref[name]), name
    other = _net(2)
    kept = copy.deepcopy(ema.state_dict())
    ema_update(ema, other, 1.0)
    for name, p in ema.named_parameters():
        assert torch.equal(p, kept[name])
    for name, t in model.state_dict().items():
        assert torch.equal(t, ref[name])


def test_standing_stats_are_the_average_of_the_batch_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)).eval()
    bn = net[1]
    bn.running_mean.fill_(7.0), bn.running_var.fill_(9.0)  # stale statistics, as copied from another net
    batches = [torch.randn(32, 3) * 2 + 1 for _ in range(6)]
    standing_stats(net, ((x,) for x in batches))
    with torch.no_grad():
        h = [net[0](x) for x in batches]
    torch.testing.assert_close(bn.running_mean, torch.stack([b.mean(0) for b in h]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([b.var(0) for b in h]).mean(0))  # unbiased, as BN keeps it
    assert not net.training and bn.momentum == 0.1  # left as it was found
    # In eval mode the net now normalises one large batch of the same inputs as batch statistics would.
    x = torch.cat(batches)
    with torch.no_grad():
        evaluated = net(x)
        trained = net.train()(x)
    torch.testing.assert_close(evaluated, trained, atol=0.05, rtol=0.05)


def test_standing_stats_leave_a_net_without_batch_norm_alone():
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    before = copy.deepcopy(net.state_dict())
    standing_stats(net, iter([(torch.randn(4, 3),)]))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
