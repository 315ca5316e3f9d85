"""The residual family: block plan, conditioning, spectral norm, its settings, training through the engine.

Shapes, round trips, bf16 and compile are in test_families.py, for every family.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from multigan.config import DataConfig, LossConfig, NetConfig, ResNetConfig, RunConfig, TrainConfig
from multigan.data.tensors import ImageTensorDataset, Labelled
from multigan.engine.checkpoint import load_checkpoint
from multigan.engine.trainer import train
from multigan.errors import ConfigError
from multigan.modalities.image import ImageModality
from multigan.nets import resnet
from multigan.nets.dcgan import plan_scales
from multigan.registry import build_nets

pytestmark = pytest.mark.usefixtures("one_thread")

K = 4  # classes
SMALL = NetConfig(family="resnet", z_dim=8, resnet=ResNetConfig(g_width=8, d_width=8, max_width=32))
CONDITIONAL = NetConfig(family="resnet", z_dim=8, n_classes=K, resnet=SMALL.resnet)
SHAPE = (1, 16, 16)
IMAGES = torch.randint(0, 256, (256, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Structure ----------------------------------------------------------------------------
def test_blocks_follow_the_scale_plan():
    shape = (1, 80, 64)  # 5x4 base, 4 doublings, 80x64 exactly
    cfg = NetConfig(family="resnet", z_dim=8, resnet=ResNetConfig(g_width=4, d_width=4, max_width=16, depth=2))
    G, D = resnet.build(cfg, shape)
    assert plan_scales(80, 64) == (4, 5, 4) and G.base == (16, 5, 4)
    # depth 2: each scale has one resampling block and one that keeps the size.
    assert [b.up for b in G.blocks] == [True, False] * 4
    assert [b.conv2.out_channels for b in G.blocks] == [16, 16, 16, 16, 8, 8, 4, 4]  # halves to g_width, capped
    assert [b.down for b in D.blocks] == [True, False] * 4
    assert [b.first for b in D.blocks] == [True] + [False] * 7  # the optimized block reads the image
    assert [b.conv2.out_channels for b in D.blocks] == [4, 4, 8, 8, 16, 16, 16, 16]
    # 1x1 shortcuts only where the block changes shape; identity otherwise.
    for block in list(G.blocks) + list(D.blocks):
        resamples = getattr(block, "up", False) or getattr(block, "down", False)
        changes = resamples or block.conv1.in_channels != block.conv2.out_channels
        assert (block.shortcut is not None) == changes
    features = D.blocks(torch.zeros(2, *shape))
    assert features.shape == (2, 16, 5, 4)  # D ends on the base grid, then sums over it


def test_the_smallest_samples_have_one_scale_without_resampling():
    G, D = resnet.build(SMALL, (1, 4, 4))
    assert not any(b.up for b in G.blocks) and not any(b.down for b in D.blocks)
    assert G(torch.randn(2, 8)).shape == (2, 1, 4, 4) and D(torch.zeros(2, 1, 4, 4)).shape == (2,)


def _spectral_normed(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules()
            if parametrize.is_parametrized(m, "weight")
            and any(type(p).__name__ == "_SpectralNorm" for p in m.parametrizations.weight)]


def test_every_D_layer_and_the_projection_are_spectrally_normalised():
    torch.manual_seed(0)
    G, D = resnet.build(CONDITIONAL, (1, 28, 28))
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert any(isinstance(m, nn.Embedding) for m in layers)
    assert layers and _spectral_normed(D) == layers
    assert not _spectral_normed(G)
    with torch.no_grad():
        for _ in range(10):  # power iterations run in train mode
            D(torch.randn(4, 1, 28, 28), torch.arange(4))
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert abs(sigma.item() - 1) < 0.1, (m, sigma)


def test_D_scores_each_example_on_its_own():
    # No batch norm in D: a score does not depend on the rest of the batch (WGAN-GP, R1 are safe).
    torch.manual_seed(0)
    _, D = resnet.build(CONDITIONAL, (1, 28, 28))
    x = (torch.rand(5, 1, 28, 28) * 2 - 1).requires_grad_()
    # In train mode (each call takes a power-iteration step, so compare gradients within one call).
    D(x, torch.tensor([0, 1, 2, 3, 1]))[2].backward()
    assert x.grad[2].abs().sum() > 0
    assert torch.equal(x.grad[[0, 1, 3, 4]], torch.zeros(4, 1, 28, 28)), "a score reads other examples"


def test_conditioning_enters_through_batch_norm_and_projection():
    Gc, Dc = resnet.build(CONDITIONAL, SHAPE)
    norms = [m for m in Gc.modules() if isinstance(m, resnet.ConditionalBatchNorm)]
    assert len(norms) == 2 * len(Gc.blocks) + 1  # two per block and the last one
    assert all(not m.bn.affine and m.gamma.num_embeddings == K for m in norms)
    assert Dc.embed.num_embeddings == K
    G, D = resnet.build(SMALL, SHAPE)
    assert not any(isinstance(m, nn.Embedding) for net in (G, D) for m in net.modules())
    assert all(m.bn.affine for m in G.modules() if isinstance(m, resnet.ConditionalBatchNorm))


# Label collapse ----------------------------------------------------------------------------
def _class_spread(G: nn.Module, n: int = 16) -> tuple[torch.Tensor, float]:
    """(spread over z within each class [K], smallest distance between two class means), per pixel.

    Every class sees the same n z's, so the class means differ only through the label.
    """
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(5)).repeat(K, 1)  # [K * n, z_dim]
    y = torch.arange(K).repeat_interleave(n)
    with torch.no_grad():
        x = G(z, y).flatten(1).view(K, n, -1)  # [K, n, P]
    within = x.std(1).mean(1)
    means = x.mean(1)
    distances = torch.cdist(means, means) / math.sqrt(means.shape[1])
    return within, distances[~torch.eye(K, dtype=torch.bool)].min().item()


def _healthy(G: nn.Module) -> None:
    within, between = _class_spread(G)
    assert (within > 0.1).all(), f"samples of one class hardly depend on z: {within.tolist()}"
    assert between > 1e-3, f"two classes have the same mean sample: {between}"


def test_conditional_G_varies_within_and_between_classes():
    torch.manual_seed(0)
    G, _ = resnet.build(CONDITIONAL, SHAPE)
    for mode in (True, False):
        G.train(mode)
        _healthy(G)
    # The collapse this guards against: class scales at 0 (gamma = embedding initialised near 0)
    # leave one image per class. The measure sees it.
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, resnet.ConditionalBatchNorm):
                m.gamma.weight.fill_(-1.0)
    within, between = _class_spread(G)
    assert (within < 1e-4).all() and between > 1e-3


def _cfg(model: NetConfig, steps: int, kind: str = "nonsaturating") -> RunConfig:
    return RunConfig(
        data=DataConfig(source="folder", channels=1, height=16, width=16),
        model=model,
        loss=LossConfig(kind=kind),
        train=TrainConfig(steps=steps, batch_size=16, device="cpu", ema_decay=0.9, ema_rampup=2, log_every=5,
                          preview_every=1000, checkpoint_every=1000, n_preview=8),
    )


def _train(cfg: RunConfig, run_dir) -> dict:
    torch.manual_seed(1234)
    G, D = build_nets(cfg.model, SHAPE)
    n_classes = cfg.model.n_classes
    dataset = Labelled(ImageTensorDataset(IMAGES, torch.arange(len(IMAGES)) % n_classes), n_classes) if n_classes \
        else ImageTensorDataset(IMAGES)
    return load_checkpoint(train(cfg, ImageModality(*SHAPE), G, D, dataset, run_dir, progress=False))


def test_trained_ema_generator_keeps_variety_within_and_between_classes(tmp_path):
    cfg = _cfg(CONDITIONAL, steps=40)
    state = _train(cfg, tmp_path / "run")
    G_ema = resnet.Generator(cfg.model, SHAPE)
    G_ema.load_state_dict(state["G_ema"])
    G_ema.eval()  # as generate and the evaluator use it: BN running statistics copied from G
    _healthy(G_ema)


# Training through the engine ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["nonsaturating", "hinge"])
@pytest.mark.parametrize("n_classes", [0, K], ids=["uncond", "cond"])
def test_trains_through_the_engine(tmp_path, kind, n_classes):
    model = CONDITIONAL if n_classes else SMALL
    torch.manual_seed(1234)  # the initial weights _train builds
    start = build_nets(model, SHAPE)[0].state_dict()
    state = _train(_cfg(model, steps=4, kind=kind), tmp_path / "run")
    assert state["step"] == 4
    for key in ("G", "D", "G_ema"):
        weights = [v for v in state[key].values() if v.is_floating_point()]
        assert weights and all(torch.isfinite(v).all() for v in weights), key
    assert any(not torch.equal(start[k], state["G"][k]) for k in start), "G did not train"


# Settings -----------------------------------------------------------------------------
def test_settings_round_trip_through_json_and_set():
    cfg = RunConfig(model=NetConfig(family="resnet", resnet=ResNetConfig(g_width=32, depth=2)))
    assert RunConfig.from_json(cfg.to_json()) == cfg
    # --set on an unset section starts from its defaults.
    changed = RunConfig().override("model.family", "resnet").override("model.resnet.g_width", "64")
    assert changed.model.resnet == ResNetConfig(g_width=64)
    assert RunConfig.from_json(changed.to_json()) == changed
    with pytest.raises(ConfigError, match="model.resnet.depth"):
        changed.override("model.resnet.depth", "0")
    with pytest.raises(ConfigError, match="unknown setting"):
        changed.override("model.resnet.width", "8")


def test_settings_without_a_resnet_section_still_load():
    old = RunConfig().to_dict()
    del old["model"]["resnet"]  # written before the residual family existed
    assert RunConfig.from_dict(old).model.resnet is None
    old["model"]["resnet"] = None
    assert RunConfig.from_dict(old).model.resnet is None


@pytest.mark.parametrize("settings", [dict(g_width=0), dict(depth=0), dict(max_width=65537), dict(depth=17)])
def test_settings_out_of_range_are_refused(settings):
    with pytest.raises(ConfigError, match="model.resnet"):
        ResNetConfig(**settings)


def test_the_family_reads_its_own_widths_not_dcgans():
    shape = (1, 28, 28)
    base = NetConfig(family="resnet", z_dim=8, resnet=ResNetConfig(g_width=4, d_width=4, max_width=16))
    count = resnet.parameter_count(base, shape)
    dcgan_only = NetConfig(family="resnet", z_dim=8, resnet=base.resnet, g_width=32, d_width=32, depth=2, d_norm="none",
                           spectral_norm=True)
    assert resnet.parameter_count(dcgan_only, shape) == count
    G, _ = build_nets(NetConfig(family="resnet", z_dim=8, resnet=ResNetConfig(g_width=4, d_width=4, max_width=16)), shape)
    assert G.blocks[-1].conv2.out_channels == 4
    # None means the defaults.
    assert resnet.parameter_count(NetConfig(family="resnet"), shape) == \
        resnet.parameter_count(NetConfig(family="resnet", resnet=ResNetConfig()), shape)


# Sizes ------------------------------------------------------------------------------------
def test_parameter_count_by_hand():
    # 1x8x8: one doubling from 4x4. G 4 channels at 4x4 -> 2 at 8x8; D 1 -> 2 channels, 8x8 -> 4x4.
    cfg = NetConfig(family="resnet", z_dim=2, resnet=ResNetConfig(g_width=2, d_width=2, max_width=4))
    g = (2 * 64 + 64) + (8 + (4 * 2 * 9 + 2) + 4 + (2 * 2 * 9 + 2) + (4 * 2 + 2)) + (4 + 1 * 2 * 9 + 1)
    d = (1 * 2 * 9 + 2) + (2 * 2 * 9 + 2) + (1 * 2 + 2) + (2 + 1)
    assert resnet.parameter_count(cfg, (1, 8, 8)) == (g, d) == tuple(_n_params(n) for n in resnet.build(cfg, (1, 8, 8)))
    # Conditional: one BN scale and shift per class instead of one (3 - 1 more pairs on 4 + 2 + 2 channels),
    # and D's projection (3 classes x 2 channels).
    cond = NetConfig(family="resnet", z_dim=2, n_classes=3, resnet=cfg.resnet)
    assert resnet.parameter_count(cond, (1, 8, 8)) == (g + 2 * 2 * (4 + 2 + 2), d + 3 * 2)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 64, 64)], ids=["1x28x28", "1x64x64"])
def test_parameter_count_of_the_default_nets(shape):
    cfg = NetConfig(family="resnet", n_classes=10)
    assert resnet.parameter_count(cfg, shape) == tuple(_n_params(n) for n in resnet.build(cfg, shape))


def test_check_size_names_the_family_settings():
    g, d = resnet.parameter_count(SMALL, (1, 28, 28))
    resnet.check_size(SMALL, (1, 28, 28), max_parameters=g + d)  # at the limit: allowed
    with pytest.raises(ConfigError, match=r"model\.resnet\.g_width=8.*1x28x28"):
        resnet.check_size(SMALL, (1, 28, 28), max_parameters=g + d - 1)


def test_an_auxiliary_classifier_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="d_cond=aux"):
        resnet.build(NetConfig(family="resnet", n_classes=4, d_cond="aux"), (1, 16, 16))
