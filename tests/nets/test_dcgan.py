"""DCGAN generator and discriminator, built from the sample shape."""
from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from multigan.config import D_CONDS, G_CONDS, NetConfig
from multigan.errors import ConfigError
from multigan.nets.dcgan import build, plan_scales
from multigan.nets.layers import ConditionalBatchNorm

SHAPES = [(1, 28, 28), (3, 64, 64), (1, 80, 64), (1, 64, 80), (3, 32, 32), (1, 27, 27)]
SMALL = NetConfig(z_dim=16, g_width=8, d_width=8)
# Every way D reads the label, each beside one way G reads it (every G way appears too).
COND_PAIRS = list(zip(D_CONDS, itertools.cycle(G_CONDS)))


def _ids(shape):
    return "x".join(map(str, shape))


@pytest.mark.parametrize(
    "h,w,plan",
    [
        (28, 28, (2, 7, 7)),
        (64, 64, (4, 4, 4)),
        (80, 64, (4, 5, 4)),
        (64, 80, (4, 4, 5)),
        (32, 32, (3, 4, 4)),
        (16, 16, (2, 4, 4)),
        (8, 8, (1, 4, 4)),
        (4, 4, (0, 4, 4)),
        (27, 27, (2, 7, 7)),  # 28x28 rendered, centre-cropped to 27x27
        (256, 256, (6, 4, 4)),  # capped at max_scales
    ],
)
def test_plan_scales_examples(h, w, plan):
    assert plan_scales(h, w) == plan


@pytest.mark.parametrize("h,w", [(28, 28), (27, 27), (80, 64), (64, 80), (100, 36), (5, 9), (1000, 1000)])
def test_plan_scales_base_covers_the_target(h, w):
    k, h0, w0 = plan_scales(h, w)
    assert h0 * 2**k >= h and w0 * 2**k >= w
    assert (h0 - 1) * 2**k < h and (w0 - 1) * 2**k < w, "the base grid is larger than it needs to be"
    assert min(h0, w0) >= 4 or k == 0


def test_plan_scales_rejects_tiny_images():
    with pytest.raises(ConfigError):
        plan_scales(3, 28)


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_shapes_and_ranges(shape):
    torch.manual_seed(0)
    G, D = build(SMALL, shape)
    assert G.z_dim == SMALL.z_dim
    z = torch.randn(4, SMALL.z_dim) * 3  # wide z: tanh must still bound the output
    x = G(z)
    assert x.shape == (4, *shape)
    assert x.min() >= -1 and x.max() <= 1
    assert x.std() > 0, "G ignores z"
    assert not torch.equal(x[0], x[1])
    scores = D(x)
    assert scores.shape == (4,), "D must give one score per example"
    assert torch.isfinite(scores).all()
    # A single example also works in eval mode (BatchNorm uses its running statistics).
    G.eval(), D.eval()
    assert G(z[:1]).shape == (1, *shape)
    assert D(x[:1]).shape == (1,)


