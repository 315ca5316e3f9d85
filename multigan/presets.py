"""Named settings that `multigan train NAME` and the recipes start from."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from multigan.config import AudioConfig, DataConfig, LossConfig, NetConfig, OptimConfig, RunConfig, TrainConfig


def mnist_quick() -> RunConfig:
    """Class-conditional DCGAN on MNIST that draws recognisable digits in about 5 minutes on 2 CPU cores.

    A projection discriminator, the hinge loss, Adam at 1e-3 with betas (0, 0.99)
    and an EMA whose horizon grows with the run (ema_rampup 10); NHWC layout,
    which fits 2,400 steps where NCHW fitted 2,100; G's labels in the digits'
    proportions. After 2,400 steps, classifier score 9.71, classifier-feature
    FID 0.49 and precision 0.873 (9.74, 0.60 and 0.876 with uniform labels),
    against 8.45, 8.74 and 0.752 after 2,100 steps with one-hot label planes
    in D, the non-saturating loss, 2e-4, betas (0.5, 0.999) and ema_rampup 50
    (bench/quality.py, README's Quality section).
    """
    return RunConfig(
        name="mnist-quick",
        data=DataConfig(modality="image", source="mnist", channels=1, height=28, width=28),
        model=NetConfig(z_dim=64, g_width=48, d_width=48, n_classes=-1, d_cond="projection"),
        loss=LossConfig(kind="hinge"),
        optim=OptimConfig(lr_g=1e-3, lr_d=1e-3, betas=(0.0, 0.99)),
        train=TrainConfig(steps=2400, batch_size=64, channels_last=True, ema_decay=0.995, ema_rampup=10,
                          log_every=25, preview_every=250, checkpoint_every=500),
    )


def mnist() -> RunConfig:
    """A longer, wider MNIST run (about an hour on 2 CPU cores)."""
    return RunConfig(
        name="mnist",
        data=DataConfig(modality="image", source="mnist", channels=1, height=28, width=28),
        model=NetConfig(z_dim=100, g_width=64, d_width=64, depth=1, n_classes=-1),
        train=TrainConfig(steps=30000, batch_size=64, ema_decay=0.999, ema_rampup=500,
                          log_every=50, preview_every=1000, checkpoint_every=2000),
    )


def voice_quick() -> RunConfig:
    """DCGAN on 64x64 log-mel spectrograms of 1-second clips at 8 kHz (spoken digits, for example).

    Conditioned on the clips' labels when they have some (sub-folders, or
    FSDD-style file names), unconditional otherwise, through a projection
    discriminator. Each clip is centred in its 1-second window, as evaluation
    places real clips: with random placement G spends itself on where the word
    falls (and drew some words twice). Adam at 6e-4 with betas (0, 0.99), an
    EMA whose horizon grows to a third of the run (ema_decay 0.999,
    ema_rampup 3), NHWC layout: after 1,750 steps on FSDD (15 minutes on 2 CPU
    cores, the default), classifier score 7.92, FID 2.18 and recall 0.891
    (means of 3 seeds), against 7.48, 3.06 and 0.889 at 4e-4, 6.05, 7.35 and
    0.840 with random placement too, and 4.34, 26.55 and 0.478 for the first
    preset (label planes in D, lr 2e-4, betas (0.5, 0.999), ema_rampup 100,
    1,150 steps). Longer pays: `--steps 3000` (about 26 minutes) gave 8.17,
    1.29 and 0.904 on seed 0 (8.03, 2.02 and 0.894 at 1,750)
    (bench/quality.py, README's Quality section).
    """
    return RunConfig(
        name="voice-quick",
        data=DataConfig(modality="mel", source="folder", audio=AudioConfig(crop="center")),
        model=NetConfig(z_dim=100, g_width=32, d_width=32, n_classes=-1, d_cond="projection"),
        optim=OptimConfig(lr_g=6e-4, lr_d=6e-4, betas=(0.0, 0.99)),
        train=TrainConfig(steps=1750, batch_size=64, channels_last=True, ema_decay=0.999, ema_rampup=3,
                          log_every=25, preview_every=250, checkpoint_every=500, n_preview=36),
    )


def voice() -> RunConfig:
    """A longer, wider voice run, with voice-quick's settings (projection D, centred clips, Adam at 6e-4
    with betas (0, 0.99), an EMA with a growing horizon, NHWC) and nets twice as wide."""
    base = voice_quick()
    return dataclasses.replace(
        base, name="voice",
        model=dataclasses.replace(base.model, g_width=64, d_width=64),
        train=dataclasses.replace(base.train, steps=30000, log_every=50, preview_every=1000, checkpoint_every=2000),
    )


def voice_16k() -> RunConfig:
    """voice-quick at 16 kHz, the rate of most speech datasets (Speech Commands, SC09): 128 mels, 128 frames
    of 8 ms (1.02 s), n_fft 1024. The 128x128 spectrograms take 5.3 times the FLOPs of voice-quick's 64x64
    per step; 8 kHz loses the band above 4 kHz, where most of the sound of /s/ and /th/ lies
    (bench/sample_rate.py, README's Sound section)."""
    base = voice_quick()
    audio = dataclasses.replace(base.data.audio, sample_rate=16000, n_fft=1024, hop_length=128, n_mels=128, frames=128)
    return dataclasses.replace(base, name="voice-16k", data=dataclasses.replace(base.data, audio=audio))


def images64() -> RunConfig:
    """DCGAN on a folder of colour pictures at 64x64 RGB (emoji, faces, your own), transparency on white.

    Conditioned on the labels of sub-folders or of a `data.labels` table when
    there are some, unconditional otherwise, through a projection D. The hinge
    loss and a spectrally normalised D without batch norm (with the
    non-saturating loss and a batch-norm D, D won within 250 steps on emoji
    and G never recovered); Adam at 4e-4 with the quick presets' betas
    (0, 0.99); differentiable augmentation (p 0.25); nets 32 wide, so that
    2,900 steps fit the 30 minutes of 2 CPU cores; G's classes drawn in the
    data's proportions (train.labels=data). On emoji, 3,786 images in 10
    categories: flags, faces and people drawn recognisably; FID 3.65,
    precision 0.776 and recall 0.867 measured in the data's mix, against 22.0,
    0.830 and 0.615 with every category drawn equally often in training, and
    20.3, 0.641 and 0.239 with one-hot label planes in D and Adam at 2e-4 with
    betas (0.5, 0.999) after 1,500 steps (bench/quality.py, README's Quality
    section). On a GPU, wider nets and more steps should pay (not measured):
    `--set model.g_width=64 --set model.d_width=64 --steps 10000`.
    """
    return RunConfig(
        name="images-64",
        data=DataConfig(modality="image", source="folder", channels=3, height=64, width=64),
        model=NetConfig(family="dcgan", z_dim=100, g_width=32, d_width=32, n_classes=-1,
                        spectral_norm=True, d_norm="none", d_cond="projection"),
        loss=LossConfig(kind="hinge", augment=0.25),
        optim=OptimConfig(lr_g=4e-4, lr_d=4e-4, betas=(0.0, 0.99)),
        train=TrainConfig(steps=2900, batch_size=64, ema_decay=0.999, ema_rampup=200,
                          log_every=50, preview_every=500, checkpoint_every=500),
    )


PRESETS: dict[str, Callable[[], RunConfig]] = {
    "mnist-quick": mnist_quick,
    "mnist": mnist,
    "voice-quick": voice_quick,
    "voice": voice,
    "voice-16k": voice_16k,
    "images-64": images64,
}
