"""Log-mel spectrogram back to a waveform: inverse mel, then Griffin-Lim."""
from __future__ import annotations

import torch
from torch import Tensor

from multigan.audio.griffin_lim import griffin_lim
from multigan.audio.spectral import db_to_power, inverse_mel, mel_filterbank


def mel_db_to_wave(
    mel_db: Tensor,
    *,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    n_iter: int = 32,
    momentum: float = 0.99,
    init: str = "random",
    length: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """mel_db [..., n_mels, frames] (dB of mel power) -> waveform [..., T]."""
    fb = mel_filterbank(sample_rate, n_fft, mel_db.shape[-2], fmin=fmin, fmax=fmax, htk=htk,
                        device=mel_db.device, dtype=mel_db.dtype)
    magnitude = inverse_mel(db_to_power(mel_db), fb, power=2.0)  # [..., n_fft // 2 + 1, frames]
    return griffin_lim(magnitude, n_fft, hop_length, n_iter=n_iter, momentum=momentum, init=init,
                       length=length, generator=generator)