def test_scores_are_per_example():
    torch.manual_seed(0)
    _, D = build(SMALL, (1, 28, 28))
    D.eval()
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    together = D(x)
    alone = torch.stack([D(x[i:i + 1])[0] for i in range(6)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_build_rejects_non_image_shapes():
    with pytest.raises(ConfigError):
        build(SMALL, (80, 64))


def _spectral_normed(module: nn.Module) -> list[nn.Module]:
    return [
        m for m in module.modules()
        if parametrize.is_parametrized(m, "weight")
        and any(type(p).__name__ == "_SpectralNorm" for p in m.parametrizations.weight)
    ]


def test_spectral_norm_parametrises_every_D_layer_and_trains():
    torch.manual_seed(0)
    cfg = NetConfig(z_dim=16, g_width=8, d_width=8, spectral_norm=True)
    G, D = build(cfg, (1, 28, 28))
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and _spectral_normed(D) == layers
    assert not _spectral_normed(G), "spectral norm is a D option"
    _, plain = build(SMALL, (1, 28, 28))
    assert not _spectral_normed(plain)

    # The largest singular value of each normalised weight is about 1 (after a few power iterations).
    with torch.no_grad():
        for _ in range(5):
            D(torch.randn(2, 1, 28, 28))
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert abs(sigma.item() - 1) < 0.1, (m, sigma)

    # One optimiser step on a real/fake loss.
    opt = torch.optim.Adam(D.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in D.state_dict().items()}
    real, fake = torch.rand(8, 1, 28, 28) * 2 - 1, G(torch.randn(8, 16)).detach()
    loss = nn.functional.softplus(-D(real)).mean() + nn.functional.softplus(D(fake)).mean()
    opt.zero_grad()
    loss.backward()
    grads = [p.grad for p in D.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    opt.step()
    after = D.state_dict()
    originals = [k for k in before if k.endswith("parametrizations.weight.original")]
    assert originals, "no spectral-norm weights in D's state_dict"
    assert any(not torch.equal(before[k], after[k]) for k in originals), "the step left D's weights unchanged"
    assert torch.isfinite(D(real)).all()


@pytest.mark.parametrize("d_norm", ["layer", "none"])
def test_d_norm_without_batch_norm(d_norm):
    cfg = NetConfig(z_dim=16, g_width=8, d_width=8, d_norm=d_norm)
    _, D = build(cfg, (3, 64, 64))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    has_group_norm = any(isinstance(m, nn.GroupNorm) for m in D.modules())
    assert has_group_norm == (d_norm == "layer")
    # Per-example normalisation: an example's score does not depend on the rest of the batch.
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    D.train()
    assert torch.allclose(D(x)[:1], D(x[:1]), atol=1e-5)


def test_d_norm_batch_has_batch_norm():
    _, D = build(SMALL, (3, 64, 64))
    assert any(isinstance(m, nn.BatchNorm2d) for m in D.modules())


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 80, 64)], ids=_ids)
def test_parameter_count_grows_with_width(shape):
    counts = []
    for width in (4, 8, 16):
        G, D = build(NetConfig(z_dim=16, g_width=width, d_width=width), shape)
        counts.append((_n_params(G), _n_params(D)))
    g_counts, d_counts = zip(*counts)
    assert list(g_counts) == sorted(set(g_counts)), g_counts
    assert list(d_counts) == sorted(set(d_counts)), d_counts
    # G and D widths are set independently.
    G_wide, D_narrow = build(NetConfig(z_dim=16, g_width=16, d_width=4), shape)
    assert _n_params(G_wide) == g_counts[2] and _n_params(D_narrow) == d_counts[0]


def test_max_width_caps_channels():
    G, D = build(NetConfig(z_dim=16, g_width=64, d_width=64, max_width=64), (3, 64, 64))
    for m in list(G.modules()) + list(D.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            assert m.in_channels <= 64 and m.out_channels <= 64


# Class-conditional nets --------------------------------------------------------------
COND_SHAPES = [(1, 28, 28), (3, 64, 64), (1, 64, 64)]  # digits, RGB, a 64-mel x 64-frame spectrogram
CONDITIONAL = NetConfig(z_dim=16, g_width=8, d_width=8, n_classes=10)


@pytest.mark.parametrize("d_cond,g_cond", COND_PAIRS)
@pytest.mark.parametrize("shape", COND_SHAPES, ids=_ids)
def test_conditional_shapes_and_ranges(shape, d_cond, g_cond, one_thread):
    torch.manual_seed(0)
    G, D = build(replace(CONDITIONAL, d_cond=d_cond, g_cond=g_cond), shape)
    assert G.n_classes == D.n_classes == 10
    z, y = torch.randn(4, 16) * 3, torch.tensor([0, 3, 9, 3])
    x = G(z, y)
    assert x.shape == (4, *shape)
    assert x.min() >= -1 and x.max() <= 1
    scores = D(x, y)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    G.eval(), D.eval()
    assert G(z[:1], y[:1]).shape == (1, *shape)
    assert D(x[:1], y[:1]).shape == (1,)


@pytest.mark.parametrize("d_cond,g_cond", COND_PAIRS)
def test_the_label_changes_G_and_D_outputs(d_cond, g_cond, one_thread):
    torch.manual_seed(0)
    G, D = build(replace(CONDITIONAL, d_cond=d_cond, g_cond=g_cond), (1, 28, 28))
    G.eval(), D.eval()  # running statistics: each row is computed on its own
    z = torch.randn(1, 16).expand(10, 16)  # one z, every label
    x = G(z, torch.arange(10))
    for i in range(10):
        for j in range(i):
            assert not torch.allclose(x[i], x[j], atol=1e-6), f"labels {i} and {j} give the same sample"
    scores = D(x[:1].expand(10, -1, -1, -1), torch.arange(10))  # one sample, every label
    if d_cond == "aux":  # the label is what D predicts, not what it reads
        assert torch.equal(scores, D(x[:1].expand(10, -1, -1, -1), torch.arange(10).flip(0))), \
            "an auxiliary-classifier D must not read the label"
        _, logits = D(x, torch.arange(10), classify=True)
        assert logits.shape == (10, 10) and len({tuple(r) for r in logits.tolist()}) == 10
    else:
        assert len(set(scores.tolist())) == 10, "D ignores the label"


@pytest.mark.parametrize("d_cond,g_cond", COND_PAIRS)
def test_conditional_nets_need_labels(d_cond, g_cond):
    G, D = build(replace(CONDITIONAL, d_cond=d_cond, g_cond=g_cond), (1, 28, 28))
    with pytest.raises(ValueError, match="labels"):
        G(torch.randn(2, 16))
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    if d_cond == "aux":
        assert D(x).shape == (2,), "an auxiliary-classifier D scores without labels"
    else:
        with pytest.raises(ValueError, match="labels"):
            D(x)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 64, 64)], ids=_ids)
