"""The vocoder's ceiling: real clips through log-mel and back with the mel adapter's own decoding.

No generated clip can sound better than a real one sent through the same
analysis, inverse mel and Griffin-Lim; `vocode_clips` measures how far that is.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from multigan.audio.io import load_audio, write_wav
from multigan.audio.spectral import log_spectral_distance, magnitude, spectral_convergence
from multigan.config import AudioConfig
from multigan.data.audio_folder import find_audio_files
from multigan.errors import DataError
from multigan.modalities.mel import MelModality, analyze


def vocode(wave: Tensor, audio: AudioConfig) -> Tensor:
    """wave [T] -> the same clip after log-mel analysis, inverse mel and Griffin-Lim, [T].

    The adapter decodes, sized to the clip, with statistics that make its
    normalisation an identity that never clips: only the vocoder loses anything.
    """
    mel_db = analyze(wave, audio)  # [n_mels, frames]
    frames = mel_db.shape[-1]
    if frames < 4:
        raise DataError(f"a clip of {len(wave)} samples is too short to vocode (fewer than 4 STFT frames)")
    clip = dataclasses.replace(audio, frames=frames)
    scale = float(mel_db.abs().max()) / clip.clip_k + 1.0  # std * clip_k above every |dB|: no clipping
    adapter = MelModality(clip, torch.zeros(clip.n_mels), torch.full((clip.n_mels,), scale))
    rebuilt = adapter.decode(adapter.normalize(mel_db[None])).waves[0]  # [(frames - 1) * hop_length]
    return F.pad(rebuilt, (0, len(wave) - len(rebuilt)))  # the tail after the last full hop: silence


@dataclass(frozen=True)
class VocodedClip:
    """One clip's vocoded file and its error against the original."""

    name: str  # the clip's path under the input folder
    path: Path
    spectral_convergence: float
    log_spectral_distance: float  # dB


def vocode_clips(source: str | Path, out_dir: str | Path, audio: AudioConfig, *, limit: int | None = None,
                 progress: bool = True) -> list[VocodedClip]:
    """Vocode an audio file, or every one under a folder, into `out_dir`, with each clip's error.

    Each clip is written under its path relative to `source` with ".wav"
    added (IN/a/x.wav -> OUT/a/x.wav.wav, IN/y.flac -> OUT/y.flac.wav):
    distinct inputs never share an output, whatever their folders and extensions.
    """
    from multigan.console import track

    source, out_dir = Path(source), Path(out_dir)
    files = [source] if source.is_file() else find_audio_files(source)
    if not files:
        raise DataError(f"no audio files under {source}")
    files = files[:limit] if limit else files
    a = audio
    clips = []
    for path in track(files, "vocoding", unit="clip", enabled=progress and len(files) >= 4):
        name = path.name if path == source else path.relative_to(source).as_posix()
        wave = torch.from_numpy(load_audio(path, a.sample_rate, min_source_rate=a.min_source_rate,
                                           max_source_rate=a.max_source_rate, max_seconds=a.max_seconds))  # [T]
        rebuilt = vocode(wave, a)
        ref, est = magnitude(wave, a.n_fft, a.hop_length), magnitude(rebuilt, a.n_fft, a.hop_length)
        written = write_wav(out_dir / f"{name}.wav", rebuilt, a.sample_rate)
        clips.append(VocodedClip(name, written, float(spectral_convergence(ref, est)),
                                 float(log_spectral_distance(ref, est))))
    return clips
