"""DCGAN generator and discriminator (Radford et al. 2016), built from the target shape.

Both networks work on [B, C, H, W] for any C, H, W (28x28 digits, 64x64 RGB,
80x64 mel spectrograms...). The number of 2x scales is chosen from H and W:
G starts from a small base grid and doubles it k times; where H or W is not
base * 2^k, G renders a slightly larger grid and crops its centre.

With `n_classes` > 0 both are class-conditional. G reads the label either
one-hot beside z (`g_cond="concat"`, Mirza and Osindero 2014) or as a class
scale and shift in each of its batch norms (`g_cond="batchnorm"`, as SNGAN
and BigGAN). D either reads it as one-hot planes beside the image channels
(`d_cond="concat"`) or adds the inner product of a class embedding with the
features its linear head reads (`d_cond="projection"`, Miyato and Koyama
2018): the label then asks "is this a real x of class y" at the level of D's
last features rather than of the pixels. With `d_cond="aux"` D does not read
the label at all: a second linear head on the same features predicts it
(AC-GAN, Odena et al. 2017), and `D(x, y, classify=True)` returns those class
logits beside the score, for the loss to train D's head on real labels and G
towards samples D assigns to the label G was given.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from multigan.config import NetConfig
from multigan.errors import ConfigError
from multigan.nets.layers import ConditionalBatchNorm


def plan_scales(height: int, width: int, min_base: int = 4, max_scales: int = 6) -> tuple[int, int, int]:
    """(k, h0, w0): k doublings from a base grid h0 x w0 that covers height x width.

    k is the largest count for which the base stays at least `min_base` on
    its shorter side, e.g. 28x28 -> (2, 7, 7), 64x64 -> (4, 4, 4), 80x64 -> (4, 5, 4).
    """
    if min(height, width) < min_base:
        raise ConfigError(f"images must be at least {min_base}x{min_base}, got {height}x{width}")
    k = 0
    while k < max_scales and min(height, width) / 2 ** (k + 1) >= min_base:
        k += 1
    # Prefer exact halvings: drop scales that would need cropping when an exact plan exists.
    exact = 0
    while exact < k and height % 2 ** (exact + 1) == 0 and width % 2 ** (exact + 1) == 0:
        exact += 1
    if exact >= 2:
        k = exact
    return k, math.ceil(height / 2**k), math.ceil(width / 2**k)


def _init_weights(m: nn.Module) -> None:
    # N(0, 0.02) for convolutions and linear layers, N(1, 0.02) for BN scale (DCGAN paper).
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)) and m.weight is not None:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z [B, z_dim] (and labels y [B] when conditional) -> x [B, C, H, W] in [-1, 1]."""

    def __init__(self, cfg: NetConfig, shape: tuple[int, int, int]):
        super().__init__()
        c_out, self.height, self.width = shape
        self.z_dim, self.n_classes = cfg.z_dim, cfg.n_classes
        # Labels in the norms (ConditionalBatchNorm), or one-hot beside z.
        self.cbn = cfg.n_classes if cfg.g_cond == "batchnorm" else 0
        n_onehot = cfg.n_classes if not self.cbn else 0
        k, h0, w0 = plan_scales(self.height, self.width)
        widths = [min(cfg.g_width * 2 ** (k - 1 - i), cfg.max_width) for i in range(k)] if k else [cfg.g_width]
        self.base = (widths[0], h0, w0)
        self.project = nn.Sequential(
            nn.Linear(cfg.z_dim + n_onehot, widths[0] * h0 * w0, bias=cfg.g_norm == "none"),
            nn.Unflatten(1, self.base),
            _norm(cfg.g_norm, widths[0], self.cbn),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = _g_refine(widths[0], cfg.depth, cfg.g_norm, self.cbn)
        for c_in, c_next in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_next, 4, 2, 1, bias=cfg.g_norm == "none"),
                       _norm(cfg.g_norm, c_next, self.cbn), nn.ReLU(inplace=True)]
            layers += _g_refine(c_next, cfg.depth, cfg.g_norm, self.cbn)
        # The last layer doubles to full size (or keeps it when k == 0) and maps to C channels.
        last = nn.ConvTranspose2d(widths[-1], c_out, 4, 2, 1) if k else nn.Conv2d(widths[-1], c_out, 3, 1, 1)
        self.body = nn.Sequential(*layers, last, nn.Tanh())
        self.apply(_init_weights)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.n_classes:
            if y is None:
                raise ValueError("this generator is class-conditional: pass labels y [B]")
            if self.cbn:
                return self._crop(_through(self.body, _through(self.project, z, y), y))
            z = torch.cat([z, torch.nn.functional.one_hot(y, self.n_classes).to(z.dtype)], 1)  # [B, z_dim + K]
        return self._crop(self.body(self.project(z)))

    def _crop(self, x: Tensor) -> Tensor:
        """x [B, C, h0 * 2^k, w0 * 2^k] -> its centre [B, C, H, W]."""
        dh, dw = x.shape[2] - self.height, x.shape[3] - self.width
        if dh or dw:
            x = x[:, :, dh // 2:dh // 2 + self.height, dw // 2:dw // 2 + self.width]
        return x


def _through(layers: nn.Sequential, h: Tensor, y: Tensor) -> Tensor:
    """`layers` applied in turn, the class-conditional norms given the labels y [B] too."""
    for m in layers:
        h = m(h, y) if isinstance(m, ConditionalBatchNorm) else m(h)
    return h


def _g_refine(channels: int, depth: int, norm: str, n_classes: int = 0) -> list[nn.Module]:
    """`depth` size-preserving 3x3 conv blocks: more capacity at one scale at little cost on small grids."""
    return [m for _ in range(depth)
            for m in (nn.Conv2d(channels, channels, 3, 1, 1, bias=norm == "none"), _norm(norm, channels, n_classes),
                      nn.ReLU(inplace=True))]


def _d_refine(channels: int, depth: int, norm: str) -> list[nn.Module]:
    return [m for _ in range(depth)
            for m in (nn.Conv2d(channels, channels, 3, 1, 1, bias=norm == "none"), _norm(norm, channels),
                      nn.LeakyReLU(0.2, inplace=True))]


def _norm(kind: str, channels: int, n_classes: int = 0) -> nn.Module:
    """The norm `kind` over `channels`; with `n_classes`, batch norm takes its scale and shift from the label."""
    if kind == "batch":
        return ConditionalBatchNorm(channels, n_classes) if n_classes else nn.BatchNorm2d(channels)
    if kind == "layer":  # per example over (C, H, W): safe with the gradient penalty
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class Discriminator(nn.Module):
    """x [B, C, H, W] (and labels y [B] when conditional) -> one raw score per example [B]."""

    def __init__(self, cfg: NetConfig, shape: tuple[int, int, int]):
        super().__init__()
        c_in, height, width = shape
        k, _, _ = plan_scales(height, width)
        k = max(k, 1)
        widths = [min(cfg.d_width * 2**i, cfg.max_width) for i in range(k)]
        self.n_classes = cfg.n_classes
        self.planes = cfg.n_classes if cfg.d_cond == "concat" else 0  # one-hot label planes beside the image
        layers: list[nn.Module] = [nn.Conv2d(c_in + self.planes, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        layers += _d_refine(widths[0], cfg.depth, cfg.d_norm)
        h, w = height // 2, width // 2
        for c_prev, c_next in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_prev, c_next, 4, 2, 1, bias=cfg.d_norm == "none"), _norm(cfg.d_norm, c_next), nn.LeakyReLU(0.2, inplace=True)]
            layers += _d_refine(c_next, cfg.depth, cfg.d_norm)
            h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.mbstd_group = cfg.mbstd_group
        self.head = nn.Linear((widths[-1] + (1 if cfg.mbstd_group else 0)) * h * w, 1)
        # Projection: y's row of `embed` is a class-specific second head on the same flattened
        # features. On features averaged over the grid (as SNGAN pools them) it did far worse on
        # MNIST (classifier score 6.30 against 9.60 after 2,100 steps): the label then cannot
        # say where in the sample a class's strokes belong.
        self.embed = nn.Embedding(cfg.n_classes, widths[-1] * h * w) \
            if cfg.n_classes and cfg.d_cond == "projection" else None
        # AC-GAN: the label is an output, not an input; the loss asks for it with classify=True.
        self.classifier = nn.Linear(widths[-1] * h * w, cfg.n_classes) if cfg.n_classes and cfg.d_cond == "aux" else None
        self.classifies = self.classifier is not None
        self.apply(_init_weights)
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        if cfg.spectral_norm:  # after init: the parametrisation wraps the initialised weight
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    spectral_norm(m)

    def forward(self, x: Tensor, y: Tensor | None = None, classify: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The score [B]; with classify=True (a D built with d_cond="aux"), (score [B], class logits [B, K])."""
        if classify and not self.classifies:
            raise ValueError("this discriminator has no class head: build it with model.d_cond=aux")
        if self.planes or self.embed is not None:  # an aux D predicts the label rather than reading it
            if y is None:
                raise ValueError("this discriminator is class-conditional: pass labels y [B]")
            if self.planes:
                planes = torch.nn.functional.one_hot(y, self.n_classes).to(x.dtype)  # [B, K]
                x = torch.cat([x, planes[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)  # [B, C + K, H, W]
        h = self.features(x)  # [B, C', h, w]
        seen = torch.cat([h, minibatch_std(h, self.mbstd_group)], 1) if self.mbstd_group else h  # [B, C' (+1), h, w]
        score = self.head(seen.flatten(1)).squeeze(1)  # [B]
        if self.embed is not None:
            score = score + (self.embed(y).to(h.dtype) * h.flatten(1)).sum(1)
        return (score, self.classifier(h.flatten(1))) if classify else score


def minibatch_std(h: Tensor, group: int) -> Tensor:
    """h [B, C, H, W] -> [B, 1, H, W]: per group of `group` consecutive examples (the whole batch when it
    does not divide), the standard deviation over the group, averaged over channels and broadcast back.

    D sees how varied the batch is, so a G that draws too alike samples is easy to tell (Karras et al. 2018).
    """
    b = h.shape[0]
    g = group if b % group == 0 else b
    x = h.float().unflatten(0, (b // g, g))  # [B/g, g, C, H, W]
    std = (x.var(1, unbiased=False) + 1e-8).sqrt().mean(1, keepdim=True)  # [B/g, 1, H, W]
    return std.repeat_interleave(g, 0).to(h.dtype)  # [B, 1, H, W]


def build(cfg: NetConfig, shape: tuple[int, int, int]) -> tuple[Generator, Discriminator]:
    """G and D for samples of `shape` (C, H, W)."""
    if len(shape) != 3:
        raise ConfigError(f"the DCGAN family needs samples of shape (C, H, W), got {tuple(shape)}")
    if cfg.n_classes < 0:  # -1 means "as many as the data has": only the data can say
        raise ConfigError("model.n_classes=-1 must be resolved from the data's labels before the nets are built")
    check_size(cfg, shape)
    return Generator(cfg, shape), Discriminator(cfg, shape)


# Sizes from the settings alone -------------------------------------------------------
# Settings are checked before nets are built from them: a corrupt or hostile checkpoint
# could otherwise ask for terabytes. 1e9 parameters (4 GB of float32 weights for G and D,
# 16 GB or more of training state) is hundreds of times the presets.
MAX_PARAMETERS = 10**9
MAX_SIDE = 2**24  # pixels on one side of a sample: more is a corrupt shape, not an image


def _norm_count(kind: str, channels: int, n_classes: int = 0) -> int:
    """Scale and shift (running statistics are buffers); per class for class-conditional batch norm."""
    if kind == "batch" and n_classes:
        return 2 * n_classes * channels
    return 2 * channels if kind in ("batch", "layer") else 0


def _conv_count(c_in: int, c_out: int, kernel: int, norm: str, n_classes: int = 0) -> int:
    """A square convolution, biased only without a norm, and its norm."""
    return c_in * c_out * kernel * kernel + (c_out if norm == "none" else 0) + _norm_count(norm, c_out, n_classes)


def parameter_count(cfg: NetConfig, shape: tuple[int, int, int]) -> tuple[int, int]:
    """(G, D): how many parameters `build(cfg, shape)` creates, counted layer by layer without allocating."""
    c, height, width = shape
    n_classes = max(cfg.n_classes, 0)  # -1, not yet resolved from the data, counts as unconditional
    cbn = n_classes if cfg.g_cond == "batchnorm" else 0
    n_in = cfg.z_dim + (0 if cbn else n_classes)
    k, h0, w0 = plan_scales(height, width)
    # Generator: project z to the base grid, k - 1 doublings, the last doubling to C channels.
    widths = [min(cfg.g_width * 2 ** (k - 1 - i), cfg.max_width) for i in range(k)] if k else [cfg.g_width]
    base = widths[0] * h0 * w0
    g = n_in * base + (base if cfg.g_norm == "none" else 0) + _norm_count(cfg.g_norm, widths[0], cbn)
    g += cfg.depth * _conv_count(widths[0], widths[0], 3, cfg.g_norm, cbn)
    for c_prev, c_next in zip(widths[:-1], widths[1:]):
        g += _conv_count(c_prev, c_next, 4, cfg.g_norm, cbn) + cfg.depth * _conv_count(c_next, c_next, 3, cfg.g_norm, cbn)
    g += widths[-1] * c * (16 if k else 9) + c
    # Discriminator: max(k, 1) halvings, then a linear head on what is left of the grid.
    widths = [min(cfg.d_width * 2**i, cfg.max_width) for i in range(max(k, 1))]
    planes = n_classes if cfg.d_cond == "concat" else 0
    d = (c + planes) * widths[0] * 16 + widths[0]
    d += cfg.depth * _conv_count(widths[0], widths[0], 3, cfg.d_norm)
    h, w = height // 2, width // 2
    for c_prev, c_next in zip(widths[:-1], widths[1:]):
        d += _conv_count(c_prev, c_next, 4, cfg.d_norm) + cfg.depth * _conv_count(c_next, c_next, 3, cfg.d_norm)
        h, w = h // 2, w // 2
    d += (widths[-1] + (1 if cfg.mbstd_group else 0)) * h * w + 1
    if n_classes and cfg.d_cond == "projection":
        d += n_classes * widths[-1] * h * w  # the projection's class embedding
    if n_classes and cfg.d_cond == "aux":
        d += n_classes * (widths[-1] * h * w + 1)  # the auxiliary classifier's head
    return g, d


def check_size(cfg: NetConfig, shape: tuple[int, int, int], max_parameters: int = MAX_PARAMETERS) -> None:
    """Raise ConfigError, before anything is allocated, if G and D together would exceed `max_parameters`."""
    if len(shape) != 3 or not all(1 <= s <= MAX_SIDE for s in shape):
        raise ConfigError(f"the DCGAN family needs samples of shape (C, H, W), each from 1 to {MAX_SIDE}, "
                          f"got {tuple(shape)}")
    g, d = parameter_count(cfg, shape)
    if g + d > max_parameters:
        raise ConfigError(
            f"the generator would have {g:.2g} and the discriminator {d:.2g} parameters, more than the {max_parameters:.2g} "
            f"allowed for both (model.g_width={cfg.g_width}, d_width={cfg.d_width}, max_width={cfg.max_width}, "
            f"depth={cfg.depth}, z_dim={cfg.z_dim}, n_classes={cfg.n_classes}; samples {'x'.join(map(str, shape))})")