def test_depth_adds_3x3_blocks_and_keeps_shapes(shape, one_thread):
    k = plan_scales(*shape[1:])[0]
    torch.manual_seed(0)
    G0, D0 = build(SMALL, shape)
    for depth in (1, 2):
        cfg = NetConfig(z_dim=16, g_width=8, d_width=8, depth=depth)
        G, D = build(cfg, shape)
        assert _n_params(G) > _n_params(G0) and _n_params(D) > _n_params(D0)
        # `depth` size-preserving 3x3 convolutions at each of the k scales of G and of D.
        for net in (G, D):
            refine = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.stride == (1, 1)]
            assert len(refine) == depth * k, (net.__class__.__name__, len(refine))
            assert all(m.in_channels == m.out_channels for m in refine)
        x = G(torch.randn(3, 16))
        assert x.shape == (3, *shape)
        assert D(x).shape == (3,)


def test_unconditional_nets_have_no_embedding_and_the_dcgan_parameter_count():
    G, D = build(SMALL, (1, 28, 28))
    assert G.n_classes == D.n_classes == 0
    assert not any(isinstance(m, nn.Embedding) for net in (G, D) for m in net.modules())
    assert not any("embed" in k for net in (G, D) for k in net.state_dict())  # older checkpoints still load
    # By hand for 1x28x28, z 16, widths 8: G 7x7x16 -> 14x14x8 -> 28x28x1; D 28 -> 14x14x8 -> 7x7x16 -> 1.
    g_count = 16 * 16 * 49 + 2 * 16 + 16 * 8 * 16 + 2 * 8 + (8 * 16 + 1)
    d_count = (16 * 8 + 8) + 8 * 16 * 16 + 2 * 16 + (16 * 49 + 1)
    assert (_n_params(G), _n_params(D)) == (g_count, d_count)
    # Only conditioning adds parameters.
    Gc, Dc = build(CONDITIONAL, (1, 28, 28))
    assert _n_params(Gc) > g_count and _n_params(Dc) > d_count


def test_classes_from_the_data_must_be_resolved_before_building():
    with pytest.raises(ConfigError, match="n_classes=-1"):
        build(NetConfig(n_classes=-1), (1, 28, 28))


# Sizes from the settings alone ---------------------------------------------------------
COUNT_SHAPES = [(1, 28, 28), (3, 64, 64), (1, 80, 64), (1, 128, 128), (1, 4, 4), (1, 27, 27)]


@pytest.mark.parametrize("shape", COUNT_SHAPES, ids=_ids)
def test_parameter_count_equals_the_built_nets(shape, one_thread):
    from multigan.config import D_NORMS, G_NORMS
    from multigan.nets.dcgan import parameter_count

    # max_width 16 caps the coarser scales of the wider nets, so the cap is counted too.
    # G's count does not read d_norm nor D's g_norm: pairing them covers every value of each.
    for n_classes, (d_cond, g_cond), depth, sn, (d_norm, g_norm), (width, mbstd) in itertools.product(
            (0, 10), COND_PAIRS, (0, 1), (False, True), zip(D_NORMS, G_NORMS), ((4, 0), (8, 4))):
        if g_cond == "batchnorm" and g_norm != "batch":
            continue
        cfg = NetConfig(z_dim=16, g_width=width, d_width=width, max_width=16, depth=depth, n_classes=n_classes,
                        spectral_norm=sn, d_norm=d_norm, g_norm=g_norm, d_cond=d_cond, g_cond=g_cond,
                        mbstd_group=mbstd)
        G, D = build(cfg, shape)
        assert parameter_count(cfg, shape) == (_n_params(G), _n_params(D)), cfg


