"""STFT, mel filterbank, dB scales, inverse mel and spectral distances.

Plain functions on torch tensors, batched over any leading dimensions, on the
device and in the dtype of their input (float32 or float64). Conventions
follow librosa so that its functions are the reference in the tests: periodic
Hann window, frames centred by padding n_fft // 2 zeros on each side
(pad_mode "constant", librosa's default since 0.10; librosa < 0.10 and
`torch.stft` default to "reflect"), frequency on dimension -2 and frames on
dimension -1.
"""
from __future__ import annotations

import functools
import math

import librosa
import numpy as np
import torch
from torch import Tensor


def hann_window(win_length: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Periodic Hann window, as librosa's `get_window("hann", win_length)`. [win_length]"""
    return torch.hann_window(win_length, periodic=True, device=device, dtype=dtype)


def stft(wave: Tensor, n_fft: int, hop_length: int, win_length: int | None = None, center: bool = True) -> Tensor:
    """Complex STFT of wave [..., T] -> [..., n_fft // 2 + 1, frames].

    With center=True the signal is padded with n_fft // 2 zeros on each side
    (pad_mode "constant", as librosa.stft's default), so frame t is centred on
    sample t * hop_length. A window shorter than n_fft is zero-padded to n_fft
    in the middle, as librosa does.
    """
    window = hann_window(win_length or n_fft, device=wave.device, dtype=wave.dtype)
    lead, T = wave.shape[:-1], wave.shape[-1]
    spec = torch.stft(wave.reshape(-1, T), n_fft, hop_length=hop_length, win_length=window.shape[0], window=window,
                      center=center, pad_mode="constant", return_complex=True)  # [B, F, frames]
    return spec.reshape(lead + spec.shape[-2:])


def magnitude(wave: Tensor, n_fft: int, hop_length: int, win_length: int | None = None, center: bool = True,
              power: float = 1.0) -> Tensor:
    """|STFT| ** power of wave [..., T] -> [..., n_fft // 2 + 1, frames] (power 1: magnitude, 2: power)."""
    spec = stft(wave, n_fft, hop_length, win_length, center)
    if power == 2.0:
        return torch.view_as_real(spec).square().sum(-1)  # no square root to undo
    mag = spec.abs()
    return mag if power == 1.0 else mag.pow(power)


@functools.lru_cache(maxsize=32)
def _mel_filterbank_numpy(sample_rate: float, n_fft: int, n_mels: int, fmin: float, fmax: float | None, htk: bool,
                          norm: str | float | None) -> np.ndarray:
    # Keyed on every argument that changes the filters; the device and dtype
    # of the returned tensor are applied per call, so one entry serves them all.
    fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm,
                             dtype=np.float64)
    fb.setflags(write=False)  # shared between callers
    return fb


def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None,
                   htk: bool = False, norm: str | float | None = "slaney", device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """Triangular mel filters of librosa.filters.mel: [n_mels, n_fft // 2 + 1].

    htk=False: Slaney's mel scale (linear below 1 kHz), htk=True: HTK's
    2595 * log10(1 + f / 700). norm="slaney" scales each filter to unit area
    (constant energy per band); None leaves peaks at 1. fmax None: Nyquist.
    """
    fb = _mel_filterbank_numpy(float(sample_rate), int(n_fft), int(n_mels), float(fmin),
                               None if fmax is None else float(fmax), bool(htk), norm)
    return torch.tensor(fb, device=device, dtype=dtype)


def mel_spectrogram(wave: Tensor, sample_rate: float, n_fft: int, hop_length: int, n_mels: int, fmin: float = 0.0,
                    fmax: float | None = None, htk: bool = False, power: float = 2.0, win_length: int | None = None,
                    center: bool = True, norm: str | float | None = "slaney") -> Tensor:
    """Mel filterbank applied to |STFT| ** power, as librosa.feature.melspectrogram: [..., T] -> [..., n_mels, frames]."""
    fb = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, htk, norm, device=wave.device, dtype=wave.dtype)
    return fb @ magnitude(wave, n_fft, hop_length, win_length, center, power)


def power_to_db(S: Tensor, amin: float = 1e-10, top_db: float | None = None) -> Tensor:
    """10 * log10(max(S, amin)) of a power spectrogram, relative to a fixed reference of 1.

    No per-example reference, so `db_to_power` inverts it exactly above amin.
    top_db (not invertible) floors each example at its own maximum minus
    top_db, the maximum taken over the last two dimensions [..., F, frames]
    (librosa takes it over the whole array).
    """
    db = 10.0 * torch.log10(S.clamp(min=amin))
    if top_db is not None:
        db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - top_db)
    return db


