"""Residual generator and discriminator (SNGAN, Miyato et al. 2018; BigGAN, Brock et al. 2019).

Built from the target shape like the DCGAN family (`dcgan.plan_scales`): G
projects z to a base grid h0 x w0 and doubles it k times in residual
up-blocks, then crops the centre where H or W is not base * 2^k; D halves
the image k times in residual down-blocks and sums its last features over
space, so any [B, C, H, W] works (28x28 digits, 64x64 RGB, 80x64 mel).

With `n_classes` > 0, G's batch norms take their scale and shift from the
label (conditional batch norm, de Vries et al. 2017, as in SNGAN and
BigGAN), and D adds the projection of its pooled features on a label
embedding to its score (projection discriminator, Miyato and Koyama 2018).
Every conv, linear and embedding of D is spectrally normalised.

Settings: `NetConfig.resnet` (a `ResNetConfig`; None means its defaults),
`NetConfig.z_dim` and `NetConfig.n_classes`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from multigan.config import NetConfig, ResNetConfig
from multigan.errors import ConfigError
from multigan.nets.dcgan import MAX_PARAMETERS, MAX_SIDE, plan_scales
from multigan.nets.layers import ConditionalBatchNorm


def _widths(cfg: ResNetConfig, k: int) -> tuple[list[int], list[int]]:
    """Channels of G from the base grid to full size (k + 1 values), and of D's k' = max(k, 1) stages."""
    g = [min(cfg.g_width * 2 ** (k - i), cfg.max_width) for i in range(k + 1)]
    d = [min(cfg.d_width * 2**i, cfg.max_width) for i in range(max(k, 1))]
    return g, d


def _stages(c_in: int, widths: list[int], depth: int) -> list[tuple[int, int, bool]]:
    """(in, out, resample) of every block: `depth` blocks per width, the first of each resamples."""
    blocks = []
    for c_out in widths:
        blocks += [(c_in, c_out, True)] + [(c_out, c_out, False)] * (depth - 1)
        c_in = c_out
    return blocks


def _init(module: nn.Module, gain: float = 1.0) -> nn.Module:
    # Xavier-uniform, sqrt(2) on the residual convs ahead of a ReLU (SNGAN's released code).
    nn.init.xavier_uniform_(module.weight, gain)
    nn.init.zeros_(module.bias)
    return module


class GBlock(nn.Module):
    """BN, ReLU, (2x nearest upsample), 3x3 conv, BN, ReLU, 3x3 conv; plus a 1x1 conv shortcut when shapes change."""

    def __init__(self, c_in: int, c_out: int, up: bool, n_classes: int):
        super().__init__()
        self.up = up
        self.bn1, self.bn2 = ConditionalBatchNorm(c_in, n_classes), ConditionalBatchNorm(c_out, n_classes)
        self.conv1 = _init(nn.Conv2d(c_in, c_out, 3, 1, 1), math.sqrt(2))
        self.conv2 = _init(nn.Conv2d(c_out, c_out, 3, 1, 1), math.sqrt(2))
        self.shortcut = _init(nn.Conv2d(c_in, c_out, 1)) if c_in != c_out or up else None

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = F.relu(self.bn1(x, y))
        if self.up:
            h, x = F.interpolate(h, scale_factor=2.0), F.interpolate(x, scale_factor=2.0)  # nearest
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + (self.shortcut(x) if self.shortcut is not None else x)


class Generator(nn.Module):
    """z [B, z_dim] (and labels y [B] when conditional) -> x [B, C, H, W] in [-1, 1]."""

    def __init__(self, cfg: NetConfig, shape: tuple[int, int, int]):
        super().__init__()
        rc = cfg.resnet or ResNetConfig()
        c_out, self.height, self.width = shape
        self.z_dim, self.n_classes = cfg.z_dim, cfg.n_classes
        k, h0, w0 = plan_scales(self.height, self.width)
        widths, _ = _widths(rc, k)
        self.base = (widths[0], h0, w0)
        self.project = _init(nn.Linear(cfg.z_dim, widths[0] * h0 * w0))
        # k = 0 (4x4 samples): `depth` blocks at the base size.
        self.blocks = nn.ModuleList(GBlock(a, b, up and k > 0, cfg.n_classes)
                                    for a, b, up in _stages(widths[0], widths[1:] or widths, rc.depth))
        self.bn = ConditionalBatchNorm(widths[-1], cfg.n_classes)
        self.out = _init(nn.Conv2d(widths[-1], c_out, 3, 1, 1))

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.n_classes and y is None:
            raise ValueError("this generator is class-conditional: pass labels y [B]")
        y = y if self.n_classes else None  # an unconditional G ignores labels, like the DCGAN family's
        h = self.project(z).unflatten(1, self.base)  # [B, C0, h0, w0]
        for block in self.blocks:
            h = block(h, y)
        x = torch.tanh(self.out(F.relu(self.bn(h, y))))  # [B, C, h0 * 2^k, w0 * 2^k]
        dh, dw = x.shape[2] - self.height, x.shape[3] - self.width
        if dh or dw:
            x = x[:, :, dh // 2:dh // 2 + self.height, dw // 2:dw // 2 + self.width]
        return x


class DBlock(nn.Module):
    """(ReLU), 3x3 conv, ReLU, 3x3 conv, (2x2 avg-pool); plus a 1x1 conv shortcut when shapes change.

    The first block ("optimized", SNGAN) has no leading ReLU: it reads the image itself.
    """

    def __init__(self, c_in: int, c_out: int, down: bool, first: bool):
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = _init(nn.Conv2d(c_in, c_out, 3, 1, 1), math.sqrt(2))
        self.conv2 = _init(nn.Conv2d(c_out, c_out, 3, 1, 1), math.sqrt(2))
        self.shortcut = _init(nn.Conv2d(c_in, c_out, 1)) if c_in != c_out or down else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        if self.down:
            # A 1x1 conv and an average pool commute: pool the shortcut first, on 4x fewer pixels.
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        return h + (self.shortcut(x) if self.shortcut is not None else x)


class Discriminator(nn.Module):
    """x [B, C, H, W] (and labels y [B] when conditional) -> one raw score per example [B]."""

    def __init__(self, cfg: NetConfig, shape: tuple[int, int, int]):
        super().__init__()
        rc = cfg.resnet or ResNetConfig()
        c_in, height, width = shape
        k, _, _ = plan_scales(height, width)
        _, widths = _widths(rc, k)
        self.n_classes = cfg.n_classes
        self.blocks = nn.Sequential(*(DBlock(a, b, down and k > 0, first=i == 0)
                                      for i, (a, b, down) in enumerate(_stages(c_in, widths, rc.depth))))
        self.head = _init(nn.Linear(widths[-1], 1))
        # Projection discriminator (Miyato and Koyama 2018). Spectrally normalised like every
        # other D layer: unbounded, the label term alone could let D tell classes apart and
        # push G to the one most typical image per class.
        self.embed = nn.Embedding(cfg.n_classes, widths[-1]) if cfg.n_classes else None
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                spectral_norm(m)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if self.embed is not None and y is None:
            raise ValueError("this discriminator is class-conditional: pass labels y [B]")
        h = F.relu(self.blocks(x)).sum((2, 3))  # global sum pooling: [B, C_last]
        out = self.head(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)
        return out


def build(cfg: NetConfig, shape: tuple[int, int, int]) -> tuple[Generator, Discriminator]:
    """G and D for samples of `shape` (C, H, W)."""
    if len(shape) != 3:
        raise ConfigError(f"the resnet family needs samples of shape (C, H, W), got {tuple(shape)}")
    if cfg.n_classes < 0:  # -1 means "as many as the data has": only the data can say
        raise ConfigError("model.n_classes=-1 must be resolved from the data's labels before the nets are built")
    if cfg.d_cond == "aux":
        raise ConfigError("model.d_cond=aux (an auxiliary classifier in D) is a DCGAN-family setting; "
                          "the resnet family's D always projects the label")
    check_size(cfg, shape)
    return Generator(cfg, shape), Discriminator(cfg, shape)


# Sizes from the settings alone (see dcgan.py: checked before anything is allocated) ------------
def parameter_count(cfg: NetConfig, shape: tuple[int, int, int]) -> tuple[int, int]:
    """(G, D): how many parameters `build(cfg, shape)` creates, counted block by block without allocating."""
    rc = cfg.resnet or ResNetConfig()
    c, height, width = shape
    n_classes = max(cfg.n_classes, 0)  # -1, not yet resolved from the data, counts as unconditional

    def bn(channels: int) -> int:
        return 2 * channels * (n_classes or 1)  # scale and shift, per class when conditional

    def conv(c_in: int, c_out: int, kernel: int) -> int:
        return c_in * c_out * kernel * kernel + c_out

    k, h0, w0 = plan_scales(height, width)
    g_widths, d_widths = _widths(rc, k)
    g = cfg.z_dim * g_widths[0] * h0 * w0 + g_widths[0] * h0 * w0
    for a, b, up in _stages(g_widths[0], g_widths[1:] or g_widths, rc.depth):
        g += bn(a) + conv(a, b, 3) + bn(b) + conv(b, b, 3) + (conv(a, b, 1) if a != b or (up and k > 0) else 0)
    g += bn(g_widths[-1]) + conv(g_widths[-1], c, 3)
    d = 0
    for a, b, down in _stages(c, d_widths, rc.depth):
        d += conv(a, b, 3) + conv(b, b, 3) + (conv(a, b, 1) if a != b or (down and k > 0) else 0)
    d += d_widths[-1] + 1 + n_classes * d_widths[-1]
    return g, d


def check_size(cfg: NetConfig, shape: tuple[int, int, int], max_parameters: int = MAX_PARAMETERS) -> None:
    """Raise ConfigError, before anything is allocated, if G and D together would exceed `max_parameters`."""
    if len(shape) != 3 or not all(1 <= s <= MAX_SIDE for s in shape):
        raise ConfigError(f"the resnet family needs samples of shape (C, H, W), each from 1 to {MAX_SIDE}, "
                          f"got {tuple(shape)}")
    g, d = parameter_count(cfg, shape)
    if g + d > max_parameters:
        rc = cfg.resnet or ResNetConfig()
        raise ConfigError(
            f"the generator would have {g:.2g} and the discriminator {d:.2g} parameters, more than the {max_parameters:.2g} "
            f"allowed for both (model.resnet.g_width={rc.g_width}, d_width={rc.d_width}, max_width={rc.max_width}, "
            f"depth={rc.depth}, model.z_dim={cfg.z_dim}, n_classes={cfg.n_classes}; samples {'x'.join(map(str, shape))})")