def test_parameter_count_of_the_default_nets():
    from multigan.nets.dcgan import parameter_count

    for cfg, shape in ((NetConfig(), (3, 64, 64)), (NetConfig(depth=1, n_classes=10), (1, 28, 28))):
        G, D = build(cfg, shape)
        assert parameter_count(cfg, shape) == (_n_params(G), _n_params(D))


def test_check_size_refuses_at_the_limit_and_says_why():
    from multigan.nets.dcgan import check_size, parameter_count

    g, d = parameter_count(SMALL, (1, 28, 28))
    check_size(SMALL, (1, 28, 28), max_parameters=g + d)  # exactly at the limit: allowed
    with pytest.raises(ConfigError) as err:
        check_size(SMALL, (1, 28, 28), max_parameters=g + d - 1)
    message = str(err.value)
    assert f"generator would have {g:.2g}" in message and f"discriminator {d:.2g}" in message, message
    assert "g_width=8" in message and "1x28x28" in message, message


def test_check_size_counts_without_allocating():
    import time

    from multigan.nets.dcgan import MAX_PARAMETERS, check_size, parameter_count

    huge = NetConfig(z_dim=65536, g_width=65536, d_width=65536, max_width=65536, depth=16, n_classes=100_000)
    start = time.perf_counter()
    g, d = parameter_count(huge, (3, 1024, 1024))
    with pytest.raises(ConfigError, match="generator would have"):
        check_size(huge, (3, 1024, 1024))
    assert time.perf_counter() - start < 0.1
    # One 65536 x 65536 x 3 x 3 convolution alone is 3.9e10 weights.
    assert g > 65536**2 * 9 and d > 65536**2 * 9 and g + d > MAX_PARAMETERS


@pytest.mark.parametrize("shape", [(1, 2**30, 28), (0, 28, 28), (1, 28, 28, 1)], ids=_ids)
def test_check_size_refuses_absurd_shapes(shape):
    from multigan.nets.dcgan import check_size

    with pytest.raises(ConfigError, match="shape"):
        check_size(SMALL, shape)


def test_build_checks_the_size_before_building_anything(monkeypatch):
    from multigan.nets import dcgan

    def never(*args):
        raise AssertionError("a net was built before its size was checked")

    monkeypatch.setattr(dcgan, "Generator", never)
    monkeypatch.setattr(dcgan, "Discriminator", never)
    with pytest.raises(ConfigError, match="parameters"):
        dcgan.build(NetConfig(g_width=6000, d_width=6000, max_width=6000), (1, 28, 28))


def test_a_checkpoint_asking_for_huge_nets_is_refused_quickly(tmp_path, one_thread):
    """A real tiny checkpoint whose settings were edited to widths of 6000 (1.2e9 parameters)."""
    import json
    import time

    from multigan.config import DataConfig, RunConfig, TrainConfig
    from multigan.data.tensors import ImageTensorDataset
    from multigan.engine.checkpoint import load_checkpoint, save_checkpoint
    from multigan.engine.trainer import train
    from multigan.modalities.image import ImageModality
    from multigan.nets.dcgan import check_size

    shape = (1, 16, 16)
    cfg = RunConfig(data=DataConfig(source="folder", channels=1, height=16, width=16),
                    model=NetConfig(z_dim=8, g_width=8, d_width=8),
                    train=TrainConfig(steps=1, batch_size=8, device="cpu", checkpoint_every=1, preview_every=1000,
                                      log_every=1, n_preview=4))
    torch.manual_seed(0)
    dataset = ImageTensorDataset(torch.randint(0, 256, (16, *shape), dtype=torch.uint8))
    state = load_checkpoint(train(cfg, ImageModality(*shape), *build(cfg.model, shape), dataset, tmp_path / "run",
                                  progress=False))
    settings = json.loads(state["config"])
    settings["model"].update(g_width=6000, d_width=6000, max_width=6000)  # max_width too: it caps the others
    edited = save_checkpoint({**state, "config": json.dumps(settings)}, tmp_path / "edited.pt")

    start = time.perf_counter()
    state = load_checkpoint(edited)
    model = RunConfig.from_json(state["config"]).model
    shape = ImageModality.from_state(state["modality"]["state"]).shape
    with pytest.raises(ConfigError, match="g_width=6000"):
        check_size(model, shape)
    with pytest.raises(ConfigError, match="g_width=6000"):
        build(model, shape)
    assert time.perf_counter() - start < 1.0


