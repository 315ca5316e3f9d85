"""Feature networks: small classifiers the project trains itself, for images and for sounds.

Inception features mean nothing for spectrograms and need a download, so
evaluation runs on domain classifiers kept in `assets/`: the penultimate
layer gives the features for Frechet and kernel distances, the softmax the
classifier score. A feature network file holds the weights, the network's
shape and its input transform (for sounds: the analysis settings and the
per-bin statistics), so it is usable on its own.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multigan.audio.io import fix_length
from multigan.config import AudioConfig
from multigan.errors import CheckpointError, DataError
from multigan.modalities.mel import MIN_STD_DB, analyze

log = logging.getLogger("multigan")

KIND = "feature-net"  # tells a feature network file from a training checkpoint


class FeatureNet(nn.Module):
    """A small CNN classifier of [B, in_channels, H, W] inputs.

    Three conv stages (one, two and two 3x3 convs with batch norm and ReLU,
    each followed by 2x2 max pooling),
    global average pool, then `feature_dim` ReLU units (the features) and the
    class logits.
    """

    def __init__(self, n_classes: int = 10, width: int = 32, feature_dim: int = 128, dropout: float = 0.3,
                 in_channels: int = 1):
        super().__init__()
        self.n_classes, self.width, self.feature_dim, self.in_channels = n_classes, width, feature_dim, in_channels

        def stage(c_in: int, c_out: int, convs: int) -> list[nn.Module]:
            layers: list[nn.Module] = []
            for i in range(convs):
                layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                           nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            return layers + [nn.MaxPool2d(2)]

        # one conv at full resolution keeps the cost low; the deeper stages carry the capacity
        self.body = nn.Sequential(*stage(in_channels, width, 1), *stage(width, 2 * width, 2), *stage(2 * width, 4 * width, 2),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(4 * width, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, n_classes))

    def features(self, x: Tensor) -> Tensor:
        """x [B, C, H, W] -> penultimate features [B, feature_dim]."""
        return self.embed(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, H, W] -> logits [B, n_classes]."""
        return self.head(self.features(x))

    def spec(self) -> dict[str, int]:
        spec = {"n_classes": self.n_classes, "width": self.width, "feature_dim": self.feature_dim}
        # grey nets leave it out: their files are as they were before colour inputs
        return spec if self.in_channels == 1 else {**spec, "in_channels": self.in_channels}


