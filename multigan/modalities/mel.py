"""The mel adapter: waveforms <-> normalised log-mel spectrograms, WAV files out.

Model space is one channel of log-mel, normalised per mel bin with the
dataset's statistics and clipped at k standard deviations (as SpecGAN does,
Donahue et al. 2019), scaled to [-1, 1]: x [B, 1, n_mels, frames]. Decoding
undoes the normalisation, inverts the mel filter bank and runs Griffin-Lim.
The adapter owns every analysis, normalisation and vocoder setting and its
statistics; all of it goes into checkpoints.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from multigan.audio.io import write_wav
from multigan.audio.spectral import log_mel
from multigan.audio.vocoder import mel_db_to_wave
from multigan.augment import spectrogram_ops
from multigan.config import AudioConfig
from multigan.data.cache import write_cache_file
from multigan.engine.data import class_title
from multigan.errors import DataError
from multigan.modalities.image import save_grid, save_png

MIN_STD_DB = 1.0  # a bin with (almost) constant level must not blow up when normalised
STATS_VERSION = 2  # part of the statistics cache's key; 2: frames weighted per clip


def analyze(wave: Tensor, audio: AudioConfig) -> Tensor:
    """wave [..., T] -> log-mel in dB [..., n_mels, frames] with the analysis settings of `audio`."""
    a = audio
    return log_mel(wave, a.sample_rate, a.n_fft, a.hop_length, a.n_mels, fmin=a.fmin, fmax=a.fmax, htk=a.htk)


@dataclass
class MelArtifacts:
    """Decoded samples: waveforms [B, T] and their log-mel in dB [B, n_mels, frames]."""

    waves: Tensor
    mel_db: Tensor
    sample_rate: int


class MelModality:
    """Log-mel spectrograms of fixed-length clips."""

    name = "mel"

    def __init__(self, audio: AudioConfig, mean: Tensor, std: Tensor):
        if mean.shape != (audio.n_mels,) or std.shape != (audio.n_mels,):
            raise DataError(f"mel statistics must have {audio.n_mels} bins, got {tuple(mean.shape)} and {tuple(std.shape)}")
        self.audio = audio
        self.mean = mean.detach().float().cpu()
        self.std = std.detach().float().cpu().clamp_min(MIN_STD_DB)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, self.audio.n_mels, self.audio.frames)

    # data <-> model space ----------------------------------------------------
    def analyze(self, wave: Tensor) -> Tensor:
        """wave [..., T] -> log-mel in dB [..., n_mels, frames]."""
        return analyze(wave, self.audio)

    def normalize(self, mel_db: Tensor) -> Tensor:
        """dB [B, n_mels, frames] -> model space [B, 1, n_mels, frames] in [-1, 1]."""
        mean, std = self.mean.to(mel_db.device)[:, None], self.std.to(mel_db.device)[:, None]
        return ((mel_db - mean) / (std * self.audio.clip_k)).clamp(-1, 1).unsqueeze(1)

    def standardize(self, mel_db: Tensor) -> Tensor:
        """dB [..., n_mels, frames] -> per-bin standard scores (mel_db - mean) / std, neither clipped nor scaled."""
        return (mel_db - self.mean.to(mel_db.device)[:, None]) / self.std.to(mel_db.device)[:, None]

    def denormalize(self, x: Tensor) -> Tensor:
        """Model space [B, 1, n_mels, frames] -> dB [B, n_mels, frames]."""
        mean, std = self.mean.to(x.device)[:, None], self.std.to(x.device)[:, None]
        return x.squeeze(1).clamp(-1, 1) * (std * self.audio.clip_k) + mean

    def encode(self, batch: Tensor | tuple) -> Tensor:
        wave = batch[0] if isinstance(batch, (tuple, list)) else batch  # (waves, labels) -> waves
        if wave.ndim != 2 or wave.shape[1] != self.audio.length:
            raise DataError(f"expected waveforms [B, {self.audio.length}] (frames - 1) * hop_length samples, "
                            f"got {list(wave.shape)}")
        return self.normalize(self.analyze(wave.float()))

    def decode(self, x: Tensor, generator: torch.Generator | None = None) -> MelArtifacts:
        a = self.audio
        mel_db = self.denormalize(x.detach().float())
        waves = mel_db_to_wave(mel_db, sample_rate=a.sample_rate, n_fft=a.n_fft, hop_length=a.hop_length, fmin=a.fmin,
                               fmax=a.fmax, htk=a.htk, n_iter=a.gl_iter, momentum=a.gl_momentum, init=a.gl_init,
                               length=a.length, generator=generator or torch.Generator().manual_seed(0))
        return MelArtifacts(waves.cpu(), mel_db.cpu(), a.sample_rate)

    # files --------------------------------------------------------------------
    def save(self, artifacts: MelArtifacts, out_dir: Path, prefix: str = "sample", *, labels: Tensor | None = None,
             class_names: list[str] | None = None, scale: int = 1) -> list[Path]:
        """A WAV and a plain spectrogram PNG per sample, and an overview with axes, a dB scale and,
        given `labels` [B], the class each sample was drawn for (by name, given `class_names`)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        images = self._images(artifacts.mel_db)
        paths: list[Path] = []
        for i, (wave, image) in enumerate(zip(artifacts.waves, images)):
            paths.append(write_wav(out_dir / f"{prefix}-{i:04d}.wav", wave, artifacts.sample_rate))
            paths.append(save_png(image, out_dir / f"{prefix}-{i:04d}.png"))
        paths.append(self.save_overview(artifacts.mel_db, out_dir / f"{prefix}-grid.png", labels=labels,
                                        class_names=class_names, scale=scale))
        return paths

    def save_walks(self, artifacts: MelArtifacts, steps: int, out_dir: Path, prefix: str = "interpolation", *,
                   labels: Tensor | None = None, scale: int = 1) -> list[Path]:
        """Latent walks [rows * steps]: a grid with a row of `steps` spectrograms per walk, and one WAV of
        every step in order, a short silence between steps and a longer one between walks."""
        out_dir = Path(out_dir)
        grid = save_grid(self._images(artifacts.mel_db), out_dir / f"{prefix}-grid.png", nrow=steps, scale=scale)
        sr = artifacts.sample_rate
        step_gap, walk_gap = torch.zeros(sr // 8), torch.zeros(sr // 2)
        parts = []
        for i, wave in enumerate(artifacts.waves):
            parts += [wave, walk_gap if (i + 1) % steps == 0 else step_gap]
        wav = write_wav(out_dir / f"{prefix}.wav", torch.cat(parts[:-1]), sr)
        return [grid, wav]

    def save_overview(self, mel_db: Tensor, path: Path, *, labels: Tensor | None = None,
                      class_names: list[str] | None = None, scale: int = 1, max_panels: int = 64) -> Path:
        """The first `max_panels` spectrograms dB [B, n_mels, frames] as one figure: time in s, frequency in Hz
        on the mel scale, one dB colour scale; each panel titled with its sample number and class (its name
        when `class_names` gives it)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        a = self.audio
        shown = mel_db[:max_panels].numpy()
        n = len(shown)
        cols = max(1, math.ceil(math.sqrt(n)))
        rows = math.ceil(n / cols)
        fig = Figure(figsize=(2.3 * cols + 0.9, 1.9 * rows + 0.5), dpi=100 * scale, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
        # The colour scale spans what the model can express: mean +- clip_k std per bin.
        vmin = float((self.mean - a.clip_k * self.std).min())
        vmax = float((self.mean + a.clip_k * self.std).max())
        seconds = a.frames * a.hop_length / a.sample_rate
        hz, at = mel_ticks(a)
        image = None
        for i, ax in enumerate(axes.flat):
            if i >= n:
                ax.set_axis_off()
                continue
            image = ax.imshow(shown[i], origin="lower", aspect="auto", interpolation="nearest", cmap="magma",
                              vmin=vmin, vmax=vmax, extent=(0, seconds, 0, a.n_mels))
            title = f"{i:04d}" + ("" if labels is None else f" · {class_title(int(labels[i]), class_names)}")
            ax.set_title(title, fontsize="small")
            ax.set_yticks(at, [f"{f / 1000:g}k" if f >= 1000 else f"{f:g}" for f in hz])
            ax.tick_params(labelsize="x-small")
        for ax in axes[-1]:
            ax.set_xlabel("time (s)", fontsize="small")
        for ax in axes[:, 0]:
            ax.set_ylabel("Hz (mel scale)", fontsize="small")
        if image is not None:
            fig.colorbar(image, ax=axes, label="dB", shrink=0.9)
        if len(mel_db) > n:
            fig.suptitle(f"the first {n} of {len(mel_db)} samples", fontsize="small")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
        return Path(path)

    def preview(self, x: Tensor, stem: Path) -> Path:
        """A grid of spectrograms, and beside it a WAV of the first 8 samples in a row."""
        stem = Path(stem)
        path = save_grid(self._images(self.denormalize(x.detach().float().cpu())), stem.with_suffix(".png"))
        first = self.decode(x[:8].cpu(), generator=torch.Generator().manual_seed(0))
        gap = torch.zeros(self.audio.sample_rate // 4)
        write_wav(stem.with_suffix(".wav"), torch.cat([torch.cat([w, gap]) for w in first.waves]), first.sample_rate)
        return path

    def media(self, x: Tensor) -> list[tuple]:
        """For TensorBoard, what `preview` writes: the spectrogram grid as floats in [0, 1], and the first 8
        samples in a row as one waveform."""
        from torchvision.utils import make_grid

        images = self._images(self.denormalize(x.detach().float().cpu()))
        grid = make_grid(images, nrow=max(1, math.ceil(math.sqrt(len(images)))), padding=2, pad_value=0)
        first = self.decode(x[:8].cpu(), generator=torch.Generator().manual_seed(0))
        gap = torch.zeros(self.audio.sample_rate // 4)
        wave = torch.cat([torch.cat([w, gap]) for w in first.waves]).nan_to_num(0.0).clamp(-1, 1)  # as the WAV is
        return [("image", grid.float() / 255), ("audio", wave, first.sample_rate)]

    def _images(self, mel_db: Tensor) -> Tensor:
        """dB [B, n_mels, frames] -> uint8 RGB [B, 3, n_mels * 2, frames * 2], low frequencies at the bottom."""
        lo = (self.mean - self.audio.clip_k * self.std)[:, None]
        hi = (self.mean + self.audio.clip_k * self.std)[:, None]
        level = ((mel_db - lo) / (hi - lo)).clamp(0, 1).flip(-2)  # [B, n_mels, frames] in [0, 1]
        rgb = colormap(level)  # [B, 3, n_mels, frames]
        return rgb.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)

    # state ----------------------------------------------------------------
    def augment(self, x: Tensor, p: float, rand) -> Tensor:
        """DiffAugment for spectrograms: a time shift, then time and frequency masks (no colour, no flips)."""
        return spectrogram_ops(x, p, rand)

    def state_dict(self) -> dict[str, Any]:
        return {"audio": dataclasses.asdict(self.audio), "mean": self.mean.clone(), "std": self.std.clone()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MelModality:
        return cls(AudioConfig(**state["audio"]), state["mean"], state["std"])

    @classmethod
    def fit(cls, audio: AudioConfig, waveforms: Sequence[Tensor], *, cache_dir: str | os.PathLike | None = None,
            cache_key: str | None = None) -> MelModality:
        """The adapter with per-bin mean and std of log-mel over the frames of `waveforms`.

        Each clip weighs as much as the trainer sees of it, one crop of
        `audio.frames` frames: a longer clip's frames share that weight, a
        shorter clip counts the frames it has. So one long recording cannot
        dominate the statistics, and a short clip does not outweigh a full one.

        With `cache_dir` and `cache_key` (which must identify the clips), the
        statistics are computed once and read back on later runs; a cache that
        cannot be written costs a warning, not the run.
        """
        path = None
        if cache_dir is not None and cache_key is not None:
            identity = [STATS_VERSION, cache_key, dataclasses.asdict(audio)]
            digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
            path = Path(cache_dir) / "mel-stats" / f"{digest}.json"
            try:
                saved = json.loads(path.read_text())
                return cls(audio, torch.tensor(saved["mean"]), torch.tensor(saved["std"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass  # no cache yet, or a damaged one: compute again
        adapter = cls(audio, torch.zeros(audio.n_mels), torch.ones(audio.n_mels))
        total = torch.zeros(audio.n_mels, dtype=torch.float64)
        total_sq = torch.zeros(audio.n_mels, dtype=torch.float64)
        count = 0.0
        for wave in waveforms:
            db = adapter.analyze(torch.as_tensor(wave, dtype=torch.float32)).double()  # [n_mels, n]
            n = db.shape[1]
            weight = min(n, audio.frames) / n  # per frame: the clip counts min(n, frames) frames in all
            total += weight * db.sum(1)
            total_sq += weight * (db**2).sum(1)
            count += weight * n
        if count == 0:
            raise DataError("no audio to compute mel statistics from")
        mean = total / count
        std = (total_sq / count - mean**2).clamp_min(0).sqrt()
        if path is not None:
            text = json.dumps({"mean": mean.tolist(), "std": std.tolist()})
            write_cache_file(path, lambda f: f.write(text.encode()), "the mel statistics cache")
        return cls(audio, mean.float(), std.float())


def mel_ticks(audio: AudioConfig) -> tuple[list[float], list[float]]:
    """(Hz, position): round frequencies within the mel range and where they sit on an axis of mel bins [0, n_mels]."""
    import librosa

    fmax = audio.fmax or audio.sample_rate / 2
    # Band edges: n_mels + 2 points equally spaced in mel; bin i is centred on edge i + 1.
    edges = librosa.mel_frequencies(audio.n_mels + 2, fmin=audio.fmin, fmax=fmax, htk=audio.htk)
    centres = edges[1:-1]
    candidates = [f for f in (100, 250, 500, 1000, 2000, 4000, 8000, 16000) if centres[0] <= f <= centres[-1]]
    return candidates, [float(np.interp(f, centres, np.arange(audio.n_mels) + 0.5)) for f in candidates]


# A perceptually ordered dark-to-bright colour ramp (close to matplotlib's magma).
_RAMP = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                  [250, 193, 39], [252, 253, 191]], dtype=np.float32)


def colormap(level: Tensor) -> Tensor:
    """level [...] in [0, 1] -> uint8 RGB [..., 3, *level.shape[-2:]] on the CPU."""
    x = level.detach().float().cpu().numpy()
    stops = np.linspace(0, 1, len(_RAMP))
    rgb = np.stack([np.interp(x, stops, _RAMP[:, c]) for c in range(3)], axis=-3)
    return torch.from_numpy(np.rint(rgb).astype(np.uint8))
