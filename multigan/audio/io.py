"""Audio files in and out, and the fixed-length crops a GAN trains on."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch

from multigan.config import CLIP_CROPS, AudioConfig
from multigan.errors import ConfigError, DataError

CROP_MODES = CLIP_CROPS  # where a clip sits in a longer window, or which part of a longer clip is kept
RESAMPLE_TYPE = "soxr_hq"  # librosa's default; part of the clip cache's key
BLOCK_FRAMES = 1 << 16  # frames decoded at a time, so a file with many channels is never in memory whole
_BOUNDS = AudioConfig()  # where the default bounds on source files come from


def load_audio(
    path: str | os.PathLike,
    sample_rate: int,
    *,
    min_source_rate: int = _BOUNDS.min_source_rate,
    max_source_rate: int = _BOUNDS.max_source_rate,
    max_seconds: float = _BOUNDS.max_seconds,
) -> np.ndarray:
    """A mono float32 waveform [T] at `sample_rate` from any file soundfile or librosa reads.

    soundfile (WAV, FLAC, OGG, MP3, ...) is tried first; librosa is the
    fallback for what it cannot open. Channels are averaged; a float file
    whose samples go past [-1, 1] (written unscaled) is scaled to peak 1; the
    signal is resampled with soxr when the file's rate differs. A WAV whose
    data is cut short gives the samples that are there.

    A file whose rate is outside `min_source_rate`..`max_source_rate` Hz or
    that lasts longer than `max_seconds` is refused from its header, before
    anything is decoded or resampled.

    Raises `DataError`, and no other exception, for a file that is missing,
    unreadable, empty, out of those bounds or holds non-finite samples.
    """
    path = Path(path)
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate < 1:
        raise ConfigError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
    if size == 0:
        raise DataError(f"cannot read {path}: empty file (0 bytes)")

    bounds = (max(1, min_source_rate), max_source_rate, max_seconds)
    try:
        with sf.SoundFile(path) as f:
            _check_source(path, f.samplerate, f.frames, *bounds)
            wave, file_rate = _read_mono(f), f.samplerate
    except DataError:
        raise
    except Exception as e:  # LibsndfileError (a RuntimeError), OSError, MemoryError on a bogus header, ...
        reason = getattr(e, "error_string", None) or str(e) or type(e).__name__
        wave, file_rate = _load_with_librosa(path, reason)
        _check_source(path, file_rate, wave.size, *bounds)  # decoded, but not resampled yet

    if wave.size == 0:
        raise DataError(f"cannot read {path}: no samples")
    if not np.isfinite(wave).all():  # a float64 file's samples past float32's range are inf here too
        raise DataError(f"cannot read {path}: non-finite or out-of-range samples (NaN, inf, or past float32's range)")
    peak = float(np.abs(wave).max())
    if peak > 1.0:  # integer PCM decodes into [-1, 1); only a float file gets here
        wave = wave / np.float32(peak)
    if file_rate != sample_rate:
        try:
            wave = librosa.resample(wave, orig_sr=file_rate, target_sr=sample_rate, res_type=RESAMPLE_TYPE)
        except Exception as e:  # a bogus rate in the header (0 Hz, ...) gives ParameterError, MemoryError, ...
            raise DataError(f"cannot read {path}: cannot resample from {file_rate} Hz ({type(e).__name__})") from None
    return np.ascontiguousarray(wave, dtype=np.float32)


def _check_source(path: Path, file_rate: int, frames: int, min_source_rate: int, max_source_rate: int,
                  max_seconds: float) -> None:
    """Raise DataError if a file at `file_rate` Hz holding `frames` samples is out of bounds."""
    if not min_source_rate <= file_rate <= max_source_rate:
        raise DataError(f"cannot use {path}: sample rate {file_rate} Hz is outside "
                        f"min_source_rate..max_source_rate ({min_source_rate}..{max_source_rate} Hz)")
    if frames > max_seconds * file_rate:
        raise DataError(f"cannot use {path}: {frames / file_rate:,.1f} s long, over max_seconds ({max_seconds:g} s)")


def _read_mono(f: sf.SoundFile) -> np.ndarray:
    """The rest of an open file as mono float32 [T], averaged over channels one block at a time."""
    blocks = []
    while len(block := f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)):  # [n, C]
        blocks.append(block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0])
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def _load_with_librosa(path: Path, soundfile_reason: str) -> tuple[np.ndarray, int]:
    # librosa < 1.0 falls back to audioread (ffmpeg, ...); librosa 1.0 reads through soundfile
    # only, so there this gives a second opinion and soundfile's reason, nothing more.
    try:
        with warnings.catch_warnings():
            # librosa warns that it falls back to audioread, and that audioread is deprecated.
            warnings.simplefilter("ignore")
            wave, file_rate = librosa.load(path, sr=None, mono=True, dtype=np.float32)
    except Exception as e:  # NoBackendError, EOFError, ParameterError, ...
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot read {path}: {soundfile_reason} (librosa: {detail})") from None
    return np.asarray(wave, dtype=np.float32).reshape(-1), int(file_rate)


def trim_silence(wave: np.ndarray, top_db: float | None) -> np.ndarray:
    """wave [T] without its leading and trailing parts quieter than `top_db` below the peak.

    Uses `librosa.effects.trim` (frame RMS against the loudest frame, 2048-sample
    frames, 512-sample hop), so the cut falls on a hop boundary and keeps a
    little silence rather than clipping a soft onset. `top_db=None` returns
    `wave` unchanged.
    """
    if top_db is None or wave.size == 0:
        return wave
    trimmed, _ = librosa.effects.trim(wave, top_db=top_db)
    return trimmed


def fix_length(
    wave: torch.Tensor,
    length: int,
    mode: str = "center",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """wave [..., T] -> [..., length], cropped or zero-padded along the last axis.

    mode "center" crops the middle or pads both sides equally (the extra
    sample goes at the end); "start" keeps the start or pads at the end;
    "random" draws the crop offset, or where the clip sits in the zeros,
    with `torch.randint(generator=generator)` (the global torch RNG when
    `generator` is None, so a run that restores the RNG state is
    reproducible). A crop is a view of `wave`; a clip already `length` long
    is returned as is.
    """
    n = wave.shape[-1]
    src, dst, count = crop_window(n, length, mode, generator)
    if n == length:
        return wave
    if n > length:
        return wave[..., src:src + count]
    out = wave.new_zeros((*wave.shape[:-1], length))
    out[..., dst:dst + count] = wave
    return out


def crop_window(n: int, length: int, mode: str, generator: torch.Generator | None = None) -> tuple[int, int, int]:
    """Where `fix_length` puts a clip of n samples: (source start, target start, samples copied).

    Draws one random number in mode "random" when n != length, none otherwise.
    """
    if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
        raise ConfigError(f"length must be a positive integer, got {length!r}")
    if mode not in CROP_MODES:
        raise ConfigError(f"crop mode must be one of {', '.join(CROP_MODES)}; got {mode!r}")
    if n == length:
        return 0, 0, n
    slack = abs(n - length)
    if mode == "center":
        offset = slack // 2
    elif mode == "start":
        offset = 0
    else:
        offset = int(torch.randint(0, slack + 1, (1,), generator=generator))
    return (offset, 0, length) if n > length else (0, offset, n)


def write_wav(path: str | os.PathLike, wave: torch.Tensor | np.ndarray, sample_rate: int) -> Path:
    """Write wave [T] (or [1, T]) as a 16-bit PCM WAV; returns the path.

    Samples are clipped to [-1, 1] (NaN becomes 0) and scaled by 32768, the
    scale soundfile and librosa divide by when they read 16-bit audio back.
    The parent folder is created.
    """
    path = Path(path)
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().to("cpu", torch.float32).numpy()
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.ndim != 1:
        raise DataError(f"write_wav expects a mono waveform [T] or [1, T], got shape {list(wave.shape)}")
    wave = np.clip(np.nan_to_num(wave, nan=0.0), -1.0, 1.0)
    pcm = np.clip(np.rint(wave * 32768.0), -32768, 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, pcm, int(sample_rate), subtype="PCM_16", format="WAV")
    return path