# Input transforms: what a modality hands over -> the network's input ---------
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
    """Waveforms -> log-mel normalised per bin with the classifier's own statistics: [B, 1, n_mels, frames].

    Clips at another sample rate are resampled; clips of another length are
    centre-cropped or zero-padded to the classifier's window.
    """

    kind = "audio"

    def __init__(self, audio: AudioConfig, mean: Tensor, std: Tensor):
        self.audio = audio
        self.mean = mean.detach().float().cpu()  # [n_mels] dB
        self.std = std.detach().float().cpu().clamp_min(MIN_STD_DB)

    def inputs(self, waves: Tensor, sample_rate: int) -> Tensor:
        """waves [B, T] at `sample_rate` -> network input [B, 1, n_mels, frames]."""
        if waves.ndim != 2:
            raise DataError(f"expected waveforms [B, T], got {list(waves.shape)}")
        if int(sample_rate) != self.audio.sample_rate:
            import librosa

            waves = torch.from_numpy(librosa.resample(waves.detach().float().cpu().numpy(), orig_sr=int(sample_rate),
                                                      target_sr=self.audio.sample_rate, axis=-1)).float()
        waves = fix_length(waves, self.audio.length, mode="center")
        db = analyze(waves.float(), self.audio)  # [B, n_mels, frames]
        return ((db - self.mean.to(db.device)[:, None]) / self.std.to(db.device)[:, None]).unsqueeze(1)

    def from_artifacts(self, artifacts) -> Tensor:
        """Decoded samples with `.waves` [B, T] and `.sample_rate` (the mel adapter's `MelArtifacts`)."""
        return self.inputs(artifacts.waves, artifacts.sample_rate)

    def dataset_batches(self, dataset, batch_size: int) -> Iterator[Tensor]:
        """Network inputs of every clip of a clip dataset, centre-cropped, in order."""
        view = dataset.with_crop("center") if hasattr(dataset, "with_crop") else dataset
        for i in range(0, len(view), batch_size):
            yield self.inputs(view.__getitems__(range(i, min(i + batch_size, len(view)))), view.sample_rate)

    def state_dict(self) -> dict[str, Any]:
        return {"audio": dataclasses.asdict(self.audio), "mean": self.mean.clone(), "std": self.std.clone()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LogMelClips:
        return cls(AudioConfig(**state["audio"]), state["mean"], state["std"])


INPUTS: dict[str, Any] = {"image": DigitImages, "colour-image": ColourImages, "audio": LogMelClips}


@dataclass
class FeatureExtractor:
    """A trained feature network with its input transform."""

    net: FeatureNet  # in eval mode
    input: DigitImages | ColourImages | LogMelClips
    class_names: list[str]
    test_accuracy: float
    digest: str  # identifies the weights, for caches of reference features
    trained_on: str = ""

    @torch.no_grad()
    def embed(self, x: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
        """Network inputs [N, 1, H, W] -> (features [N, F], class probabilities [N, K]) on the CPU."""
        device = next(self.net.parameters()).device
        feats, probs = [], []
        for i in range(0, len(x), batch_size):
            f = self.net.features(x[i:i + batch_size].to(device))
            feats.append(f.float().cpu())
            probs.append(self.net.head(f).float().softmax(-1).cpu())
        return torch.cat(feats), torch.cat(probs)

    def embed_artifacts(self, artifacts) -> tuple[Tensor, Tensor]:
        return self.embed(self.input.from_artifacts(artifacts))

    def to(self, device) -> FeatureExtractor:
        self.net.to(device)
        return self


def save_feature_net(path: str | Path, net: FeatureNet, transform: DigitImages | ColourImages | LogMelClips, *,
                     class_names: list[str], test_accuracy: float, trained_on: str) -> Path:
    from multigan.engine.checkpoint import save_checkpoint

    state = {
        "kind": KIND,
        "input": {"kind": transform.kind, "state": transform.state_dict()},
        "net": net.spec(),
        "weights": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "class_names": list(class_names),
        "test_accuracy": float(test_accuracy),
        "trained_on": trained_on,
    }
    return save_checkpoint(state, Path(path))


def load_feature_net(path: str | Path, device: str | torch.device = "cpu") -> FeatureExtractor:
    """A feature network file (weights only, never unpickled objects) -> FeatureExtractor."""
    from multigan.engine.checkpoint import load_checkpoint

    path = Path(path)
    state = load_checkpoint(path)
    if state.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a multigan feature network")
    try:
        net = FeatureNet(**state["net"])
        net.load_state_dict(state["weights"])
        transform = INPUTS[state["input"]["kind"]].from_state(state["input"]["state"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path} does not match this version of multigan: {str(e).splitlines()[0][:200]}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return FeatureExtractor(net.to(device).eval(), transform, list(state["class_names"]),
                            float(state["test_accuracy"]), digest, str(state.get("trained_on", "")))


# On data like its own, a classifier's mean top-class probability is about its held-out accuracy.
# Data it gives a mean more than its error rate (and at least 3 points) below that is something else.
# Measured: the digit classifier (floor 0.96) gives MNIST 0.99, typed digits 0.99, emoji in grey 0.93,
# typed letters 0.79; the emoji classifier (floor 0.63) gives emoji 0.80 (on black too: 0.78), MNIST
# digits 0.55; the spoken-digit classifier (floor 0.97) gives FSDD 0.99.
CONFIDENCE_MARGIN = 0.03


def mismatch_warning(extractor: FeatureExtractor, probs: Tensor, name: str) -> str | None:
    """A one-line warning when the class probabilities [N, K] of the reference data show that the
    feature network `name` was not trained on data like it (a digit classifier on letters); else None."""
    confidence = float(probs.max(1).values.mean())
    accuracy = extractor.test_accuracy
    floor = accuracy - max(1.0 - accuracy, CONFIDENCE_MARGIN)
    if confidence >= floor:
        return None
    return (f"features of {name} (trained on {extractor.trained_on or 'other data'}) are meaningful for such data "
            f"only: its mean confidence on this data is {confidence:.2f}, below {floor:.2f}; pass --features "
            f"(eval.features) a network trained on data like this")


# Training -------------------------------------------------------------------
def fit_classifier(
    net: FeatureNet,
    batches: Callable[[int], Iterator[tuple[Tensor, Tensor]]],
    test: tuple[Tensor, Tensor],
    *,
    epochs: int,
    steps_per_epoch: int,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    label_smoothing: float = 0.0,
    progress: bool = True,
) -> float:
    """Train `net` with AdamW and a one-cycle schedule; returns the final test accuracy.

    `batches(epoch)` yields (inputs [B, 1, H, W], labels [B]) for one epoch,
    augmented as the caller sees fit; `test` is (inputs, labels).
    """
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2)
    accuracy = 0.0
    for epoch in range(epochs):
        net.train()
        bar = tqdm(batches(epoch), total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress,
                   unit="batch", leave=False)
        for x, y in bar:
            loss = F.cross_entropy(net(x), y, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        accuracy = test_accuracy(net, *test)
        log.info("epoch %d/%d: test accuracy %.2f%%", epoch + 1, epochs, 100 * accuracy)
    return accuracy


@torch.no_grad()
def test_accuracy(net: FeatureNet, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    net.eval()
    correct = sum(int((net(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum()) for i in range(0, len(x), batch_size))
    return correct / len(x)


def shift_images(x: Tensor, max_shift: int, generator: torch.Generator, fill: float | None = None) -> Tensor:
    """Each image of x [B, C, H, W] moved by a random whole-pixel offset in [-max_shift, max_shift].

    The uncovered border takes `fill`, by default the batch's minimum (the
    background of digits in [-1, 1]; pass 1.0 for pictures on white), not 0.
    """
    B, _, H, W = x.shape
    pad = F.pad(x, (max_shift,) * 4, value=float(x.min()) if fill is None else fill)
    dy = torch.randint(0, 2 * max_shift + 1, (B,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (B,), generator=generator)
    rows = (dy[:, None] + torch.arange(H))[:, None, :, None].expand(B, x.shape[1], H, W + 2 * max_shift)
    out = pad.gather(2, rows)
    cols = (dx[:, None] + torch.arange(W))[:, None, None, :].expand(B, x.shape[1], H, W)
    return out.gather(3, cols)


def split_by_group(groups: Sequence[str], test_fraction: float, seed: int = 0) -> Tensor:
    """A held-out mask [N], True for the items of a seeded `test_fraction` of the distinct groups.

    Items of one group (the skin-tone variants of one emoji, the takes of one
    speaker) fall on the same side, so the test never sees a near-copy of a
    training item.
    """
    distinct = sorted(set(groups))
    order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed)).tolist()
    held = {distinct[i] for i in order[:round(test_fraction * len(distinct))]}
    return torch.tensor([g in held for g in groups], dtype=torch.bool)


def mask_bands(x: Tensor, max_width: int, generator: torch.Generator) -> Tensor:
    """Each spectrogram of x [B, 1, n_mels, frames] with one random band of up to `max_width` mel bins
    and one of up to `max_width` frames set to 0 (the mean), as SpecAugment does (Park et al. 2019)."""
    B, _, H, W = x.shape
    out = x.clone()
    for size, axis in ((H, 2), (W, 3)):
        width = torch.randint(0, max_width + 1, (B,), generator=generator)
        start = (torch.rand(B, generator=generator) * (size - width + 1)).long()
        pos = torch.arange(size)
        band = (pos[None] >= start[:, None]) & (pos[None] < (start + width)[:, None])  # [B, size]
        shape = (B, 1, size, 1) if axis == 2 else (B, 1, 1, size)
        out = out.masked_fill(band.view(shape), 0.0)
    return out