def test_projection_reads_the_label_only_through_its_embedding(one_thread):
    torch.manual_seed(0)
    _, D = build(replace(CONDITIONAL, d_cond="projection", spectral_norm=True), (1, 28, 28))
    assert D.features[0].in_channels == 1, "a projection D has no label planes"
    assert parametrize.is_parametrized(D.embed, "weight"), "spectral norm must bound the class embedding too"
    D.eval()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    y = torch.tensor([1, 4, 7])
    with torch.no_grad():
        h = D.features(x).flatten(1)
        expected = D.head(h).squeeze(1) + (D.embed(y) * h).sum(1)
        torch.testing.assert_close(D(x, y), expected)


def test_batchnorm_conditioning_puts_the_label_in_every_G_norm(one_thread):
    torch.manual_seed(0)
    G, _ = build(replace(CONDITIONAL, g_cond="batchnorm"), (1, 28, 28))
    norms = [m for m in G.modules() if isinstance(m, ConditionalBatchNorm)]
    assert norms and not any(isinstance(m, nn.BatchNorm2d) and m.affine for m in G.modules())
    assert G.project[0].in_features == 16, "z alone enters G: the label is in the norms"
    with pytest.raises(ConfigError, match="g_norm=batch"):
        NetConfig(n_classes=10, g_cond="batchnorm", g_norm="layer")


def test_minibatch_std_lets_D_see_how_varied_a_group_is(one_thread):
    from multigan.nets.dcgan import minibatch_std

    h = torch.randn(8, 5, 3, 3)
    std = minibatch_std(h, 4)
    assert std.shape == (8, 1, 3, 3)
    torch.testing.assert_close(std[0], h[:4].std(0, unbiased=False).mean(0, keepdim=True), atol=1e-4, rtol=1e-4)
    assert torch.equal(std[0], std[3]) and not torch.equal(std[0], std[4]), "one value per group of 4"
    assert minibatch_std(h[:1].expand(4, -1, -1, -1), 4).max() < 1e-3, "identical examples: no spread"
    assert minibatch_std(h[:6], 4).shape == (6, 1, 3, 3), "a batch that 4 does not divide is one group"

    torch.manual_seed(0)
    _, D = build(replace(CONDITIONAL, n_classes=0, mbstd_group=4, d_norm="none"), (1, 28, 28))
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        alike, varied = D(x[:1].expand(4, -1, -1, -1))[0], D(torch.cat([x[:1], x[1:]]))[0]
    assert alike != varied, "the same example scores differently beside copies of itself and beside others"


def test_auxiliary_classifier_is_a_second_head_on_the_same_features(one_thread):
    torch.manual_seed(0)
    _, D = build(replace(CONDITIONAL, d_cond="aux", spectral_norm=True), (1, 28, 28))
    assert D.classifies and D.embed is None and D.features[0].in_channels == 1, "no label planes, no embedding"
    assert parametrize.is_parametrized(D.classifier, "weight"), "spectral norm must bound the class head too"
    D.eval()
    x, y = torch.rand(3, 1, 28, 28) * 2 - 1, torch.tensor([1, 4, 7])
    with torch.no_grad():
        h = D.features(x).flatten(1)
        score, logits = D(x, y, classify=True)
        torch.testing.assert_close(score, D.head(h).squeeze(1))
        torch.testing.assert_close(logits, D.classifier(h))
        torch.testing.assert_close(D(x, y), score)
    for cfg in (CONDITIONAL, replace(CONDITIONAL, d_cond="projection"), replace(CONDITIONAL, d_cond="aux", n_classes=0)):
        _, other = build(cfg, (1, 28, 28))
        assert not other.classifies
        with pytest.raises(ValueError, match="d_cond=aux"):
            other(x, y if cfg.n_classes else None, classify=True)
