"""The contract of a network family, over every family in `registry.NETS` (after diffusers' ModelTesterMixin).

Shapes, ranges, labels, state_dict round trip, determinism, bf16 autocast,
torch.compile, parameter counts and the size check. Nets are a few channels
wide so the whole file runs in seconds; a family without a case here fails.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from multigan.config import NetConfig, ResNetConfig
from multigan.errors import ConfigError
from multigan.nets import dcgan, resnet
from multigan.registry import NET_SIZE_CHECKS, NETS, build_nets, check_net_size

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class Case:
    small: Callable[[int], NetConfig]  # tiny settings of the family for n_classes
    count: Callable[[NetConfig, tuple[int, int, int]], tuple[int, int]]  # the family's parameter_count
    huge: NetConfig  # settings far beyond any buildable net


CASES = {
    "dcgan": Case(
        small=lambda n_classes: NetConfig(family="dcgan", z_dim=8, g_width=4, d_width=4, max_width=16, n_classes=n_classes),
        count=dcgan.parameter_count,
        huge=NetConfig(family="dcgan", g_width=65536, d_width=65536, max_width=65536),
    ),
    "resnet": Case(
        small=lambda n_classes: NetConfig(family="resnet", z_dim=8, n_classes=n_classes,
                                          resnet=ResNetConfig(g_width=4, d_width=4, max_width=16)),
        count=resnet.parameter_count,
        huge=NetConfig(family="resnet", resnet=ResNetConfig(g_width=65536, d_width=65536, max_width=65536)),
    ),
}
FAMILIES = sorted(NETS)
# Digits, RGB, 64- and 128-mel spectrograms, 80 mels x 64 frames (non-square, cropped by G).
SHAPES = [(1, 28, 28), (3, 64, 64), (1, 64, 64), (1, 128, 128), (1, 80, 64)]
N_CLASSES = 5


def _ids(shape):
    return "x".join(map(str, shape))


def _case(family: str) -> Case:
    if family not in CASES:
        pytest.fail(f"network family {family!r} has no case in tests/nets/test_families.py: add one")
    return CASES[family]


def _build(family: str, n_classes: int, shape, seed: int = 0):
    torch.manual_seed(seed)
    return build_nets(_case(family).small(n_classes), shape)


def _inputs(cfg: NetConfig, batch: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, cfg.z_dim, generator=g) * 3  # wide z: tanh must still bound the output
    y = torch.randint(0, cfg.n_classes, (batch,), generator=g) if cfg.n_classes else None
    return z, y


def _labels(y):
    return [] if y is None else [y]


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_every_family_has_a_case():
    assert set(CASES) == set(NETS) == set(NET_SIZE_CHECKS)


@pytest.mark.parametrize("n_classes", [0, N_CLASSES], ids=["uncond", "cond"])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_ranges_and_parameter_count(family, shape, n_classes):
    cfg = _case(family).small(n_classes)
    G, D = _build(family, n_classes, shape)
    assert G.z_dim == cfg.z_dim and G.n_classes == n_classes
    assert _case(family).count(cfg, shape) == (_n_params(G), _n_params(D))
    z, y = _inputs(cfg, 3)
    x = G(z, *_labels(y))
    assert x.shape == (3, *shape) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert not torch.equal(x[0], x[1]), "G ignores z"
    scores = D(x, *_labels(y))
    assert scores.shape == (3,), "D must give one raw score per example"
    assert torch.isfinite(scores).all()
    # One example in eval mode (batch norm from running statistics).
    G.eval(), D.eval()
    assert G(z[:1], *_labels(y if y is None else y[:1])).shape == (1, *shape)
    assert D(x[:1], *_labels(y if y is None else y[:1])).shape == (1,)


@pytest.mark.parametrize("family", FAMILIES)
def test_conditional_nets_need_labels_and_use_them(family):
    shape = (1, 28, 28)
    G, D = _build(family, N_CLASSES, shape)
    with pytest.raises(ValueError, match="class-conditional: pass labels"):
        G(torch.randn(2, G.z_dim))
    with pytest.raises(ValueError, match="class-conditional: pass labels"):
        D(torch.rand(2, *shape) * 2 - 1)
    G.eval(), D.eval()  # running statistics: each row is computed on its own
    labels = torch.arange(N_CLASSES)
    x = G(torch.randn(1, G.z_dim).expand(N_CLASSES, -1), labels)  # one z, every label
    assert all(not torch.allclose(x[i], x[j]) for i in range(N_CLASSES) for j in range(i)), "G ignores the label"
    scores = D(x[:1].expand(N_CLASSES, -1, -1, -1), labels)  # one sample, every label
    assert len(set(scores.tolist())) == N_CLASSES, "D ignores the label"


@pytest.mark.parametrize("family", FAMILIES)
def test_unresolved_classes_are_refused(family):
    with pytest.raises(ConfigError, match="n_classes=-1"):
        build_nets(_case(family).small(-1), (1, 28, 28))


def _outputs(G, D, cfg, shape):
    z, y = _inputs(cfg, 4)
    x = G(z, *_labels(y))
    return x, D(torch.rand(4, *shape, generator=torch.Generator().manual_seed(2)) * 2 - 1, *_labels(y))


@pytest.mark.parametrize("n_classes", [0, N_CLASSES], ids=["uncond", "cond"])
@pytest.mark.parametrize("family", FAMILIES)
def test_state_dict_round_trip(family, n_classes):
    shape, cfg = (1, 80, 64), _case(family).small(n_classes)
    with torch.no_grad():
        for train_mode in (True, False):  # train mode also updates BN and spectral-norm buffers, alike in both
            (G0, D0), (G1, D1) = _build(family, n_classes, shape, seed=0), _build(family, n_classes, shape, seed=1)
            for net in (G0, D0, G1, D1):
                net.train(train_mode)
            before = _outputs(G1, D1, cfg, shape)
            G1.load_state_dict(G0.state_dict())
            D1.load_state_dict(D0.state_dict())
            a, b = _outputs(G0, D0, cfg, shape), _outputs(G1, D1, cfg, shape)
            assert not torch.allclose(before[0], a[0]) and not torch.allclose(before[1], a[1]), "the seeds built equal nets"
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_builds_the_same_nets(family):
    shape, cfg = (3, 64, 64), _case(family).small(N_CLASSES)
    (G0, D0), (G1, D1) = _build(family, N_CLASSES, shape, seed=7), _build(family, N_CLASSES, shape, seed=7)
    for a, b in ((G0, G1), (D0, D1)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.testing.assert_close(_outputs(G0, D0, cfg, shape), _outputs(G1, D1, cfg, shape), rtol=0, atol=0)


@pytest.mark.parametrize("n_classes", [0, N_CLASSES], ids=["uncond", "cond"])
@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_autocast_forward_and_backward(family, n_classes):
    shape, cfg = (1, 80, 64), _case(family).small(n_classes)
    G, D = _build(family, n_classes, shape)
    z, y = _inputs(cfg, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = G(z, *_labels(y))
        scores = D(x, *_labels(y))
    assert x.shape == (4, *shape) and scores.shape == (4,)
    assert torch.isfinite(x.float()).all() and torch.isfinite(scores.float()).all()
    assert x.float().abs().max() <= 1
    scores.float().mean().backward()
    for net in (G, D):
        grads = [p.grad for p in net.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), net.__class__.__name__
        assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_nets_match_eager(family):
    shape, cfg = (1, 8, 8), _case(family).small(N_CLASSES)
    G, D = _build(family, N_CLASSES, shape)
    # Train mode, as the trainer compiles them: both copies update their buffers the same way.
    Gc, Dc = torch.compile(copy.deepcopy(G)), torch.compile(copy.deepcopy(D))
    z, y = _inputs(cfg, 4)
    with torch.no_grad():
        x = G(z, y)
        torch.testing.assert_close(Gc(z, y), x, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(Dc(x, y), D(x, y), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_size_check_refuses_absurd_widths_before_allocating(family, monkeypatch):
    case, shape = _case(family), (3, 1024, 1024)
    g, d = case.count(case.huge, shape)
    assert g + d > dcgan.MAX_PARAMETERS
    small = case.small(0)
    check_net_size(small, (1, 28, 28))  # tiny nets pass

    def never(*args, **kwargs):
        raise AssertionError("a module was built before the size was checked")

    monkeypatch.setattr(nn.Module, "__init__", never)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="parameters"):
        check_net_size(case.huge, shape)
    with pytest.raises(ConfigError, match="parameters"):
        build_nets(case.huge, shape)
    assert time.perf_counter() - start < 0.5
    with pytest.raises(ConfigError, match="shape"):
        check_net_size(small, (1, 2**30, 28))
