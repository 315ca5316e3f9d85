"""Input transforms of feature networks: what a modality hands over -> the network's input.

Each transform reads both what the adapter's `decode` returns
(`from_artifacts`) and the reference dataset (`dataset_batches`), so samples
and real data reach the network through the same steps; `state_dict()` and
`from_state()` let it travel in the feature network's file.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from multigan.audio.io import fix_length
from multigan.config import AudioConfig
from multigan.errors import DataError
from multigan.modalities.mel import MelModality


class DigitImages:
    """uint8 images [B, 1, H, W] (data batches and decoded samples alike) -> [B, 1, H, W] in [-1, 1]."""

    kind = "image"

    def __init__(self, height: int = 28, width: int = 28):
        self.height, self.width = height, width

    def inputs(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != (1, self.height, self.width):
            raise DataError(f"this feature network reads 1x{self.height}x{self.width} images, "
                            f"got {'x'.join(map(str, images.shape[1:]))}")
        return images.float() / 127.5 - 1.0

    def from_artifacts(self, artifacts: Tensor) -> Tensor:
        return self.inputs(artifacts)

    def dataset_batches(self, dataset, batch_size: int) -> Iterator[Tensor]:
        """Network inputs of every item of an image dataset, in order."""
        for i in range(0, len(dataset), batch_size):
            yield self.inputs(dataset.__getitems__(range(i, min(i + batch_size, len(dataset)))))

    def state_dict(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DigitImages:
        return cls(state["height"], state["width"])


class ColourImages(DigitImages):
    """uint8 RGB images [B, 3, H, W] of any size -> [B, 3, height, width] in [-1, 1].

    Other sizes are resized (bilinear, antialiased), the reference data and
    the samples alike, so a 32x32 or 128x128 run is measured at the size
    the network was trained at.
    """

    kind = "colour-image"

    def __init__(self, height: int = 64, width: int = 64):
        super().__init__(height, width)

    def inputs(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"this feature network reads RGB images [B, 3, H, W], got {list(images.shape)}")
        x = images.float() / 127.5 - 1.0
        if tuple(x.shape[2:]) != (self.height, self.width):
            x = F.interpolate(x, size=(self.height, self.width), mode="bilinear", antialias=True, align_corners=False)
        return x


class LogMelClips:
    """Waveforms -> log-mel standardised per bin with the classifier's own statistics: [B, 1, n_mels, frames].

    The analysis and the per-bin statistics are a mel adapter's (`MelModality`),
    so the classifier hears clips exactly as the adapter analyses them; only
    the scaling differs: standard scores, without the adapter's clipping.
    Clips at another sample rate are resampled; clips of another length are
    centre-cropped or zero-padded to the classifier's window.
    """

    kind = "audio"

    def __init__(self, audio: AudioConfig, mean: Tensor, std: Tensor):
        self.mel = MelModality(audio, mean, std)

    @classmethod
    def from_mel(cls, mel: MelModality) -> LogMelClips:
        """The transform with a fitted mel adapter's settings and statistics."""
        return cls(mel.audio, mel.mean, mel.std)

    @property
    def audio(self) -> AudioConfig:
        return self.mel.audio

    @property
    def mean(self) -> Tensor:
        return self.mel.mean  # [n_mels] dB

    @property
    def std(self) -> Tensor:
        return self.mel.std  # [n_mels] dB, at least MIN_STD_DB

    def inputs(self, waves: Tensor, sample_rate: int) -> Tensor:
        """waves [B, T] at `sample_rate` -> network input [B, 1, n_mels, frames]."""
        if waves.ndim != 2:
            raise DataError(f"expected waveforms [B, T], got {list(waves.shape)}")
        if int(sample_rate) != self.audio.sample_rate:
            import librosa

            waves = torch.from_numpy(librosa.resample(waves.detach().float().cpu().numpy(), orig_sr=int(sample_rate),
                                                      target_sr=self.audio.sample_rate, axis=-1)).float()
        waves = fix_length(waves, self.audio.length, mode="center")
        return self.mel.standardize(self.mel.analyze(waves.float())).unsqueeze(1)

    def from_artifacts(self, artifacts) -> Tensor:
        """Decoded samples with `.waves` [B, T] and `.sample_rate` (the mel adapter's `MelArtifacts`)."""
        return self.inputs(artifacts.waves, artifacts.sample_rate)

    def dataset_batches(self, dataset, batch_size: int) -> Iterator[Tensor]:
        """Network inputs of every clip of a clip dataset, centre-cropped, in order."""
        view = dataset.with_crop("center") if hasattr(dataset, "with_crop") else dataset
        for i in range(0, len(view), batch_size):
            yield self.inputs(view.__getitems__(range(i, min(i + batch_size, len(view)))), view.sample_rate)

    def state_dict(self) -> dict[str, Any]:
        return self.mel.state_dict()

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LogMelClips:
        return cls.from_mel(MelModality.from_state(state))


# the `kind` a feature network file names -> its transform
INPUTS: dict[str, Any] = {"image": DigitImages, "colour-image": ColourImages, "audio": LogMelClips}
