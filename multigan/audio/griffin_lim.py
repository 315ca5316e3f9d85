"""Phase reconstruction from an STFT magnitude: fast Griffin-Lim."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from multigan.audio.spectral import _istft, _stft, hann_window

INITS = ("random", "zeros")


def initial_phase(magnitude: Tensor, init: str | Tensor = "random", generator: torch.Generator | None = None) -> Tensor:
    """Initial phase in radians for `griffin_lim`, shaped like magnitude [..., F, frames].

    "random": uniform on [0, 2 pi) (librosa's default; `generator` must be on
    magnitude's device), "zeros": zero phase (librosa's init=None), a tensor:
    phases broadcast to magnitude's shape.
    """
    if isinstance(init, Tensor):
        return init.to(device=magnitude.device, dtype=magnitude.dtype).expand_as(magnitude)
    if init == "random":
        return torch.rand(magnitude.shape, generator=generator, device=magnitude.device, dtype=magnitude.dtype) * (2 * math.pi)
    if init == "zeros":
        return torch.zeros_like(magnitude)
    raise ValueError(f"init must be one of {INITS} or a tensor of phases, not {init!r}")


def griffin_lim(magnitude: Tensor, n_fft: int, hop_length: int, n_iter: int = 32, momentum: float = 0.99,
                init: str | Tensor = "random", length: int | None = None, win_length: int | None = None,
                center: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Waveform whose STFT magnitude approximates `magnitude`: [..., n_fft // 2 + 1, frames] -> [..., T].

    Fast Griffin-Lim with librosa.griffinlim's conventions and update rule, so
    that from the same initial phase both give the same waveform: periodic
    Hann window, zero padding when centred (`spectral.stft`), T = length or
    hop_length * (frames - 1). momentum=0 is the original Griffin-Lim. init:
    see `initial_phase`. Runs in magnitude's dtype (float32 is faster) on its
    device, all examples in one batch.
    """
    if momentum < 0:
        raise ValueError(f"momentum must be >= 0, not {momentum}")
    lead, (F, frames) = magnitude.shape[:-2], magnitude.shape[-2:]
    if F != n_fft // 2 + 1:
        raise ValueError(f"magnitude has {F} frequency bins; n_fft={n_fft} needs {n_fft // 2 + 1}")
    S = magnitude.reshape(-1, F, frames)  # [B, F, frames]
    window = hann_window(win_length or n_fft, device=S.device, dtype=S.dtype)
    eps = torch.finfo(S.dtype).tiny
    alpha = momentum / (1.0 + momentum)

    def project(spec: Tensor) -> Tensor:
        # Onto consistent spectrograms: STFT(ISTFT(spec)). [B, F, frames]
        return _stft(_istft(spec, n_fft, hop_length, window, center, length), n_fft, hop_length, window, center)

    # Fast Griffin-Lim (Perraudin, Balazs & Sondergaard 2013) in librosa's form:
    # c_n = P_C(x_{n-1}); x_n = P_A(c_n - alpha c_{n-1}), alpha = momentum / (1 + momentum),
    # where P_C is the projection above and P_A keeps the phase and imposes S.
    spec = torch.polar(S, initial_phase(magnitude, init, generator).reshape(S.shape))
    prev = None
    for _ in range(n_iter):
        rebuilt = project(spec)
        spec = rebuilt if prev is None or alpha == 0.0 else torch.sub(rebuilt, prev, alpha=alpha)
        scale = spec.abs().add_(eps)
        spec = spec * torch.div(S, scale, out=scale)  # out of place: spec may be `rebuilt`, kept as `prev`
        prev = rebuilt
    wave = _istft(spec, n_fft, hop_length, window, center, length)  # [B, T]
    return wave.reshape(lead + wave.shape[-1:])