def db_to_power(db: Tensor) -> Tensor:
    """Inverse of `power_to_db`: 10 ** (db / 10)."""
    return torch.exp(db * (math.log(10.0) / 10.0))


def log_mel(wave: Tensor, sample_rate: float, n_fft: int, hop_length: int, n_mels: int, fmin: float = 0.0,
            fmax: float | None = None, htk: bool = False, amin: float = 1e-10, win_length: int | None = None,
            center: bool = True, norm: str | float | None = "slaney") -> Tensor:
    """Mel power spectrogram in dB (reference 1, floor amin): [..., T] -> [..., n_mels, frames].

    Equals librosa.power_to_db(librosa.feature.melspectrogram(power=2), ref=1, amin=amin, top_db=None).
    """
    mel = mel_spectrogram(wave, sample_rate, n_fft, hop_length, n_mels, fmin, fmax, htk, 2.0, win_length, center, norm)
    return power_to_db(mel, amin=amin)


def inverse_mel(mel: Tensor, fb: Tensor, n_iter: int = 100, power: float = 2.0) -> Tensor:
    """Linear-frequency magnitude from a mel spectrogram, as librosa.feature.inverse.mel_to_stft.

    mel: [..., n_mels, frames], the mel filterbank applied to |X| ** power
    (power=2, the default: a mel POWER spectrogram, as librosa's). fb:
    [n_mels, F], the filterbank that made it (`mel_filterbank`). Solves the
    non-negative least squares problem min_{P >= 0} ||fb @ P - mel||^2 for
    every frame of every example at once and returns the magnitude
    P ** (1 / power): [..., F, frames]. After the default 100 iterations the
    residual is 60 to 1e8 times smaller than librosa's L-BFGS-B leaves it
    on the FSDD clips of tests/audio/test_spectral.py.
    """
    fb = fb.to(device=mel.device, dtype=mel.dtype)  # [n_mels, F]
    # Frames-major, [..., frames, n_mels] @ [n_mels, F]: torch folds the
    # leading dimensions into one large matrix product instead of a batch of small ones.
    target = mel.transpose(-1, -2).contiguous()  # [..., frames, n_mels]
    fb_t = fb.mT.contiguous()  # [F, n_mels]
    # Projected gradient with Nesterov momentum, FISTA (Beck & Teboulle 2009):
    # step 1/L with L = ||fb||_2^2, the largest eigenvalue of fb^T fb and so the
    # Lipschitz constant of the gradient fb^T (fb P - mel). Starts, as librosa,
    # from the least squares solution clamped at 0. A fixed iteration count
    # (no stopping test) keeps the loop free of device-to-host syncs.
    step = 1.0 / torch.linalg.matrix_norm(fb.detach().cpu().double(), ord=2).item() ** 2
    x = (target @ torch.linalg.pinv(fb).mT).clamp_(min=0.0)  # [..., frames, F]
    y = x
    t = 1.0
    for _ in range(n_iter):
        x_next = torch.add(y, (y @ fb_t).sub_(target) @ fb, alpha=-step).clamp_(min=0.0)
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        y = torch.lerp(x, x_next, 1.0 + (t - 1.0) / t_next)  # x_next + (t - 1) / t_next * (x_next - x)
        x, t = x_next, t_next
    x = x.transpose(-1, -2).contiguous()  # [..., F, frames]
    return x if power == 1.0 else x.pow_(1.0 / power)


def spectral_convergence(reference_mag: Tensor, estimate_mag: Tensor) -> Tensor:
    """||S - S_hat||_F / ||S||_F over the last two dimensions [..., F, frames] -> [...]."""
    return torch.linalg.matrix_norm(reference_mag - estimate_mag) / torch.linalg.matrix_norm(reference_mag)


def log_spectral_distance(reference_mag: Tensor, estimate_mag: Tensor, amin: float = 1e-5) -> Tensor:
    """Log-spectral distance in dB: RMS over frequency of 20 log10 |S| - 20 log10 |S_hat|, mean over frames.

    Magnitudes are floored at amin first. [..., F, frames] -> [...]
    """
    diff = 20.0 * (torch.log10(reference_mag.clamp(min=amin)) - torch.log10(estimate_mag.clamp(min=amin)))
    return diff.square().mean(-2).sqrt().mean(-1)
